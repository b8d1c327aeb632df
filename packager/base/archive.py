"""Reading a Debian archive we do not trust until its signature is checked.

The chain of trust is apt's: `InRelease` (or `Release` + `Release.gpg`) is verified with `gpgv` against the
archive keyring; it lists the SHA256 of every index; each `Packages` index lists the SHA256 of every .deb. Every
byte mlpack unpacks is checked against that chain before it is used: downloads land in a content-addressed store
only after their checksum matched, and a stored file is hashed again on every use (the store is a cache on a disk
anyone with the user's rights can change), so a tampered file never reaches the output. A stored file that no
longer matches is evicted and fetched once more; a second mismatch is the archive's fault and stops the build.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO

from debian import deb822

from mlpk.packager import atomic
from mlpk.packager.atomic import atomic_file
from mlpk.packager.base.sources import Repo
from mlpk.packager.errors import BuildError, ConfigError, ToolchainError
from mlpk.packager.oci.cache import remove_stale
from mlpk.packager.oci.digest import sha256_stream

TIMEOUT_S = 60
PARTIAL = ".partial-"  # the prefix of a download being written by mlpack before atomic.py named temporaries


class NotFound(BuildError):
    """The archive answered 404 for a file (used to fall back from InRelease to Release + Release.gpg)."""


# Where the archive's address comes from, for hints: every command that builds a base reads the apt sources, and
# `mlpack base build` also takes one.
_MIRROR = "the apt sources, or mlpack base build --mirror"


def fetch(url: str) -> bytes:
    """The bytes at `url` (http, https or file)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - archive URLs only
            return bytes(response.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise NotFound(f"{url} does not exist (HTTP 404)",
                           hint=f"check the suite and the mirror ({_MIRROR})") from err
        raise BuildError(f"fetching {url} failed: HTTP {err.code} {err.reason}",
                         hint="check the mirror, or retry later") from err
    except FileNotFoundError as err:
        raise NotFound(f"{url} does not exist", hint=f"check the suite and the mirror ({_MIRROR})") from err
    except urllib.error.URLError as err:
        if isinstance(err.reason, FileNotFoundError):  # file: URLs wrap a missing file this way
            raise NotFound(f"{url} does not exist", hint=f"check the suite and the mirror ({_MIRROR})") from err
        raise BuildError(f"fetching {url} failed: {err.reason}",
                         hint=f"check the network and the archive address ({_MIRROR})") from err
    except OSError as err:
        reason = getattr(err, "reason", err)
        raise BuildError(f"fetching {url} failed: {reason}",
                         hint=f"check the network and the archive address ({_MIRROR})") from err


@dataclass(frozen=True, slots=True)
class IndexRef:
    """A file listed in a verified Release: where to get it and the checksum it must have."""

    repo: Repo
    path: str  # relative to dists/SUITE, e.g. main/binary-arm64/Packages.xz
    sha256: str
    size: int
    by_hash: bool

    def urls(self) -> list[str]:
        """Where to fetch it: the by-hash location first when the archive offers it (immune to a mirror update
        between reading Release and reading the index), the plain path as a fallback."""
        folder = self.path.rsplit("/", 1)[0]
        plain = self.repo.dists(self.path)
        return [self.repo.dists(f"{folder}/by-hash/SHA256/{self.sha256}"), plain] if self.by_hash else [plain]


@dataclass(frozen=True, slots=True)
class Release:
    """A verified Release file: its own digest and the indices it vouches for."""

    repo: Repo
    sha256: str  # of the verified (signed) text
    date: str
    indices: dict[str, IndexRef]
    fields: Any = field(default=None, compare=False, repr=False)  # the parsed file (python-debian's deb822.Release)

    def packages(self, arch: str, component: str = "main") -> IndexRef:
        """The Packages index of `component` for `arch`, in the best compression offered."""
        for suffix in (".xz", ".gz", ""):
            ref = self.indices.get(f"{component}/binary-{arch}/Packages{suffix}")
            if ref is not None:
                return ref
        raise BuildError(f"{self.repo.dists('InRelease')} lists no {component}/binary-{arch}/Packages index",
                         hint=f"this archive does not serve {arch}; point the apt sources (or `mlpack base build "
                              "--mirror URL`) at one that does")


def _gpgv(keyring: Path, signed: Path, data: Path | None, output: Path | None) -> None:
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        raise ToolchainError("verifying the Debian archive needs gpgv, which is not on PATH",
                             hint="apt-get install gpgv")
    if not keyring.is_file():
        raise ConfigError(f"the archive keyring {keyring} does not exist",
                          hint="apt-get install debian-archive-keyring, or build the base with "
                               "`mlpack base build --keyring FILE`")
    argv = [gpgv, "--quiet", "--status-fd", "1", "--keyring", str(keyring)]
    if output is not None:
        argv += ["--output", str(output)]
    argv += [str(signed)] + ([str(data)] if data else [])
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    # gpgv exits 0 only for a good signature by a key in the keyring; VALIDSIG says which key (gpg DETAILS doc).
    if done.returncode != 0 or "[GNUPG:] VALIDSIG" not in done.stdout:
        reasons = [line.split(" ", 2)[1] for line in done.stdout.splitlines() if line.startswith("[GNUPG:] ")]
        detail = " ".join(r for r in reasons if r in ("BADSIG", "ERRSIG", "NO_PUBKEY", "EXPKEYSIG", "REVKEYSIG",
                                                       "NODATA", "BADARMOR")) or done.stderr.strip()[-200:]
        detail = detail or "no valid signature"
        raise BuildError(f"the signature of {signed.name} does not verify against {keyring} ({detail})",
                         hint="the archive file was altered or is not Debian's: check the mirror (the apt sources, or "
                              "`mlpack base build --mirror`) and the keyring")


# (repo, sha256 of the signed bytes fetched) -> their Release, parsed: the same bytes, checked against the same
# keyring, verify and parse the same way, so one process does it once per content (an export plans one base per
# architecture from the same signed Release files). Every call still fetches the file and checks what it says.
_VERIFIED: dict[tuple[Repo, str], Release] = {}


def _verified(repo: Repo) -> Release:
    with tempfile.TemporaryDirectory(prefix="mlpack-release-") as tmp:
        folder = Path(tmp)
        try:
            signed = fetch(repo.dists("InRelease"))
            key = (repo, hashlib.sha256(signed).hexdigest())
            if key not in _VERIFIED:
                (folder / "InRelease").write_bytes(signed)
                _gpgv(repo.keyring, folder / "InRelease", None, folder / "Release")
        except NotFound:
            data, signature = fetch(repo.dists("Release")), fetch(repo.dists("Release.gpg"))
            key = (repo, hashlib.sha256(data + b"\0" + signature).hexdigest())
            if key not in _VERIFIED:
                (folder / "Release").write_bytes(data)
                (folder / "Release.gpg").write_bytes(signature)
                _gpgv(repo.keyring, folder / "Release.gpg", folder / "Release", None)
        if key not in _VERIFIED:
            _VERIFIED[key] = _parse(repo, (folder / "Release").read_text(encoding="utf-8"))
        return _VERIFIED[key]


def _parse(repo: Repo, text: str) -> Release:
    release = deb822.Release(text)
    by_hash = release.get("Acquire-By-Hash", "no").lower() == "yes"
    indices = {entry["name"]: IndexRef(repo, entry["name"], entry["sha256"], int(entry["size"]), by_hash)
               for entry in release.get("SHA256", [])}
    return Release(repo, hashlib.sha256(text.encode()).hexdigest(), release.get("Date", ""), indices, release)


def verified_release(repo: Repo, *, now: datetime | None = None, check_valid_until: bool = True) -> Release:
    """Fetch and verify the Release of `repo`; checks that it is the suite asked for and, where the archive
    sets Valid-Until, that it has not expired (apt's defence against replaying an old, vulnerable index)."""
    verified = _verified(repo)
    release = verified.fields
    names = {release.get("Suite"), release.get("Codename")}
    if repo.suite not in names:
        raise BuildError(f"{repo.dists('InRelease')} is signed but describes suite "
                         f"{release.get('Codename') or release.get('Suite')!r}, not {repo.suite!r}",
                         hint="the mirror serves the wrong file for this suite")
    until = release.get("Valid-Until")
    if check_valid_until and until and parsedate_to_datetime(until) < (now or datetime.now(UTC)):
        raise BuildError(f"{repo.dists('InRelease')} expired at {until}",
                         hint="the mirror is stale; use a current mirror (or mlpack base build --snapshot for an "
                              "old state)")
    return verified


@dataclass(frozen=True, slots=True)
class Verified:
    """A file of the store, open, whose bytes were just hashed: the handle is rewound and is what to read, so a
    later change of the path (a rename over it) cannot change what the caller reads."""

    path: Path
    file: BinaryIO
    sha256: str  # measured on `file`, equal to the signed one
    size: int


class Store:
    """A content-addressed store of verified downloads: a file lands here only after its SHA256 matched, and is
    hashed again each time it is used."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str, suffix: str = "") -> Path:
        return self.root / sha256[:2] / f"{sha256}{suffix}"

    def get(self, urls: list[str], sha256: str, size: int, *, suffix: str = "") -> Path:
        """The verified file with this checksum (see `open`); for callers that read it at once."""
        with self.open(urls, sha256, size, suffix=suffix) as found:
            return found.path

    @contextmanager
    def open(self, urls: list[str], sha256: str, size: int, *, suffix: str = "") -> Iterator[Verified]:
        """The stored file with this checksum, hashed now; a stored copy that does not match is evicted, and a
        missing or evicted one is fetched from the first of `urls` that has it (once: wrong bytes from the
        archive are a BuildError and nothing is stored)."""
        target = self.path(sha256, suffix)
        found = self._verified(target, sha256, size)
        if found is None:
            self._download(urls, sha256, size, target)
            found = self._verified(target, sha256, size)
        if found is None:
            raise BuildError(f"{target} does not hash to sha256 {sha256} ({size} bytes) right after it was stored",
                             hint="another process is changing mlpack's cache; run `mlpack cache verify --fix` "
                                  "and build again")
        with found.file:
            yield found

    @staticmethod
    def _verified(target: Path, sha256: str, size: int) -> Verified | None:
        try:
            handle = target.open("rb")
        except FileNotFoundError:
            return None
        digest, length = sha256_stream(handle)
        if digest.hex == sha256 and length == size:
            handle.seek(0)
            return Verified(target, handle, sha256, size)
        handle.close()
        target.unlink(missing_ok=True)  # evicted: a corrupted or tampered copy is never used, nor kept
        return None

    def _download(self, urls: list[str], sha256: str, size: int, target: Path) -> None:
        data: bytes | None = None
        source = urls[-1]
        for source in urls:
            try:
                data = fetch(source)
                break
            except NotFound:
                if source == urls[-1]:
                    raise
        assert data is not None
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256 or len(data) != size:
            raise BuildError(f"checksum mismatch for {source}: expected sha256 {sha256} ({size} bytes), got "
                             f"{digest} ({len(data)} bytes)", hint="the mirror or a proxy served a corrupted or "
                             "tampered file; nothing was written. Retry, or use another mirror")
        with atomic_file(target) as tmp:
            tmp.write_bytes(data)

    def entries(self) -> list[Path]:
        """Every stored file (not the partial downloads of writers that were killed)."""
        return sorted(p for p in self.root.glob("??/*") if p.is_file() and not p.name.startswith(PARTIAL)
                      and not atomic.is_temporary(p.name))

    def check(self) -> list[Path]:
        """Every stored file whose bytes no longer hash to the checksum it is named by."""
        bad = []
        for path in self.entries():
            with path.open("rb") as handle:
                digest, _ = sha256_stream(handle)
            if path.name.split(".", 1)[0] != digest.hex:
                bad.append(path)
        return bad

    def prune_partial(self, older_than_s: float = 3600.0) -> int:
        """Remove partial downloads left by killed writers (atomic.sweep; those of older mlpack versions, named
        PARTIAL, once untouched for `older_than_s`); returns how many."""
        folders = [p for p in self.root.glob("??") if p.is_dir()]
        return sum(atomic.sweep(f) for f in folders) + remove_stale(self.root.glob(f"??/{PARTIAL}*"), older_than_s)


def read_index(ref: IndexRef, store: Store) -> bytes:
    """The uncompressed text of a verified index."""
    suffix = Path(ref.path).suffix
    raw = store.get(ref.urls(), ref.sha256, ref.size, suffix=suffix).read_bytes()
    if suffix == ".xz":
        return lzma.decompress(raw)
    if suffix == ".gz":
        return gzip.decompress(raw)
    return raw
