"""Train a TF-IDF + LogisticRegression text classifier on a small corpus this script generates deterministically
(three topics: weather, sport, cooking), and save the Pipeline with joblib as `text_topics.joblib`.

Also writes the held-out split as `text_topics_test.npz`: the input `input` as strings of shape (n, 1) (the shape
skl2onnx gives text inputs) plus `labels`.

    python samples/train_sklearn_text.py --out samples/models
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

SEED = 0
INPUT = "input"
TOPICS = {
    "weather": "rain sun cloud storm wind forecast cold warm snow humid thunder breeze",
    "sport": "match goal team score player coach league win referee season stadium striker",
    "cooking": "recipe oven bake salt flour butter simmer garlic onion roast pan sauce",
}
FILLER = "the a today very some with and of in really quite".split()


def corpus(n: int, rng: random.Random) -> tuple[list[str], list[int]]:
    """`n` sentences: mostly words of one topic, some filler, and a few words of another topic as noise."""
    names = list(TOPICS)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(len(names))
        own = TOPICS[names[label]].split()
        other = TOPICS[names[(label + rng.randrange(1, len(names))) % len(names)]].split()
        words = (rng.choices(own, k=rng.randint(3, 6)) + rng.choices(FILLER, k=3)
                 + rng.choices(other, k=rng.randint(1, 3)))
        rng.shuffle(words)
        texts.append(" ".join(w.upper() if rng.random() < 0.1 else w for w in words))
        labels.append(label)
    return texts, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    args = parser.parse_args()

    texts, labels = corpus(600, random.Random(SEED))
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.25, random_state=SEED, stratify=labels)
    model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000, random_state=SEED))
    model.fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))

    args.out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.out / "text_topics.joblib")
    np.savez(args.out / "text_topics_test.npz",
             **{INPUT: np.array(x_test, dtype=str)[:, None], "labels": np.array(y_test, dtype=np.int64)})
    print(f"sklearn text pipeline: held-out accuracy {accuracy:.4f} on {len(y_test)} texts -> {args.out}")


if __name__ == "__main__":
    main()
