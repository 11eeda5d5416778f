"""What the tables need from the corpus later (dialogs and turns for DED, every fold's splits), stored in the
sweep folder when it runs: aggregation reads these and never goes back to the corpus."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestration.store import storage

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from ser_models.data.folds import Fold


UTTERANCE_FACTS = ["utt_id", "speaker", "session", "dialog", "turn", "start_s", "emotion", "label"]


def store_corpus_facts(sweep_dir: str, corpus_table: pd.DataFrame, folds: list[Fold]) -> None:
    """What the tables need from the corpus later (dialogs and turns for DED, every fold's splits), stored with
    the sweep when it runs: aggregation reads these and never goes back to the corpus."""
    splits = pd.DataFrame([(fold.index, utt_id, split) for fold in folds for split in ("train", "validation", "test")
                           for utt_id in getattr(fold, split)], columns=["fold", "utt_id", "split"])
    for name, frame in (("utterances", corpus_table[UTTERANCE_FACTS]), ("fold_splits", splits)):
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
        storage.write_bytes(storage.join(sweep_dir, f"{name}.parquet"), sink.getvalue().to_pybytes())
