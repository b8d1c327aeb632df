"""Building a slim Python base image from Debian packages: spec -> verified plan -> root -> Image.

    spec   (suite, arch, packages, mirror)   what the user asked for
    plan   = resolve(spec)                   signed Release -> verified Packages -> dependency closure
    root   = assemble(plan, dir)             verified .debs -> data unpacked -> pruned -> dpkg db, users, CAs
    image  = build(spec)                     one deterministic layer on an empty image, with config

Caching (issue 6): the plan is cached by the Packages indices' checksums and the request; a rebuild of the same set
only re-checks the signed Release files (to notice archive updates) and reads the cached OCI layout. Nothing is
written outside the cache until a sink writes the image, and the cache only receives verified, complete entries.

The image cache is keyed by content (issue 18). Each .deb is unpacked from an open handle whose bytes the download
store hashed just before (`archive.Store.open`), and the digests so measured, not the ones the plan expects, make
the key an image is stored under (`image_key`; with the builder's version, suite, architecture and prune rules).
A plan looks its image up under the key of the signed index's digests, so the two meet only when the bytes
unpacked were the signed ones: a base built from other bytes can never be found by a plan. A cached entry is also
re-proved on every use: its record must name the plan's packages with those digests, and the layout's manifest
and every layer blob must hash to the digests recorded when it was built. An entry that fails (a corrupted blob,
or one written before these records existed, when a tampered .deb could reach a base) is evicted and the base is
built again; the .debs it needs are re-verified then (and re-fetched once when the stored copy is bad).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpk.packager import __version__, atomic, locations, oci, targets
from mlpk.packager.atomic import atomic_file
from mlpk.packager.base import archive, resolve, rootfs, sbom, sources, system
from mlpk.packager.base.resolve import Package
from mlpk.packager.errors import BuildError, ConfigError, MlpackError
from mlpk.packager.oci import layout
from mlpk.packager.oci.build import write_outputs
from mlpk.packager.oci.cache import BlobCache
from mlpk.packager.oci.digest import sha256_stream
from mlpk.packager.oci.layer import FileBacked, entries_from_dir, layer_from_entries

ARCHES = ("amd64", "arm64")
PYTHON = targets.debian_suites()  # suite -> its Python
# Bumped whenever the bytes a plan turns into change (prune rules, system files, config).
BUILDER_VERSION = "1"
# The version of the image cache's records (IMAGE_RECORD below); entries of other versions are rebuilt.
IMAGE_RECORD = 2
# Dependencies that only maintainer scripts use (see resolve's docstring); the scripts never run here.
DEFAULT_EXCLUDE = ("dpkg", "debconf", "debconf-2.0", "awk", "openssl", "perl-base")
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_packages(suite: str, *, tzdata: bool = False) -> tuple[str, ...]:
    """The smallest set that runs CPython with its standard library (ssl, sqlite3, ctypes, zlib, ...) and the
    manylinux onnxruntime and numpy wheels (they need glibc, libstdc++ and libgcc_s; numpy bundles OpenBLAS)."""
    py = PYTHON[suite]
    names = ["base-files", "netbase", "ca-certificates", "media-types", "python3-minimal", f"python{py}-minimal",
             f"libpython{py}-stdlib", "libstdc++6", "libgcc-s1"]
    return tuple(names + (["tzdata"] if tzdata else []))


@dataclass(frozen=True, slots=True)
class BaseSpec:
    """What base to build."""

    suite: str = "bookworm"
    arch: str = "amd64"
    packages: tuple[str, ...] = ()  # added to the defaults
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    mirror: str | None = None
    snapshot: str | None = None
    keyring: Path | None = None
    tzdata: bool = False

    def __post_init__(self) -> None:
        if self.suite not in PYTHON:
            raise ConfigError(f"unknown suite '{self.suite}'", hint=f"use one of: {', '.join(PYTHON)}")
        if self.arch not in ARCHES:
            raise ConfigError(f"unknown architecture '{self.arch}'", hint=f"use one of: {', '.join(ARCHES)}")

    def wanted(self) -> tuple[str, ...]:
        return tuple(sorted(set(default_packages(self.suite, tzdata=self.tzdata)) | set(self.packages)))

    def repos(self) -> tuple[sources.Repo, ...]:
        repos = sources.discover(self.suite, mirror=self.mirror, keyring=self.keyring)
        return sources.at_snapshot(repos, self.snapshot) if self.snapshot else repos


@dataclass(frozen=True, slots=True)
class Input:
    """A .deb of a base: its name and version, and the digest and size of its bytes."""

    name: str
    version: str
    sha256: str
    size: int


def image_key(spec: BaseSpec, inputs: Iterable[Input]) -> str:
    """The identity of the image built from `inputs`: builder version, suite, architecture, prune rules, .debs."""
    ident = [BUILDER_VERSION, spec.suite, spec.arch, list(rootfs.PRUNE)]
    ident += [[i.name, i.version, i.sha256] for i in inputs]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Plan:
    """A resolved base: the verified indices it came from and the exact packages."""

    spec: BaseSpec
    indices: tuple[tuple[str, str], ...]  # (index URL, sha256) of every verified Packages index
    packages: tuple[Package, ...]

    def inputs(self) -> tuple[Input, ...]:
        """The .debs as the signed index lists them."""
        return tuple(Input(p.name, p.version, p.sha256, p.size) for p in self.packages)

    @property
    def key(self) -> str:
        """The key of the image this plan becomes when every .deb unpacked is the one the index signs."""
        return image_key(self.spec, self.inputs())

    def installed_size(self) -> int:
        """The packages' declared Installed-Size, in bytes (before pruning)."""
        return sum(int(p.field("Installed-Size") or 0) for p in self.packages) * 1024


