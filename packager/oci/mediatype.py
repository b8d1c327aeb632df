"""Media types of the OCI image spec and their Docker schema 2 twins (the same bytes, a different name)."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)

# manifest type -> (config type, gzip layer type)
FAMILY = {
    OCI_MANIFEST: (OCI_CONFIG, OCI_LAYER_GZIP),
    DOCKER_MANIFEST: (DOCKER_CONFIG, DOCKER_LAYER_GZIP),
}
INDEX_FOR = {OCI_MANIFEST: OCI_INDEX, DOCKER_MANIFEST: DOCKER_LIST}
_GZIP_LAYERS = (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP)


def layer_type_for(manifest_type: str, layer_type: str) -> str:
    """The name a gzip layer carries inside a manifest of `manifest_type` (OCI and Docker must not be mixed)."""
    if layer_type in _GZIP_LAYERS:
        return FAMILY[manifest_type][1]
    return layer_type
