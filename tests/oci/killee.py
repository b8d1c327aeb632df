"""The process the kill test kills: builds a fixed multi-layer image (seeded bytes, so every run gives the same
blobs) into the blob cache, then writes it as an OCI layout or pushes it. Run as
`python -m tests.oci.killee layout|push DEST`."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from mlpk.packager.oci import Entry, Image, append_layers, empty_image, layer_from_entries, layout, remote
from mlpk.packager.oci.client import RegistryClient
from mlpk.packager.oci.reference import Reference


def image() -> Image:
    rng = random.Random(42)
    layers = [layer_from_entries([Entry(f"/data/{i}.bin", data=rng.randbytes(3 << 20))]) for i in range(4)]
    return append_layers(empty_image(), *layers)


def run(mode: str, dest: str) -> None:
    img = image()
    if mode == "layout":
        layout.write(img, Path(dest), tag="k")
    else:
        ref = Reference.parse(dest)
        with RegistryClient.for_reference(ref, chunk_size=1 << 20) as client:  # chunked: more points to die at
            remote.push(img, ref, client=client)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
