"""BERT's uncased WordPiece tokenisation from a Hugging Face tokenizer.json, in plain Python (the `tokenizers`
package is not a dependency): BertNormalizer (clean text, CJK spacing, lower case, strip accents), BertPreTokenizer
(whitespace and punctuation), greedy longest-match WordPiece with '##' continuations, [CLS] ... [SEP], right padding.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np


def _is_punctuation(ch: str) -> bool:
    code = ord(ch)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _normalize(text: str) -> str:
    out = []
    for ch in text:
        if ch == "\x00" or ch == "\ufffd" or unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r":
            continue
        if 0x4E00 <= ord(ch) <= 0x9FFF:
            out.append(f" {ch} ")
        else:
            out.append(" " if ch.isspace() else ch)
    text = unicodedata.normalize("NFD", "".join(out).lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def _words(text: str) -> list[str]:
    words: list[str] = []
    for chunk in text.split():
        current = ""
        for ch in chunk:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


class WordPiece:
    def __init__(self, tokenizer_json: Path) -> None:
        spec = json.loads(tokenizer_json.read_text())
        self.vocab: dict[str, int] = spec["model"]["vocab"]
        self.unk = self.vocab[spec["model"].get("unk_token", "[UNK]")]

    def _pieces(self, word: str) -> list[int]:
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def encode(self, sentences: list[str], max_length: int = 128) -> dict[str, np.ndarray]:
        """input_ids and attention_mask, int64 [len(sentences), longest], padded with [PAD] (0) on the right."""
        rows = []
        for sentence in sentences:
            ids = [i for word in _words(_normalize(sentence)) for i in self._pieces(word)][:max_length - 2]
            rows.append([self.vocab["[CLS]"], *ids, self.vocab["[SEP]"]])
        longest = max(len(r) for r in rows)
        input_ids = np.zeros((len(rows), longest), np.int64)
        mask = np.zeros((len(rows), longest), np.int64)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}
