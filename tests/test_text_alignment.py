import numpy as np
import pytest

from ser_models.data.alignment import (fallback_alignment, parse_textgrid, parse_wdseg, word_frame_matrix,
                                       write_textgrid)
from ser_models.data.text import Vocabulary, embedding_matrix, load_vectors, tokenize

WDSEG = """\t SFrm  EFrm    SegAScr Word
\t    0    47     -48000 <s>
\t   48    95     -48000 EXCUSE(8)
\t   96   110     -48000 ++LAUGHTER++
\t  111   143     -48000 ME
\t  144   194     -51000 </s>
 Total score:     -195000
"""

SHORT_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

0
1.5
<exists>
2
"IntervalTier"
"phones"
0
1.5
1
0
1.5
"x"
"IntervalTier"
"words"
0
1.5
3
0
0.2
""
0.2
0.7
"Don't"
0.7
1.5
"STOP."
'''


def test_tokenize_matches_alignment_tokens(tmp_path):
    assert tokenize("Excuse me. [LAUGHTER] Don't STOP!") == ["excuse", "me", "don't", "stop"]
    (tmp_path / "a.wdseg").write_text(WDSEG)
    words, starts, ends = parse_wdseg(tmp_path / "a.wdseg")
    assert words == tokenize("Excuse me.")
    assert starts == pytest.approx([0.48, 1.11]) and ends == pytest.approx([0.96, 1.44])


def test_textgrid_long_and_short_formats(tmp_path):
    (tmp_path / "short.TextGrid").write_text(SHORT_TEXTGRID)
    assert parse_textgrid(tmp_path / "short.TextGrid") == (["don't", "stop"], [0.2, 0.7], [0.7, 1.5])
    write_textgrid(tmp_path / "long.TextGrid", (["a", "b"], [0.1, 0.5], [0.4, 0.9]), 1.2)
    assert parse_textgrid(tmp_path / "long.TextGrid") == (["a", "b"], [0.1, 0.5], [0.4, 0.9])
    with pytest.raises(ValueError, match="no tier named 'words2'.*phones"):
        parse_textgrid(tmp_path / "short.TextGrid", tier="words2")


def test_fallback_alignment_stays_inside_speech():
    wave = np.zeros(32_000, np.float32)
    wave[8_000:24_000] = 0.3 * np.sin(np.arange(16_000) / 5)
    words, starts, ends = fallback_alignment(["a", "longer", "word"], wave)
    assert starts[0] == pytest.approx(0.5, abs=0.02) and ends[-1] == pytest.approx(1.5, abs=0.02)
    durations = np.subtract(ends, starts)
    assert durations[1] == pytest.approx(6 * durations[0])  # proportional to letters


def test_word_frame_matrix():
    matrix = word_frame_matrix([0.0, 0.05, 0.3], [0.05, 0.051, 0.5], n_frames=40)
    assert matrix.shape == (3, 40)
    assert matrix[0, :5].all() and not matrix[0, 5:].any()
    assert matrix[1].sum() == 1  # a very short word still covers one frame
    assert matrix[2, 30:40].all() and matrix[2].sum() == 10


def test_bundled_glove_embeddings():
    vectors = load_vectors()
    assert vectors.vector_size == 50 and len(vectors.key_to_index) == 400_000
    vocab = Vocabulary.build([tokenize("the king is here"), tokenize("qwzxv queen")])
    matrix, missing = embedding_matrix(vocab, vectors)
    assert matrix.shape == (len(vocab), 50) and missing == ["qwzxv"]
    king, queen, here = (matrix[vocab.index[w]] for w in ("king", "queen", "here"))
    def cosine(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    assert cosine(king, queen) > cosine(king, here)  # real vectors, not noise
    assert not matrix[0].any() and not matrix[vocab.index["qwzxv"]].any()
    assert vocab.encode(["king", "nope"]) == [vocab.index["king"], 1]


def test_user_vector_files(tmp_path):
    (tmp_path / "tiny.glove.txt").write_text("hello 0.1 0.2 0.3\nworld 0.4 0.5 0.6\n")
    (tmp_path / "tiny.w2v.txt").write_text("2 3\nhello 0.1 0.2 0.3\nworld 0.4 0.5 0.6\n")
    for name in ("tiny.glove.txt", "tiny.w2v.txt"):
        vectors = load_vectors(tmp_path / name)
        assert vectors.vector_size == 3 and np.allclose(vectors["world"], [0.4, 0.5, 0.6])
    with pytest.raises(FileNotFoundError, match="GloVe"):
        load_vectors(tmp_path / "absent.txt")
