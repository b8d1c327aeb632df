"""Train a scikit-learn Pipeline (StandardScaler + LogisticRegression) on the breast cancer dataset that ships with
scikit-learn, and save it with joblib as `breast_cancer.joblib`.

Also writes the held-out split as `breast_cancer_test.npz`, keyed by the input name mlpack gives scikit-learn models
(`input`, float32, 30 features) plus `labels`.

    python samples/train_sklearn_tabular.py --out samples/models
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SEED = 0
INPUT = "input"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    args = parser.parse_args()

    data = load_breast_cancer()
    features = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        features, data.target, test_size=0.25, random_state=SEED, stratify=data.target)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED))
    model.fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))

    args.out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.out / "breast_cancer.joblib")
    np.savez(args.out / "breast_cancer_test.npz", **{INPUT: x_test, "labels": y_test.astype(np.int64)})
    print(f"sklearn tabular pipeline: held-out accuracy {accuracy:.4f} on {len(y_test)} rows -> {args.out}")


if __name__ == "__main__":
    main()
