"""Archive discovery from apt configuration (deb822 and one-line), --mirror and --snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpk.packager.base import sources
from mlpk.packager.errors import ConfigError

DEB822 = """Types: deb
URIs: http://archive.example/debian
Suites: bookworm bookworm-updates bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://security.example/debian-security/
Suites: bookworm-security
Components: main
"""


def _etc(tmp_path: Path, deb822: str | None = DEB822, one_line: str | None = None) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    if deb822 is not None:
        (tmp_path / "sources.list.d" / "debian.sources").write_text(deb822)
    if one_line is not None:
        (tmp_path / "sources.list").write_text(one_line)
    return tmp_path


def test_deb822_sources_map_onto_the_wanted_suite(tmp_path: Path) -> None:
    repos = sources.discover("trixie", etc=_etc(tmp_path))
    assert [(r.uri, r.suite) for r in repos] == [
        ("http://archive.example/debian", "trixie"), ("http://archive.example/debian", "trixie-updates"),
        ("http://security.example/debian-security", "trixie-security")]  # no backports, no deb-src
    assert repos[0].keyring == Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    assert repos[2].keyring == sources.DEFAULT_KEYRING
    assert repos[0].dists("InRelease") == "http://archive.example/debian/dists/trixie/InRelease"


def test_one_line_sources_with_signed_by(tmp_path: Path) -> None:
    etc = _etc(tmp_path, None, "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm "
               "main\ndeb-src http://one.example/debian bookworm main\n")
    (repo,) = sources.discover("bookworm", etc=etc)
    assert (repo.uri, repo.suite, repo.keyring) == ("http://one.example/debian", "bookworm", Path("/k.gpg"))


def test_mirror_overrides_and_is_checked(tmp_path: Path) -> None:
    (repo,) = sources.discover("bookworm", mirror="file:///srv/debian/", etc=_etc(tmp_path))
    assert (repo.uri, repo.suite) == ("file:///srv/debian", "bookworm")
    with pytest.raises(ConfigError, match="not an http"):
        sources.discover("bookworm", mirror="ftp.example/debian", etc=tmp_path)


def test_no_usable_source_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names no Debian archive serving 'bookworm'") as err:
        sources.discover("bookworm", etc=_etc(tmp_path, "Types: deb\nURIs: http://x.example/ubuntu\n"
                                                        "Suites: noble\nComponents: main\n"))
    # export and build reach this too, without --mirror: the hint says whose flag it is, and how they use it
    assert "mlpack base build --mirror" in (err.value.hint or "") and "--base oci:DIR" in (err.value.hint or "")
    with pytest.raises(ConfigError, match="unknown suite 'sid'"):
        sources.discover("sid", etc=tmp_path)


def test_snapshot_moves_a_snapshot_archive_in_time(tmp_path: Path) -> None:
    repos = sources.discover("bookworm", mirror="http://snap.example/archive/debian/20250101T000000Z")
    (moved,) = sources.at_snapshot(repos, "20250520T000000Z")
    assert moved.uri == "http://snap.example/archive/debian/20250520T000000Z"
    with pytest.raises(ConfigError, match="needs a snapshot archive"):
        sources.at_snapshot(sources.discover("bookworm", mirror="http://plain.example/debian"), "20250520T000000Z")
    with pytest.raises(ConfigError, match="is not a timestamp"):
        sources.at_snapshot(repos, "yesterday")
