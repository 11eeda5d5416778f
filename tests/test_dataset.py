import subprocess
import sys

from torch.utils.data import DataLoader

from ser_models.data.cache import extract
from ser_models.data.dataset import UtteranceDataset, collate
from ser_models.data.text import Vocabulary, utterance_words
from ser_models.registry import build_model, model_inputs


def test_fg_cme_batches_from_cached_features(synthetic_corpus, tmp_path):
    task = synthetic_corpus.task.head(10)
    inputs = model_inputs("fg_cme")
    report = extract(task, [i for i in inputs if i != "words"], tmp_path, progress=False)
    vocab = Vocabulary.build(utterance_words(row) for row in task.to_dict("records"))
    dataset = UtteranceDataset(task, report.stores, inputs, synthetic_corpus.classes, vocab)
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate)))
    frames, words = batch["fbank40_lengths"], batch["words_lengths"]
    assert batch["fbank40"].shape[:2] == (4, frames.max())
    assert batch["alignment"].shape == (4, words.max(), frames.max())
    for i in range(4):
        assert (batch["fbank40"][i, frames[i]:] == 0).all()
        covered = batch["alignment"][i, : words[i]].sum(-1)
        assert (covered > 0).all() and (batch["alignment"][i, words[i]:] == 0).all()
        assert batch["labels"][i] == synthetic_corpus.classes.index(task.iloc[i]["label"])
    model = build_model("fg_cme", vocab_size=len(vocab))
    assert model(batch).shape == (4, 4)


def test_list_command_prints_every_model():
    out = subprocess.run([sys.executable, "-m", "ser_models", "list"], capture_output=True, text=True,
                         check=True).stdout
    for name in ("sdl", "sll", "ds_lstm", "cma", "fg_cme", "cnn_lstm", "mha", "attn_fusion", "utt_concat"):
        assert f"\n{name} " in out
    assert "3,732,296" in out and "no_excite_semantic" in out
