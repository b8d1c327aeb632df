"""The front proxy of mlpack's Compose and Swarm files: HAProxy from Debian packages, built with mlpack's own base
builder (signed, checksummed packages; no Docker Hub image), with its configuration (haproxy.cfg beside this module)
in a layer of its own.

Several replicas of a model need one address in front of them. Swarm's routing mesh is one where the kernel has
IPVS; this proxy is the other, and the only one in plain Compose: a service publishing one port, which finds the
replicas through Docker's DNS, sends each request to a ready one and retries a dropped request on another. The image
is the same for every model (everything model-specific comes from the environment the Compose file sets), so it is
built once per mlpack version and platform, and its tag names the version (`DEFAULT_TAG`).
"""

from __future__ import annotations

from importlib import resources

from mlpk.packager import __version__
from mlpk.packager import base
from mlpk.packager.base.pipeline import ARCHES, DEFAULT_EXCLUDE
from mlpk.packager.errors import ConfigError
from mlpk.packager.oci import Entry, Image, Index, Platform, append_layers, index, layer_from_entries, with_config

PORT = 8080  # the proxy's HTTP port inside its container (MLPACK_PROXY_PORT)
SLOTS = 32  # replicas of one service it tracks unless told more (MLPACK_SLOTS)
CONFIG_PATH = "etc/mlpack/haproxy.cfg"
DEFAULT_TAG = f"mlpack/proxy:{__version__}"
ROLE_LABEL = "dev.mlpack.proxy"
# Maintainer-script and init-system dependencies of Debian's haproxy package (adduser pulls perl, lsb-base and
# init-system-helpers the sysvinit helpers): the scripts never run in an image, as for the base's own excludes.
EXCLUDE = ("adduser", "lsb-base", "init-system-helpers")


def config_text() -> str:
    """The HAProxy configuration the image carries."""
    return resources.files("mlpk.packager.deliver").joinpath("haproxy.cfg").read_text()


def live_command() -> list[str]:
    """The proxy container's own health check (the image has python3, as the model images do)."""
    return ["CMD", "/usr/bin/python3", "-c",
            f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/proxy/live', timeout=3)"]


def build(platforms: tuple[str, ...] = ("linux/amd64",), *, suite: str = "bookworm") -> Image | Index:
    """The proxy image for each platform (an index for several); writes only into mlpack's caches."""
    images = []
    for text in platforms:
        platform = Platform.parse(text)
        if platform.os != "linux" or platform.architecture not in ARCHES:
            raise ConfigError(f"--platform {text}: the proxy is built for linux/amd64 and linux/arm64",
                              hint="give --platform linux/amd64 or linux/arm64")
        built = base.build(base.BaseSpec(suite=suite, arch=platform.architecture, packages=("haproxy",),
                                         exclude=DEFAULT_EXCLUDE + EXCLUDE))
        layer = layer_from_entries([Entry("etc", "dir", mode=0o755), Entry("etc/mlpack", "dir", mode=0o755),
                                    Entry(CONFIG_PATH, "file", data=config_text().encode(), mode=0o644)])
        img = append_layers(built.image, layer, created_by="mlpack: front proxy configuration")
        version = next((p.version for p in built.plan.packages if p.name == "haproxy"), "?")
        images.append(with_config(
            img, entrypoint=["/usr/sbin/haproxy", "-db", "-f", f"/{CONFIG_PATH}"], cmd=[],
            env={"MLPACK_PROXY_PORT": str(PORT), "MLPACK_UPSTREAM_PORT": "8080", "MLPACK_SLOTS": str(SLOTS)},
            exposed_ports=[str(PORT)],
            labels={ROLE_LABEL: "haproxy", "dev.mlpack.proxy.haproxy": version, "dev.mlpack.version": __version__,
                    "org.opencontainers.image.title": "mlpack front proxy"}))
    return images[0] if len(images) == 1 else index(*images)
