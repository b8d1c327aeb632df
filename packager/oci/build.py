"""A generic daemonless image build (`mlpack build`): a base (registry, layout, tar or scratch) per platform,
one deterministic layer per `--add SRC:DEST`, a config, then any of the sinks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpk.packager.errors import ConfigError
from mlpk.packager.oci import daemon, layout, remote, sources, tarball
from mlpk.packager.oci.image import Image, Index, index
from mlpk.packager.oci.layer import Layer, layer_from_dir
from mlpk.packager.oci.mutate import append_layers, with_config
from mlpk.packager.oci.platform import Platform


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


def write_outputs(item: Image | Index, *, layout_dir: Path | None = None, tar: Path | None = None,
                  push: str | None = None, load: str | None = None, tag: str | None = None) -> dict[str, Any]:
    """Write `item` to each sink asked for; returns what was written where."""
    out: dict[str, Any] = {"digest": str(item.digest)}
    if layout_dir:
        out["layout"] = str(layout.write(item, layout_dir, tag, link=True))
    if tar or load:
        if isinstance(item, Index):
            raise ConfigError("a docker-archive or a Docker engine holds one platform, but several were built",
                              hint="give one --platform with --tar/--load, or use --layout/--push for an index")
        if tar:
            out["tar"] = str(tarball.write(item, tar, tag))
        if load:
            out["loaded"] = daemon.load(item, load)
    if push:
        out["push"] = remote.push(item, push).to_dict()
    return out
