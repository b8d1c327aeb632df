"""The dependency resolver on small hand-written Packages indices (the real ones are exercised in test_build)."""

from __future__ import annotations

import pytest

from mlpk.packager.base.resolve import Universe, compare_versions, resolve
from mlpk.packager.errors import BuildError


def _para(name: str, version: str = "1.0", arch: str = "amd64", **fields: str) -> str:
    lines = [f"Package: {name}", f"Version: {version}", f"Architecture: {arch}",
             f"Filename: pool/main/{name[0]}/{name}/{name}_{version}_{arch}.deb", "Size: 10", f"SHA256: {'0' * 64}"]
    lines += [f"{key.replace('_', '-')}: {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def _universe(*paras: str, extra: tuple[str, ...] = ()) -> Universe:
    indices = [("http://main.example/debian", "\n".join(paras).encode())]
    indices += [("http://security.example/debian-security", "\n".join(extra).encode())] if extra else []
    return Universe("amd64", indices)


def names(packages: tuple) -> list[str]:
    return [p.name for p in packages]


def test_closure_follows_pre_depends_and_depends_not_recommends() -> None:
    u = _universe(_para("app", Pre_Depends="libc6 (>= 2.34)", Depends="libfoo", Recommends="docs"),
                  _para("libc6", "2.36"), _para("libfoo", Depends="libc6"), _para("docs"),
                  _para("other-arch", arch="arm64"), _para("coreutils", Essential="yes"))
    got = resolve(u, ["app"])
    assert names(got) == ["app", "libc6", "libfoo"]  # sorted; no Recommends; Essential not pulled in
    assert got[0].url == "http://main.example/debian/pool/main/a/app/app_1.0_amd64.deb"
    assert got[0].field("Recommends") == "docs"


def test_alternatives_prefer_what_is_chosen_then_the_first_that_exists() -> None:
    u = _universe(_para("app", Depends="missing | second | third, third"), _para("second"), _para("third"))
    assert names(resolve(u, ["app"])) == ["app", "second", "third"]
    assert names(resolve(u, ["app", "third"])) == ["app", "third"]


def test_virtual_packages_and_versioned_provides() -> None:
    u = _universe(_para("app", Depends="awk, libssl (>= 3)"), _para("mawk", Provides="awk"),
                  _para("libssl3t64", Provides="libssl (= 3.1)"), _para("libssl-old", Provides="libssl (= 1.1)"))
    assert names(resolve(u, ["app"])) == ["app", "libssl3t64", "mawk"]
    assert names(resolve(u, ["awk"])) == ["mawk"]


def test_newest_version_across_indices_and_constraints() -> None:
    u = _universe(_para("app", Depends="lib (= 1.0-1)"), _para("lib", "1.0-1"),
                  extra=(_para("lib", "1.0-1+deb12u1"), _para("tool")))
    assert [(p.name, p.version) for p in resolve(u, ["lib"])] == [("lib", "1.0-1+deb12u1")]
    chosen = resolve(u, ["app"])
    assert [(p.name, p.version) for p in chosen] == [("app", "1.0"), ("lib", "1.0-1")]
    assert compare_versions("1:1.0", "2.0") > 0 and compare_versions("1.0~rc1", "1.0") < 0


def test_excluded_names_count_as_present() -> None:
    u = _universe(_para("ca-certificates", Depends="openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0"),
                  _para("openssl", "3.0.15-1"), _para("debconf"))
    assert names(resolve(u, ["ca-certificates"], exclude=["openssl", "debconf"])) == ["ca-certificates"]
    assert names(resolve(u, ["ca-certificates"])) == ["ca-certificates", "debconf", "openssl"]


def test_unsatisfiable_and_unknown_names_are_build_errors() -> None:
    u = _universe(_para("app", Depends="lib (>= 2)"), _para("lib", "1.0"), _para("python3-minimal"))
    with pytest.raises(BuildError, match=r"app 1.0 depends on 'lib \(>= 2\)', which no amd64 package"):
        resolve(u, ["app"])
    with pytest.raises(BuildError, match="package 'python3-minimall' is not in the amd64 indices") as err:
        resolve(u, ["python3-minimall"])
    assert "python3-minimal" in (err.value.hint or "")