@dataclass(frozen=True, slots=True)
class Assembly:
    """What assembling a root did: bytes kept and pruned, certificates bundled, and the .debs unpacked (with the
    digests measured on the bytes read)."""

    files_bytes: int
    pruned_bytes: int
    certificates: int
    inputs: tuple[Input, ...]


@dataclass(frozen=True, slots=True)
class BaseImage:
    """A built base: the image (nothing written yet), its plan, sizes and SBOM."""

    image: Any  # mlpk.packager.oci.Image
    plan: Plan
    files_bytes: int  # uncompressed: the bytes of the files in its layer
    pruned_bytes: int
    cached: bool
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)

    def sbom(self) -> object:
        return sbom.base_sbom(self.plan.packages, suite=self.plan.spec.suite, arch=self.plan.spec.arch,
                              key=self.plan.key)

    def summary(self) -> dict[str, Any]:
        return {"suite": self.plan.spec.suite, "arch": self.plan.spec.arch, "digest": str(self.image.digest),
                "python": PYTHON[self.plan.spec.suite], "packages": [f"{p.name}={p.version}" for p in
                self.plan.packages], "uncompressed_bytes": self.files_bytes,
                "compressed_bytes": sum(layer.size for layer in self.image.layers),
                "pruned_bytes": self.pruned_bytes, "cached": self.cached, "seconds": round(self.seconds, 3)}


class Cache:
    """mlpack's base cache: verified downloads (content-addressed), plans and built images."""

    def __init__(self, root: Path | None = None, *, downloads: Path | None = None) -> None:
        """`downloads` may be shared between caches: it only ever holds verified, content-addressed files."""
        self.root = Path(root) if root else locations.cache_dir() / "base"
        self.downloads = archive.Store(Path(downloads) if downloads else self.root / "downloads")

    def plan_path(self, key: str) -> Path:
        return self.root / "plans" / f"{key}.json"

    def image_path(self, key: str) -> Path:
        return self.root / "images" / key

    def blobs(self) -> Any:
        return BlobCache(self.root / "blobs")


def _write_json(path: Path, data: Any) -> None:
    atomic.write_text(path, json.dumps(data, sort_keys=True))


