"""A generic daemonless image build (`mlpack build`): a base (any image source: oci.sources) per platform, one
deterministic layer per `--add SRC:DEST`, a config; and `write_outputs`, the one function that writes an image or
index to the sinks (OCI layout, docker-archive, registry, Docker engine), for `mlpack build` and `mlpack export`
alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlpk.packager import atomic
from mlpk.packager.errors import ConfigError
from mlpk.packager.oci import daemon, layout, remote, sources, tarball
from mlpk.packager.oci.client import RegistryClient
from mlpk.packager.oci.digest import Digest
from mlpk.packager.oci.image import Image, Index, index
from mlpk.packager.oci.layer import Layer, layer_from_dir
from mlpk.packager.oci.mutate import append_layers, with_config
from mlpk.packager.oci.platform import Platform
from mlpk.packager.oci.reference import Reference


@dataclass(frozen=True, slots=True)
class Add:
    """One `--add SRC:DEST`: a file or directory on this machine and where it goes in the image."""

    source: Path
    dest: str

    @classmethod
    def parse(cls, text: str) -> Add:
        src, sep, dest = text.rpartition(":")
        if not sep or not src or not dest.startswith("/"):
            raise ConfigError(f"--add '{text}' is not SRC:/ABSOLUTE/DEST", hint="e.g. --add model/:/opt/model")
        return cls(Path(src), dest)


@dataclass(frozen=True, slots=True)
class BuildSpec:
    """Everything `mlpack build` was asked for."""

    base: str = "scratch"
    platforms: tuple[Platform, ...] = (Platform(),)
    adds: tuple[Add, ...] = ()
    uid: int = 0
    gid: int = 0
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: Sequence[str] = ()


def build(spec: BuildSpec) -> Image | Index:
    """The image (one platform) or index (several) that `spec` describes; writes only layer blobs to the cache."""
    if not spec.platforms:
        raise ConfigError("no platform given", hint="e.g. --platform linux/amd64")
    layers: list[Layer] = [layer_from_dir(add.source, prefix=add.dest, uid=spec.uid, gid=spec.gid)
                           for add in spec.adds]
    images = []
    for platform in spec.platforms:
        base = sources.base(spec.base, platform).image  # refused unless every layer passes the safety check
        img = append_layers(base, *layers, created_by="mlpack build --add")
        img = with_config(img, entrypoint=spec.entrypoint, cmd=spec.cmd, env=spec.env, user=spec.user,
                          workdir=spec.workdir, labels=spec.labels, exposed_ports=spec.exposed_ports)
        images.append(img)
    return images[0] if len(images) == 1 else index(*images)


@dataclass(frozen=True, slots=True)
class Written:
    """What `write_outputs` wrote where: the item's digest, the layout and archive paths, the engine's image id
    and what a push did."""

    digest: Digest
    layout: Path | None = None
    tar: Path | None = None
    loaded: str | None = None
    pushed: remote.PushReport | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"digest": str(self.digest)}
        if self.layout is not None:
            out["layout"] = str(self.layout)
        if self.tar is not None:
            out["tar"] = str(self.tar)
        if self.loaded is not None:
            out["loaded"] = self.loaded
        if self.pushed is not None:
            out["push"] = self.pushed.to_dict()
        return out


def write_outputs(item: Image | Index, *, layout_dir: Path | None = None, tar: Path | None = None,
                  push: str | Reference | None = None, load: str | None = None, tag: str | None = None,
                  client: RegistryClient | None = None) -> Written:
    """Write `item` to each sink asked for: an OCI layout at `layout_dir` and a docker-archive at `tar` (both
    naming it `tag`), an image in the local engine named `load`, a push to `push` (through `client` when the
    caller holds one with its own credentials). Blob files mlpack knows
    reach a layout as links or clones and an archive as kernel copies (oci.reuse), never read back."""
    if (tar or load) and isinstance(item, Index):  # every output is checked before any is written
        raise ConfigError("a docker-archive or a Docker engine holds one platform, but several were built",
                          hint="give one --platform, or keep the index as an OCI layout or push it (mlpack "
                               "build --layout/--push, mlpack manifest proxy -o DIR/--push)")
    if layout_dir:
        layout.check_destination(layout_dir)
    if tar:
        atomic.check_destination(tar)
        if layout_dir and Path(tar).absolute() == Path(layout_dir).absolute():
            raise ConfigError(f"the docker-archive and the OCI layout would both be {tar}",
                              hint="give each its own path")
    for name in (push, load, tag):  # a malformed reference is refused before anything is written
        if isinstance(name, str):
            Reference.parse(name)
    written = Written(item.digest)
    if layout_dir:
        written = replace(written, layout=layout.write(item, layout_dir, tag, link=True))
    if tar or load:
        assert isinstance(item, Image)  # an Index was refused above
        if tar:
            written = replace(written, tar=tarball.write(item, tar, tag))
        if load:
            written = replace(written, loaded=daemon.load(item, load))
    if push:
        written = replace(written, pushed=remote.push(item, push, client=client))
    return written
