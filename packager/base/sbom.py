"""A CycloneDX SBOM of a base's Debian packages, which later builds extend with the Python distributions of the
deps layer (`add_python_distributions`). Deterministic: the serial number and timestamp derive from the inputs."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.model.dependency import Dependency
from cyclonedx.output.json import JsonV1Dot6
from debian.deb822 import PkgRelation
from packageurl import PackageURL

from mlpk.packager import __version__
from mlpk.packager.base.resolve import Package
from mlpk.packager.oci.layer import source_date_epoch

DISTRO = {"bookworm": "debian-12", "trixie": "debian-13"}


def base_sbom(packages: Sequence[Package], *, suite: str, arch: str, key: str, epoch: int = 0) -> object:
    """The SBOM (a cyclonedx Bom) of `packages`, with their Depends edges, for a base keyed by `key`."""
    components: dict[str, Component] = {}
    for pkg in packages:
        components[pkg.name] = Component(
            name=pkg.name, version=pkg.version, type=ComponentType.LIBRARY, bom_ref=f"deb:{pkg.name}@{pkg.version}",
            purl=PackageURL("deb", "debian", pkg.name, pkg.version,
                            {"arch": pkg.arch, "distro": DISTRO.get(suite, suite)}),
            supplier=OrganizationalEntity(name=pkg.field("Maintainer") or "Debian"),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=pkg.sha256)],
            description=pkg.field("Description").split("\n", 1)[0] or None,
            properties=[Property(name="mlpack:deb:source", value=pkg.field("Source") or pkg.name)])
    root = Component(name=f"mlpack-base-{suite}-{arch}", version=key[:12], type=ComponentType.CONTAINER,
                     bom_ref="mlpack-base")
    dependencies = [Dependency(ref=root.bom_ref, dependencies=[Dependency(ref=c.bom_ref) for c in components.values()])]
    for pkg in packages:
        needs: set[str] = set()
        for field in ("Pre-Depends", "Depends"):
            for group in PkgRelation.parse_relations(pkg.field(field)) if pkg.field(field) else []:
                needs.update(alt["name"] for alt in group if alt["name"] in components)
        dependencies.append(Dependency(ref=components[pkg.name].bom_ref,
                                       dependencies=[Dependency(ref=components[n].bom_ref) for n in sorted(needs)]))
    metadata = BomMetaData(component=root, timestamp=datetime.fromtimestamp(epoch, UTC),
                           properties=[Property(name="mlpack:version", value=__version__)])
    return Bom(components=components.values(), metadata=metadata, dependencies=dependencies,
               serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"mlpack-base:{key}"))


def empty(name: str, ident: str) -> Bom:
    """An SBOM with no components for an image named `name` (a base mlpack did not build); its serial number and
    timestamp derive from `ident` and SOURCE_DATE_EPOCH, so the deps layer that carries it stays reproducible."""
    root = Component(name=name, type=ComponentType.CONTAINER, bom_ref="mlpack-image")
    return Bom(metadata=BomMetaData(component=root, timestamp=datetime.fromtimestamp(source_date_epoch(), UTC)),
               serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"mlpack-image:{ident}"))


def add_python_distributions(bom: object, distributions: Iterable[tuple[str, str]]) -> None:
    """Add Python distributions (name, version) — e.g. the deps layer's wheels — to `bom` as pypi components."""
    for name, version in sorted(distributions):
        bom.components.add(Component(  # type: ignore[attr-defined]
            name=name, version=version, type=ComponentType.LIBRARY, bom_ref=f"pypi:{name}@{version}",
            purl=PackageURL("pypi", None, name.lower().replace("_", "-"), version)))


def to_json(bom: object) -> str:
    """CycloneDX 1.6 JSON."""
    return str(JsonV1Dot6(bom).output_as_string(indent=2))  # type: ignore[arg-type]
