"""Loading images into a local Docker engine through the `docker` SDK (when one runs): the archive is written to
a temporary file by tarball.write and streamed to the engine's /images/load."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlpk.packager.errors import ToolchainError, missing_extra
from mlpk.packager.oci import tarball
from mlpk.packager.oci.image import Image


def load(img: Image, tag: str) -> str:
    """Load `img` into the local engine as `tag`; returns the engine's image id."""
    try:
        import docker
        import docker.errors
    except ImportError as err:
        raise missing_extra("docker", "daemon", "loading into a Docker engine") from err
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        raise ToolchainError(f"no Docker engine answers ({err})",
                             hint="start dockerd, or write a docker-archive (mlpack build --tar FILE, mlpack "
                                  "manifest proxy -o FILE.tar) and `docker load` it elsewhere") from err
    with tempfile.TemporaryDirectory(prefix="mlpack-load-") as tmp:
        archive = tarball.write(img, Path(tmp) / "image.tar", tag)
        try:
            with archive.open("rb") as data:
                loaded = client.images.load(data)
        except docker.errors.APIError as err:
            raise ToolchainError(f"the Docker engine refused image {img.digest}: {err.explanation}",
                                 hint="check the engine's version (20.10+) and its logs") from err
        finally:
            client.close()
    return loaded[0].id if loaded else ""
