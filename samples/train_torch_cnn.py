"""Train the PyTorch digits CNN (samples/torch_cnn.py) on scikit-learn's digits and save it four ways:
TorchScript (`digits_cnn_torchscript.pt`), a `torch.export` program (`digits_cnn.pt2`, dynamic batch), and a state
dict (`digits_cnn_state.pt`, `digits_cnn.safetensors`) to be rebuilt with `--model-class`.

The data ships with scikit-learn, so this runs offline. Also writes the held-out split as an .npz keyed by the
model's input name (`image`, NCHW float32) plus `labels`.

    python samples/train_torch_cnn.py --out samples/models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_cnn import DigitsCNN  # noqa: E402 - the class lives beside this script

SEED = 0
INPUT = "image"
MODEL_ARGS = {"width": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (n, 1, 8, 8), values in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.25, random_state=SEED, stratify=digits.target)

    model = DigitsCNN(**MODEL_ARGS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(args.epochs):
        for batch in torch.randperm(len(xs), generator=generator).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[batch]), ys[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())

    args.out.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(x_test[:2])
    torch.jit.save(torch.jit.trace(model, example), args.out / "digits_cnn_torchscript.pt")
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (example,), dynamic_shapes={"image": {0: batch}})
    torch.export.save(program, args.out / "digits_cnn.pt2")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, args.out / "digits_cnn_state.pt")
    save_file(state, args.out / "digits_cnn.safetensors")
    (args.out / "digits_cnn_args.json").write_text(json.dumps(MODEL_ARGS))
    np.savez(args.out / "digits_nchw_test.npz", **{INPUT: x_test, "labels": y_test.astype(np.int64)})
    print(f"torch digits CNN: held-out accuracy {accuracy:.4f} on {len(y_test)} images -> {args.out}")


if __name__ == "__main__":
    main()
