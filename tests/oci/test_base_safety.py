"""One layer-safety check for every base, in `build` and `export` alike (issue 18): the 11 escape variants and a
wrong diff_id are refused from an OCI layout (gzip or uncompressed layers), a docker-archive (gzip or plain layers)
and a registry, through the real CLI, with one line, no traceback, and nothing written."""

from __future__ import annotations

import re
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mlpk.packager.errors import MlpackError
from mlpk.packager.oci import BlobLayer, Digest, Platform, append_layers, empty_image, layout, mediatype, sources
from tests.export import models
from tests.oci import bad_bases

CASES = [*sorted(bad_bases.VARIANTS), bad_bases.WRONG_DIFF_ID]
assert len(bad_bases.VARIANTS) == 11
SOURCES: dict[str, Callable[[str, Path], Path]] = {
    "layout": lambda case, d: bad_bases.oci_layout(case, d),
    "layout, plain layer": lambda case, d: bad_bases.oci_layout(case, d, compressed=False),
    "docker-archive": lambda case, d: bad_bases.docker_archive(case, d),
    "docker-archive, plain layer": lambda case, d: bad_bases.docker_archive(case, d, compressed=False),
}
PREFIX = {"layout": "oci:", "layout, plain layer": "oci:", "docker-archive": "docker-archive:",
          "docker-archive, plain layer": "docker-archive:"}
AMD64 = Platform.parse("linux/amd64")


def _expected(case: str) -> tuple[int, str]:
    """(exit code, what the message says) for `case`."""
    if case == bad_bases.WRONG_DIFF_ID:
        return 7, "decompresses to|hashes to"
    return 3, bad_bases.REFUSAL


def _refused(done: subprocess.CompletedProcess[str], case: str) -> None:
    code, words = _expected(case)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and " Hint: " in lines[0], done.stderr
    assert re.search(words, lines[0]), lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(an ONNX model, an amd64-only cpu profile) for the export runs."""
    directory = tmp_path_factory.mktemp("model")
    profile = directory / "cpu-amd64.toml"
    profile.write_text('extends = "cpu"\nname = "cpu-amd64"\nplatforms = ["linux/amd64"]\n')
    return models.mlp(directory), profile


def _build(mlpack, base: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    done = mlpack("build", "--base", base, "--layout", str(tmp_path / "out"), "--tar", str(tmp_path / "out.tar"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tar").exists()
    return done


def _export(mlpack, base: str, model: tuple[Path, Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    done = mlpack("export", str(model[0]), "--target", str(model[1]), "--quantize", "none", "--base", base,
                  "-o", str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mlpack")] == []
    return done


# --- the check itself, every variant from every file source --------------------------------------------------------

@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("case", CASES)
def test_every_file_source_refuses_every_variant(tmp_path: Path, case: str, source: str) -> None:
    path = SOURCES[source](case, tmp_path)
    with pytest.raises(MlpackError) as caught:
        sources.base(str(path), AMD64)
    code, words = _expected(case)
    assert caught.value.exit_code == code
    assert caught.match(words)


@pytest.mark.registry
def test_a_registry_base_is_checked_like_the_others(registry, tmp_path: Path) -> None:
    for number, case in enumerate(CASES):
        ref = bad_bases.pushed(case, tmp_path / str(number), registry.host, f"case{number}")
        with pytest.raises(MlpackError) as caught:
            sources.base(ref, AMD64)
        assert caught.value.exit_code == _expected(case)[0] and caught.match(_expected(case)[1]), case
        assert caught.match(f"base '{ref}', layer 1 of 1")


def test_a_clean_base_passes_the_check(tmp_path: Path) -> None:
    """The control: the same sources with a harmless layer (an absolute symlink, which resolves inside the image,
    included) are read, so the refusals above are the check's."""
    member = bad_bases.member
    plain = bad_bases.plain_tar([member("bin", tarfile.DIRTYPE), member("bin/sh", tarfile.SYMTYPE, "/bin/busybox"),
                                 member("etc", tarfile.DIRTYPE), member("etc/ok")])
    blob = tmp_path / "layer.tar"
    blob.write_bytes(plain)
    layer = BlobLayer(blob, Digest.of(plain), Digest.of(plain), len(plain), mediatype.OCI_LAYER_TAR)
    out = layout.write(append_layers(empty_image(AMD64), layer), tmp_path / "good")
    checked = sources.base(f"oci:{out}", AMD64)
    assert [r.members for r in checked.layers] == [4] and checked.image.layers[0].digest == layer.digest


# --- through the CLI: build --base and export --base ----------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_build_base_refuses(mlpack, tmp_path: Path, case: str) -> None:
    _refused(_build(mlpack, str(bad_bases.oci_layout(case, tmp_path / "base")), tmp_path), case)


@pytest.mark.parametrize("case", CASES)
def test_export_base_refuses(mlpack, model: tuple[Path, Path], tmp_path: Path, case: str) -> None:
    base = bad_bases.oci_layout(case, tmp_path / "base")
    _refused(_export(mlpack, f"oci:{base}", model, tmp_path), case)


@pytest.mark.parametrize("source", [s for s in sorted(SOURCES) if s != "layout"])
@pytest.mark.parametrize("case", ["hardlink out", bad_bases.WRONG_DIFF_ID])
def test_both_commands_refuse_from_the_other_sources(mlpack, model: tuple[Path, Path], tmp_path: Path, case: str,
                                                      source: str) -> None:
    base = SOURCES[source](case, tmp_path / "base")
    _refused(_build(mlpack, str(base), tmp_path), case)
    _refused(_export(mlpack, f"{PREFIX[source]}{base}", model, tmp_path), case)


@pytest.mark.registry
@pytest.mark.parametrize("case", ["symlink climbs out", bad_bases.WRONG_DIFF_ID])
def test_both_commands_refuse_a_registry_base(mlpack, registry, model: tuple[Path, Path], tmp_path: Path,
                                              case: str) -> None:
    ref = bad_bases.pushed(case, tmp_path / "base", registry.host, case.replace(" ", "-").replace("_", "-"))
    _refused(_build(mlpack, ref, tmp_path), case)
    _refused(_export(mlpack, ref, model, tmp_path), case)
