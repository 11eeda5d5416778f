"""The corpora: one module each, each with one registered `CorpusKind` (see ser_models/data/corpus.py)."""
