"""Slim Python base images built from Debian packages, for amd64 and arm64, without a daemon or emulation.

    sources   where the archive is (apt configuration or --mirror)
    archive   signed Release -> verified indices -> verified downloads (content-addressed store)
    resolve   dependency closure (Pre-Depends/Depends, alternatives, Provides, versions)
    rootfs    unpack data members (merged-/usr, no maintainer scripts), prune docs/man/locales
    system    dpkg status database, users (root, nonroot 65532), CA bundle, nsswitch
    sbom      CycloneDX SBOM of the packages
    pipeline  spec -> plan -> root -> Image, with caches keyed by the resolved set
"""

from __future__ import annotations

from mlpk.packager.base.pipeline import (BaseImage, BaseSpec, Cache, Plan, assemble, build, check_output,
                                         default_packages, plan, write)

__all__ = ["BaseImage", "BaseSpec", "Cache", "Plan", "assemble", "build", "check_output", "default_packages", "plan",
           "write"]
