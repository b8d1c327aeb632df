"""What `mlpack inspect` shows: platforms, layers with compressed and uncompressed sizes, config, labels and
the model card (`/opt/mlpack/model/model-card.json`, read from the topmost layer that holds it), or in a model
repository image the card of every version (`/opt/mlpack/models/NAME/VERSION/model-card.json`, or the one model's
card where a version links to it)."""

from __future__ import annotations

import gzip
import json
import tarfile
from typing import Any

from mlpk.packager.oci import sources
from mlpk.packager.oci.digest import CHUNK
from mlpk.packager.oci.image import Image, Index
from mlpk.packager.oci.layer import Layer
from mlpk.packager.oci.safety import check_member

MODEL_CARD = "opt/mlpack/model/model-card.json"
REPOSITORY = "opt/mlpack/models/"
_CONFIG_KEYS = ("Entrypoint", "Cmd", "Env", "User", "WorkingDir", "ExposedPorts")


class _Counter:
    def __init__(self, raw: gzip.GzipFile) -> None:
        self.raw, self.count = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data


def _version_of(path: str) -> str | None:
    """`NAME/VERSION` for a repository version's folder or card path, else None."""
    parts = path.removeprefix(REPOSITORY).split("/")
    return "/".join(parts[:2]) if path.startswith(REPOSITORY) and len(parts) >= 2 and parts[1].isdigit() else None


def _scan(layer: Layer) -> tuple[int, dict[str, Any]]:
    """(uncompressed size, model cards by path: MODEL_CARD, `NAME/VERSION`, and `NAME/VERSION` -> MODEL_CARD for a
    version that links to the one model) of one layer, in one streaming pass; members are checked."""
    cards: dict[str, Any] = {}
    with layer.open() as raw:
        counter = _Counter(gzip.GzipFile(fileobj=raw, mode="rb"))
        with tarfile.open(fileobj=counter, mode="r|") as tar:  # type: ignore[call-overload]
            for info in tar:
                check_member(info)
                name = info.name.removeprefix("./")
                version = _version_of(name)
                if info.issym() and version is not None and version == name.removeprefix(REPOSITORY):
                    cards[version] = MODEL_CARD  # resolved against the one model's card once all layers are read
                elif info.isfile() and (name == MODEL_CARD or (version and name.endswith("/model-card.json"))):
                    extracted = tar.extractfile(info)
                    try:
                        card = json.loads(extracted.read()) if extracted else None
                    except json.JSONDecodeError:
                        card = {"error": "model-card.json is not JSON"}
                    cards[MODEL_CARD if name == MODEL_CARD else str(version)] = card
        while counter.read(CHUNK):
            pass
        while raw.read(CHUNK):
            pass
    return counter.count, cards


def describe_image(img: Image, sizes: bool = True) -> dict[str, Any]:
    config = img.config
    section = config.get("config") or {}
    layers, cards = [], {}
    for layer in img.layers:
        entry: dict[str, Any] = {"digest": str(layer.digest), "size": layer.size, "media_type": layer.media_type}
        if sizes:
            entry["uncompressed_size"], found = _scan(layer)
            cards.update(found)
        layers.append(entry)
    card = cards.pop(MODEL_CARD, None)
    versions = {key: card if value == MODEL_CARD else value for key, value in sorted(cards.items())}
    return {
        "digest": str(img.digest),
        "media_type": img.media_type,
        "platform": str(img.platform),
        "created": config.get("created"),
        "layers": layers,
        "size": sum(layer.size for layer in img.layers) + img.config_blob.size,
        "config": {key: section[key] for key in _CONFIG_KEYS if key in section},
        "labels": section.get("Labels") or {},
        "model_card": None if versions else card,
        "model_cards": versions,  # a model repository image: NAME/VERSION -> card
    }


def describe(text: str, sizes: bool = True) -> dict[str, Any]:
    """A JSON-able description of the image or index that `text` names (reference, layout dir or tar)."""
    item = sources.read(text)
    images = item.images if isinstance(item, Index) else (item,)
    return {
        "source": text,
        "kind": sources.kind_of(text),
        "digest": str(item.digest),
        "media_type": item.media_type,
        "platforms": [str(img.platform) for img in images],
        "images": [describe_image(img, sizes) for img in images],
    }
