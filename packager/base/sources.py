"""Where the Debian archive is: the machine's apt configuration, or an explicit mirror.

The archive address is never hard-coded (issue 6): it is read from `/etc/apt/sources.list.d/*.sources` (deb822)
and `/etc/apt/sources.list` (one-line style), or given with `--mirror`. The machine's sources name its own release
(e.g. bookworm, bookworm-updates, bookworm-security); a base for another suite maps those suite names onto it
(trixie, trixie-updates, trixie-security), since Debian serves every suite under the same URIs.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from debian import deb822

from mlpk.packager.errors import ConfigError

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_ETC = Path("/etc/apt")
SUITES = ("bookworm", "trixie")


@dataclass(frozen=True, slots=True)
class Repo:
    """One signed suite of a Debian archive: `{uri}/dists/{suite}/InRelease`, checked against `keyring`."""

    uri: str  # without a trailing slash
    suite: str
    components: tuple[str, ...]
    keyring: Path

    def dists(self, name: str) -> str:
        """The URL of a file under this suite's dists/ folder."""
        return f"{self.uri}/dists/{self.suite}/{name}"


@dataclass(frozen=True, slots=True)
class AptEntry:
    """One source as apt's configuration states it (only `deb` types, the ones with binary packages)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: Path | None


def _signed_by(value: str | None, origin: Path) -> Path | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("-----BEGIN"):
        raise ConfigError(f"{origin} embeds its Signed-By key inline, which mlpack cannot hand to gpgv",
                          hint="point Signed-By at a keyring file, or build the base with "
                               "`mlpack base build --mirror URL --keyring FILE`")
    return Path(value.split()[0])


def _deb822_entries(path: Path) -> list[AptEntry]:
    entries = []
    with path.open(encoding="utf-8") as handle:
        for para in deb822.Deb822.iter_paragraphs(handle):
            if "deb" not in para.get("Types", "").split() or para.get("Enabled", "yes").lower() == "no":
                continue
            for uri in para.get("URIs", "").split():
                entries.append(AptEntry(uri.rstrip("/"), tuple(para.get("Suites", "").split()),
                                        tuple(para.get("Components", "").split()),
                                        _signed_by(para.get("Signed-By"), path)))
    return entries


_ONE_LINE = re.compile(r"^deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s*(?P<comps>.*)$")


def _one_line_entries(path: Path) -> list[AptEntry]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ONE_LINE.match(line.split("#", 1)[0].strip())
        if not match:
            continue
        opts = dict(o.split("=", 1) for o in (match["opts"] or "").split() if "=" in o)
        entries.append(AptEntry(match["uri"].rstrip("/"), (match["suite"],), tuple(match["comps"].split()),
                                _signed_by(opts.get("signed-by"), path)))
    return entries


def apt_entries(etc: Path = APT_ETC) -> list[AptEntry]:
    """Every `deb` source of the machine's apt configuration, in apt's reading order."""
    entries: list[AptEntry] = []
    if (etc / "sources.list").is_file():
        entries += _one_line_entries(etc / "sources.list")
    for path in sorted((etc / "sources.list.d").glob("*")):
        if path.suffix == ".sources":
            entries += _deb822_entries(path)
        elif path.suffix == ".list":
            entries += _one_line_entries(path)
    return entries


def _retarget(suite_name: str, suite: str) -> str | None:
    """Map a configured suite name (`bookworm-security`) onto the wanted release (`trixie-security`); None for
    names that are not a Debian release codename with an optional pocket (e.g. `stable`, `sid`, `./`)."""
    base, dash, pocket = suite_name.partition("-")
    if base not in SUITES and base not in ("bullseye", "forky"):
        return None
    if pocket not in ("", "updates", "security"):
        return None  # backports and proposed-updates are not part of a base
    return f"{suite}{dash}{pocket}"


_SNAPSHOT = re.compile(r"^(?P<head>.*/archive/[^/]+)/(?P<ts>\d{8}T\d{6}Z)$")


def at_snapshot(repos: tuple[Repo, ...], timestamp: str) -> tuple[Repo, ...]:
    """The same repos at another point in time of a snapshot archive (URIs like `…/archive/debian/20250520T000000Z`,
    the form snapshot services use); the host still comes from the apt configuration or --mirror."""
    if not re.fullmatch(r"\d{8}T\d{6}Z", timestamp):
        raise ConfigError(f"--snapshot '{timestamp}' is not a timestamp like 20250520T000000Z",
                          hint="use the UTC form YYYYMMDDTHHMMSSZ")
    moved = []
    for repo in repos:
        match = _SNAPSHOT.match(repo.uri)
        if match is None:
            raise ConfigError(f"--snapshot needs a snapshot archive, but '{repo.uri}' has no …/archive/NAME/TIMESTAMP "
                              "form", hint="pass --mirror with the URL of a snapshot archive at any timestamp")
        moved.append(Repo(f"{match['head']}/{timestamp}", repo.suite, repo.components, repo.keyring))
    return tuple(moved)


def discover(suite: str, *, mirror: str | None = None, keyring: Path | None = None,
             etc: Path = APT_ETC) -> tuple[Repo, ...]:
    """The signed suites a base for `suite` is resolved from, with the keyring each is checked against.

    With `mirror`, only that archive's `suite` (no update or security pockets: a mirror is taken as given).
    Without, every `deb` entry of the apt configuration whose suite maps onto `suite`, pockets included.
    """
    if suite not in SUITES:
        raise ConfigError(f"unknown suite '{suite}'", hint=f"use one of: {', '.join(SUITES)}")
    if mirror:
        try:
            parsed = urllib.parse.urlsplit(mirror)
            parsed.port  # noqa: B018 - parses the port: a bad one (or a bad IPv6 host) raises here, not mid-build
        except ValueError as err:
            raise ConfigError(f"--mirror '{mirror}' is not a URL ({err})",
                              hint="for example --mirror file:///srv/debian") from None
        if parsed.scheme not in ("http", "https", "file") or (parsed.scheme != "file" and not parsed.hostname):
            raise ConfigError(f"--mirror '{mirror}' is not an http(s):// or file: URL",
                              hint="for example --mirror file:///srv/debian")
        return (Repo(mirror.rstrip("/"), suite, ("main",), keyring or DEFAULT_KEYRING),)
    repos: list[Repo] = []
    for entry in apt_entries(etc):
        for name in entry.suites:
            mapped = _retarget(name, suite)
            if mapped is None or "main" not in entry.components:
                continue
            repo = Repo(entry.uri, mapped, ("main",), keyring or entry.signed_by or DEFAULT_KEYRING)
            if repo not in repos:
                repos.append(repo)
    if not any(r.suite == suite for r in repos):
        raise ConfigError(f"the apt configuration under {etc} names no Debian archive serving '{suite}' main "
                          f"(found: {', '.join(sorted({e.uri for e in apt_entries(etc)})) or 'no deb sources'})",
                          hint="name a Debian archive: mlpack base build --mirror URL -o DIR builds the base, which "
                               "mlpack export and mlpack build then take as --base oci:DIR")
    return tuple(repos)
