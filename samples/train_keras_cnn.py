"""Train a small tf-keras (Keras 2 API) CNN on scikit-learn's digits and save it as .h5, .keras and a SavedModel.

The data ships with scikit-learn, so this runs offline. Also writes the held-out split as an .npz keyed by the
model's input name (`image`, NHWC float32) plus `labels`, for parity checks, quantization gates and benchmarks.

    python samples/train_keras_cnn.py --out samples/models
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # deterministic CPU kernels

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
INPUT = "image"


def build():  # noqa: ANN201 - a tf_keras.Model; tf_keras is imported lazily so --help stays fast
    import tf_keras

    layers = tf_keras.layers
    inputs = tf_keras.Input(shape=(8, 8, 1), name=INPUT)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return tf_keras.Model(inputs, outputs, name="digits_cnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()

    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]  # (n, 8, 8, 1), values in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.25, random_state=SEED, stratify=digits.target)

    model = build()
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))

    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "digits_cnn.h5")
    model.save(args.out / "digits_cnn.keras")
    model.save(args.out / "digits_cnn_savedmodel", save_format="tf")
    np.savez(args.out / "digits_nhwc_test.npz", **{INPUT: x_test, "labels": y_test.astype(np.int64)})
    print(f"keras digits CNN: held-out accuracy {accuracy:.4f} on {len(y_test)} images -> {args.out}")


if __name__ == "__main__":
    main()
