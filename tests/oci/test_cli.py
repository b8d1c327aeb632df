"""`mlpack build` and `mlpack inspect`, run as a user runs them (the real console script)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mlpk.packager.oci import Image, layout, remote, tarball
from tests.oci.images import check


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    src = tmp_path / "app"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "run").write_text("#!/bin/sh\necho cli-built on $(uname -m)\n")
    (src / "bin" / "run").chmod(0o755)
    (src / "model-card.json").write_text(json.dumps({"schema": "mlpack.model-card/v1", "name": "cli-card"}))
    return src


@pytest.mark.registry
def test_build_on_a_registry_base_to_layout_tar_and_push(mlpack: Callable[..., object], registry, app_dir: Path,
                                                         busybox_base: Callable[[str], Image],
                                                         tmp_path: Path) -> None:
    base = f"{registry.host}/cli/base:1"
    remote.push(busybox_base("amd64"), base)
    args = ["build", "--base", base, "--add", f"{app_dir}/bin:/app/bin",
            "--add", f"{app_dir}/model-card.json:/opt/mlpack/model/model-card.json", "--owner", "1000:1000",
            "--entrypoint", "/app/bin/run", "--env", "A=1", "--label", "org.example=cli", "--user", "1000",
            "--expose", "8080", "--layout", str(tmp_path / "lay"), "--tar", str(tmp_path / "img.tar"),
            "--tag", "cli/app:1", "--push", f"{registry.host}/cli/app:1"]
    first = mlpack("--json", *args, check=True)
    second = mlpack("--json", *args, check=True)
    result = json.loads(first.stdout)
    assert result["digest"] == json.loads(second.stdout)["digest"]  # same inputs, same digest
    img = layout.image_from_layout(tmp_path / "lay")
    assert str(img.digest) == result["digest"] == result["push"]["digest"]
    assert img.config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    check(img, f"oci:{tmp_path / 'lay'}:cli/app:1")
    check(tarball.image_from_tarball(tmp_path / "img.tar"), f"docker-archive:{tmp_path / 'img.tar'}")
    check(remote.image_from_registry(f"{registry.host}/cli/app:1"), f"docker://{registry.host}/cli/app:1",
          "--tls-verify=false")

    shown = json.loads(mlpack("--json", "inspect", f"{registry.host}/cli/app:1", check=True).stdout)
    image = shown["images"][0]
    assert shown["platforms"] == ["linux/amd64"] and shown["kind"] == "registry"
    assert [layer["uncompressed_size"] > layer["size"] for layer in image["layers"]][1:] == [True, True]
    assert image["labels"] == {"org.example": "cli"}
    assert image["config"]["Entrypoint"] == ["/app/bin/run"] and image["config"]["User"] == "1000"
    assert image["model_card"]["name"] == "cli-card"
    human = mlpack("inspect", str(tmp_path / "img.tar"), check=True).stdout
    assert "linux/amd64" in human and "label org.example=cli" in human and "cli-card" in human


def test_multi_platform_build_writes_an_index(mlpack: Callable[..., object], app_dir: Path, tmp_path: Path) -> None:
    done = mlpack("--json", "build", "--platform", "linux/amd64,linux/arm64", "--add", f"{app_dir}:/app",
                  "--layout", str(tmp_path / "multi"), "--tag", "m", check=True)
    item = layout.read(tmp_path / "multi")
    assert json.loads(done.stdout)["digest"] == str(item.digest)
    assert [str(i.platform) for i in item.images] == ["linux/amd64", "linux/arm64"]
    check(item.images[1], f"oci:{tmp_path / 'multi'}:m", "--override-arch", "arm64")
    shown = mlpack("--json", "inspect", str(tmp_path / "multi"), check=True)
    assert json.loads(shown.stdout)["platforms"] == ["linux/amd64", "linux/arm64"]


def test_bad_input_is_one_line_and_writes_nothing(mlpack: Callable[..., object], tmp_path: Path) -> None:
    done = mlpack("build", "--add", f"{tmp_path}/missing:/x", "--layout", str(tmp_path / "out"))
    assert done.returncode == 3 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert f"'{tmp_path}/missing' does not exist" in done.stderr
    assert not (tmp_path / "out").exists()
    done = mlpack("build", "--add", "relative-dest:x", "--layout", str(tmp_path / "out"))
    assert done.returncode == 2 and "is not SRC:/ABSOLUTE/DEST" in done.stderr
    done = mlpack("build", "--platform", "linux/amd64,linux/arm64", "--tar", str(tmp_path / "x.tar"))
    assert done.returncode == 2 and "holds one platform" in done.stderr
    done = mlpack("inspect", str(tmp_path))
    assert done.returncode == 3 and "is not an OCI layout" in done.stderr


def test_outputs_are_checked_before_any_is_written_and_nothing_is_lost(mlpack: Callable[..., object],
                                                                       tmp_path: Path) -> None:
    """What an audit found: --layout into a folder of the user's files replaced the folder (the files were gone,
    exit 0); --tar at a folder or under a file, a bad --load tag and a FIFO to --add ended in a traceback or a hang,
    some after the layout was written. Each is now one line before anything is written, and the folder stays."""
    import os

    from mlpk.packager.oci import empty_image

    base = layout.write(empty_image("linux/amd64"), tmp_path / "base")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    (tmp_path / "afile").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    common = ("build", "--base", f"oci:{base}")
    cases = [
        (("--layout", str(mine)), 2, "is a folder of other files, not an OCI layout"),
        (("--tar", str(mine)), 2, "is a directory, not a file"),
        (("--tar", str(tmp_path / "afile" / "x.tar")), 2, "which is a file, not a directory"),
        (("--layout", str(tmp_path / "out"), "--load", "Bad Tag"), 2, "image reference 'Bad Tag' is not valid"),
        (("--layout", str(tmp_path / "out"), "--tar", str(tmp_path / "out")), 2, "would both be"),
        (("--add", f"{tmp_path / 'fifo'}:/app/x", "--layout", str(tmp_path / "out")), 3, "is not a regular file"),
        (("--expose", "70000", "--layout", str(tmp_path / "out")), 2, "PORT from 1 to 65535"),
        (("--tar", str(tmp_path / "t.tar"), "--tag", "Bad Tag!!"), 2, "'Bad Tag!!' is not valid"),
    ]
    for args, code, text in cases:
        done = mlpack(*common, *args, timeout=60)
        assert done.returncode == code and text in done.stderr, (args, done.returncode, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "mlpack-cache") == ["afile", "base", "fifo", "mine"]
    assert [p.name for p in mine.iterdir()] == ["precious.txt"]
    assert mlpack(*common, "--layout", str(tmp_path / "out"), check=True).returncode == 0  # a new folder is fine
    assert mlpack(*common, "--layout", str(tmp_path / "out"), check=True).returncode == 0  # and a layout again