def plan(spec: BaseSpec, cache: Cache | None = None) -> Plan:
    """Verify the suites' Release files and resolve the package set (cached by the indices' checksums)."""
    cache = cache or Cache()
    refs = []
    for repo in spec.repos():
        release = archive.verified_release(repo, check_valid_until=spec.snapshot is None)
        try:
            refs.append(release.packages(spec.arch))
        except BuildError:
            if repo.suite == spec.suite:
                raise
            # An update or security pocket without this architecture's index adds nothing.
    request = [resolve.__name__, BUILDER_VERSION, spec.arch, spec.wanted(), sorted(spec.exclude),
               [[r.repo.uri, r.sha256] for r in refs]]
    key = hashlib.sha256(json.dumps(request).encode()).hexdigest()
    indices = tuple((r.urls()[-1], r.sha256) for r in refs)
    cached = cache.plan_path(key)
    if cached.is_file():
        packages = tuple(Package.from_dict(p) for p in json.loads(cached.read_text())["packages"])
        return Plan(spec, indices, packages)
    universe = resolve.Universe(spec.arch, ((r.repo.uri, archive.read_index(r, cache.downloads)) for r in refs))
    packages = resolve.resolve(universe, spec.wanted(), spec.exclude)
    _write_json(cached, {"request": request, "packages": [p.to_dict() for p in packages]})
    return Plan(spec, indices, packages)


def download(plan: Plan, cache: Cache) -> list[Path]:
    """Every .deb of the plan, verified against the signed index; the first mismatch stops everything."""
    return [cache.downloads.get([p.url], p.sha256, p.size, suffix=".deb") for p in plan.packages]


def assemble(plan: Plan, root: Path, cache: Cache | None = None) -> Assembly:
    """Write the plan's root file system into the empty directory `root`; each .deb is read from the handle the
    store verified it on (see the module docstring)."""
    cache = cache or Cache()
    download(plan, cache)  # every download (and re-fetch) before any unpacking
    rootfs.prepare(root, plan.spec.arch)
    done = []
    inputs = []
    for package in plan.packages:
        with cache.downloads.open([package.url], package.sha256, package.size, suffix=".deb") as deb:
            done.append((package, rootfs.unpack(deb.path, root, file=deb.file)))
            inputs.append(Input(package.name, package.version, deb.sha256, deb.size))
    system.write_dpkg_db(root, done)
    system.write_accounts(root)
    certs = system.write_ca_bundle(root)
    return Assembly(rootfs.tree_size(root), sum(u.pruned_bytes for _, u in done), certs, tuple(inputs))


def _entries(root: Path) -> Iterator[Any]:
    for entry in entries_from_dir(root):
        if entry.path.lstrip("/") == "home/nonroot":
            entry = dataclasses.replace(entry, uid=system.NONROOT_UID, gid=system.NONROOT_UID)
        yield entry


def _image(plan: Plan, root: Path, cache: Cache, key: str) -> Any:
    spec = plan.spec
    layer = layer_from_entries(_entries(root), cache=cache.blobs())
    img = oci.append_layers(oci.empty_image(f"linux/{spec.arch}"), layer,
                            created_by=f"mlpack base build --suite {spec.suite} --arch {spec.arch}",
                            comment=f"{len(plan.packages)} Debian packages, key {key[:12]}")
    return oci.with_config(
        img, cmd=[f"/usr/bin/python{PYTHON[spec.suite]}"], user=f"{system.NONROOT_UID}:{system.NONROOT_UID}",
        workdir="/home/nonroot",
        env={"PATH": PATH_ENV, "LANG": "C.UTF-8", "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"},
        labels={"dev.mlpack.base.suite": spec.suite, "dev.mlpack.base.arch": spec.arch,
                "dev.mlpack.base.python": PYTHON[spec.suite], "dev.mlpack.base.key": key,
                "dev.mlpack.version": __version__})


def _record(inputs: Iterable[Input]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(i) for i in inputs]


def evict(stored: Path) -> None:
    """Remove a cached base image (its layout and its record)."""
    stored.with_suffix(".json").unlink(missing_ok=True)
    shutil.rmtree(stored, ignore_errors=True)


def proven(stored: Path) -> tuple[Any, dict[str, Any]]:
    """The cached image at `stored` and its record, once the layout's manifest and every layer blob hashed to the
    digests recorded when it was built; ValueError or an MlpackError names what does not."""
    try:
        meta = json.loads(stored.with_suffix(".json").read_text())
    except OSError as err:
        raise ValueError(f"its record cannot be read ({err.strerror})") from err
    if not isinstance(meta, dict) or meta.get("record") != IMAGE_RECORD:
        raise ValueError(f"its record is not of version {IMAGE_RECORD} (written before .debs were re-verified)")
    image = oci.image_from_layout(stored)
    if str(image.digest) != meta.get("digest") or [str(la.digest) for la in image.layers] != meta.get("layers"):
        raise ValueError(f"the layout holds {image.digest}, but the record says {meta.get('digest')}")
    for layer in image.layers:  # unless it is the very file hashed before, the reader checks digest and size
        if isinstance(layer, FileBacked) and layer.local_file() is not None:
            continue
        with layer.open() as raw:
            sha256_stream(raw)
    return image, meta


