"""The value types and pure transformations: digests, platforms, deterministic layers, mutate."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from mlpk.packager.errors import BuildError, ConfigError, InputError
from mlpk.packager.oci import (Digest, Entry, Platform, annotate, append_layers, empty_image, index,
                               layer_from_dir, layer_from_entries, with_config)
from mlpk.packager.oci.validate import validate


def _tree(root: Path, mtime: int) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "b.txt").write_text("b")
    (root / "pkg" / "a.bin").write_bytes(os.urandom(0) + b"\x00" * 1000)
    (root / "pkg" / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "pkg" / "sub" / "run.sh").chmod(0o755)
    (root / "pkg" / "link").symlink_to("sub/run.sh")
    for path in [*root.rglob("*"), root]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root / "pkg"


def _build(src: Path) -> str:
    layer = layer_from_dir(src, prefix="/opt/app", uid=1000, gid=1000)
    img = with_config(append_layers(empty_image("linux/arm64"), layer), entrypoint=["/opt/app/sub/run.sh"],
                      env={"A": "1"}, labels={"org.example": "x"}, user="1000:1000", exposed_ports=["8080"])
    validate(img)
    return str(img.digest)


def test_same_inputs_built_twice_give_the_same_manifest_digest(tmp_path: Path) -> None:
    """Different host mtimes, a different checkout location, the same content: the same manifest digest."""
    first = _build(_tree(tmp_path / "one", 1_000_000))
    second = _build(_tree(tmp_path / "two", 2_000_000))
    assert first == second
    (tmp_path / "two" / "pkg" / "b.txt").write_text("B")
    assert _build(tmp_path / "two" / "pkg") != first


def test_layer_members_are_sorted_and_carry_no_host_metadata(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    layer = layer_from_dir(_tree(tmp_path, 5), prefix="/opt/app", uid=1000, gid=1001)
    raw = layer.open().read()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[3] & 0x08 == 0, "gzip FNAME flag set: a file name is recorded"
    assert raw[4:8] == b"\x00\x00\x00\x00", "gzip MTIME is set"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:2] == ["opt", "opt/app"]
    assert {m.mtime for m in members} == {1700000000}
    assert {(m.uname, m.gname) for m in members} == {("", "")}
    app = [m for m in members if m.name.startswith("opt/app")]
    assert {(m.uid, m.gid) for m in app} == {(1000, 1001)}
    assert all(not m.pax_headers for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["opt/app/sub/run.sh"].mode == 0o755
    assert by_name["opt/app/link"].issym() and by_name["opt/app/link"].linkname == "sub/run.sh"


def test_layer_digests_describe_its_bytes(tmp_path: Path) -> None:
    layer = layer_from_entries([Entry("/a", data=b"x" * 5000)])
    raw = layer.open().read()
    assert Digest.of(raw) == layer.digest and len(raw) == layer.size
    assert Digest.of(gzip.decompress(raw)) == layer.diff_id


def test_digest_and_platform_parsing() -> None:
    with pytest.raises(InputError, match="sha256:<hex>"):
        Digest.parse("md5:abc")
    with pytest.raises(InputError):
        Digest.parse("sha256:XYZ")
    assert str(Digest.parse("sha256:" + "a" * 64)) == "sha256:" + "a" * 64
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert Platform.parse("aarch64") == Platform("linux", "arm64")
    assert Platform.parse("linux/arm64/v8").matches(Platform("linux", "arm64"))
    assert not Platform.parse("linux/amd64").matches(Platform("linux", "arm64"))
    with pytest.raises(ConfigError, match="'linux/'"):
        Platform.parse("linux/")


def test_transformations_return_new_images_and_leave_their_argument_alone() -> None:
    base = empty_image("linux/amd64")
    before = base.config_bytes
    layer = layer_from_entries([Entry("/etc/x", data=b"x")])
    img = with_config(append_layers(base, layer), env={"PATH": "/bin"}, cmd=["sh"])
    img2 = with_config(img, env={"PATH": "/usr/bin", "B": "2"}, labels={"a": "1"}, workdir="/w")
    assert base.config_bytes == before and base.layers == ()
    assert img.config["config"]["Env"] == ["PATH=/bin"]
    assert img2.config["config"]["Env"] == ["PATH=/usr/bin", "B=2"]
    assert img2.config["config"]["Cmd"] == ["sh"]
    assert img2.config["rootfs"]["diff_ids"] == [str(layer.diff_id)]
    assert len(img2.config["history"]) == 1
    noted = annotate(img2, **{"org.opencontainers.image.source": "x"})
    assert noted.manifest()["annotations"] == {"org.opencontainers.image.source": "x"}
    assert noted.digest != img2.digest and noted.config_bytes == img2.config_bytes
    validate(noted)
    with pytest.raises(ConfigError, match="workdir 'w'"):
        with_config(img, workdir="w")
    with pytest.raises(ConfigError, match="exposed port 'http'"):
        with_config(img, exposed_ports=["http"])


def test_index_refuses_two_images_for_one_platform() -> None:
    amd, arm = empty_image("linux/amd64"), empty_image("linux/arm64")
    idx = index(amd, arm)
    assert idx.image_for(Platform.parse("linux/arm64")) == arm
    assert [m["platform"]["architecture"] for m in idx.manifest()["manifests"]] == ["amd64", "arm64"]
    validate(idx)
    with pytest.raises(BuildError, match="two images for platform linux/amd64"):
        index(amd, amd)
    with pytest.raises(BuildError, match=r"no image for linux/s390x \(it has: linux/amd64, linux/arm64\)"):
        idx.image_for(Platform.parse("linux/s390x"))
    with pytest.raises(BuildError) as err:  # export's --base reaches this too, and export has no --platform
        idx.image_for(Platform.parse("linux/s390x"))
    assert "(mlpack build --platform)" in (err.value.hint or "")
