"""A layer's safety check is done once per content (issue 16: re-exports decompressed every cached layer again):
`known_layer` answers a second call for the same digest from its record without reading the blob, and stays sound,
because bytes that differ from the checked ones fail where they are used (the digest check of every writer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlpk.packager.errors import BuildError, InputError, RegistryError
from mlpk.packager.oci import BlobLayer, Digest, Entry, append_layers, empty_image, layer_from_entries, layout
from mlpk.packager.oci.validate import check_layer, known_layer


def _layer() -> BlobLayer:
    return layer_from_entries([Entry("app", "dir"), Entry("app/data.bin", data=bytes(range(256)) * 400),
                               Entry("app/note.txt", data=b"hello\n")])


def _record_of(layer: BlobLayer, cache: Path) -> Path:
    return cache / "layers" / f"checked-{layer.digest.hex}.json"


def test_a_second_check_of_the_same_content_reads_nothing(tmp_path: Path) -> None:
    layer = _layer()
    first = known_layer(layer)
    assert first == check_layer(layer)
    assert first.members == 3 and first.uncompressed_size > 100_000
    layer.path.unlink()  # a check that read the blob now would fail
    assert known_layer(layer) == first


def test_bytes_changed_after_the_check_never_reach_an_image(tmp_path: Path) -> None:
    layer = _layer()
    known_layer(layer)
    data = bytearray(layer.path.read_bytes())
    data[40] ^= 0xFF
    layer.path.write_bytes(bytes(data))
    known_layer(layer)  # answered from the record: the blob is not read here
    img = append_layers(empty_image("linux/amd64"), layer)
    with pytest.raises(RegistryError, match="hashes to"):
        layout.write(img, tmp_path / "out")


def test_a_record_of_other_rules_or_a_broken_one_is_checked_again(tmp_path: Path) -> None:
    layer = _layer()
    known_layer(layer)
    record = _record_of(layer, tmp_path / "mlpack-cache")
    data = json.loads(record.read_text())
    for spoiled in ({**data, "rules": "0"}, {**data, "size": data["size"] + 1}, "{not json"):
        record.write_text(spoiled if isinstance(spoiled, str) else json.dumps(spoiled))
        blob = layer.path.read_bytes()
        layer.path.unlink()
        with pytest.raises(InputError, match="cannot be read"):  # it read the blob: the record was not taken
            known_layer(layer)
        layer.path.write_bytes(blob)
    assert known_layer(layer).members == 3
    assert json.loads(record.read_text())["rules"] == data["rules"]  # the check wrote a good record again


def test_a_wrong_diff_id_is_refused_from_the_record_too(tmp_path: Path) -> None:
    layer = _layer()
    known_layer(layer)
    wrong = BlobLayer(layer.path, layer.digest, Digest("0" * 64), layer.size)
    with pytest.raises(BuildError, match="decompresses to .* but the config records diff_id sha256:0000"):
        known_layer(wrong)