def reusable(plan: Plan, stored: Path) -> tuple[Any, dict[str, Any]] | None:
    """The cached image at `stored` and its record when it is `proven` and its record names the plan's .debs with
    the signed digests; else None, and an entry that fails is evicted."""
    if not stored.with_suffix(".json").exists() and not stored.exists():
        return None
    try:
        image, meta = proven(stored)
        if meta.get("inputs") != _record(plan.inputs()):
            raise ValueError("its record names other .debs than the plan")
    except (ValueError, KeyError, TypeError, MlpackError):
        evict(stored)
        return None
    return image, meta


def build(spec: BaseSpec, cache: Cache | None = None) -> BaseImage:
    """The base image for `spec` (see the module docstring); writes only into the cache."""
    started = time.perf_counter()
    cache = cache or Cache()
    the_plan = plan(spec, cache)
    hit = reusable(the_plan, cache.image_path(the_plan.key))
    if hit is not None:
        image, meta = hit
        return BaseImage(image, the_plan, meta["files_bytes"], meta["pruned_bytes"], True,
                         time.perf_counter() - started, meta)
    with tempfile.TemporaryDirectory(prefix="mlpack-base-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        done = assemble(the_plan, root, cache)
        if done.certificates == 0 and "ca-certificates" in spec.wanted():
            raise BuildError("ca-certificates was unpacked but holds no certificates under "
                             "/usr/share/ca-certificates", hint="report this with the suite and architecture")
        key = image_key(spec, done.inputs)  # what was unpacked names the entry
        image = _image(the_plan, root, cache, key)
    stored = cache.image_path(key)
    layout.write(image, stored)
    meta = {"files_bytes": done.files_bytes, "pruned_bytes": done.pruned_bytes, "certificates": done.certificates,
            "digest": str(image.digest), "layers": [str(la.digest) for la in image.layers],
            "record": IMAGE_RECORD, "inputs": _record(done.inputs)}
    _write_json(stored.with_suffix(".json"), meta)
    return BaseImage(oci.image_from_layout(stored), the_plan, done.files_bytes, done.pruned_bytes, False,
                     time.perf_counter() - started, meta)


def check_output(output: Path, sbom_path: Path | None = None) -> None:
    """Refuse, before a base is built, outputs write() could not write: a folder that is missing or is a file, a
    docker-archive path that is a folder, a layout folder holding other files (the layout would replace them)."""
    if output.suffix == ".tar":
        atomic.check_destination(output, "-o")
    else:
        layout.check_destination(output, "-o")
    if sbom_path is not None:
        atomic.check_destination(Path(sbom_path), "--sbom")
    for path in (output, sbom_path):
        if path is not None and not Path(path).parent.is_dir():
            raise ConfigError(f"cannot write '{path}': its folder {Path(path).parent} does not exist",
                              hint="create the folder first, or write elsewhere")


def write(base: BaseImage, output: Path, *, tag: str | None = None, sbom_path: Path | None = None) -> Path:
    """Write the base to `output`: a docker-archive when it ends in .tar (for `docker load`), else an OCI layout
    directory; and its SBOM to `sbom_path`. Each file appears whole or not at all (temp path, then rename), and
    the SBOM is staged first, so a failure leaves neither."""
    output = Path(output)
    check_output(output, sbom_path)
    with contextlib.ExitStack() as stack:  # the SBOM is renamed into place only once the image is written
        if sbom_path is not None:
            stack.enter_context(atomic_file(Path(sbom_path))).write_text(sbom.to_json(base.sbom()))
        if output.suffix == ".tar":
            write_outputs(base.image, tar=output, tag=tag)
        else:
            write_outputs(base.image, layout_dir=output, tag=tag)
    return output
