"""Per-image outcomes: packing, positions and alignment (spkrobust.evaluation.outcomes)."""
import numpy as np
import pytest

from spkrobust.evaluation import outcomes as O
from spkrobust.errors import FileProblem


def test_pack_roundtrip_and_size():
    rng = np.random.default_rng(0)
    m = rng.random(1000) < 0.6
    s = O.pack_bits(m)
    assert len(s) <= 172  # 125 bytes of bits in base64
    assert np.array_equal(O.unpack_bits(s, 1000), m)
    with pytest.raises(FileProblem, match="cannot hold exactly"):
        O.unpack_bits(s, 2000)


def test_encode_decode_whole_split_and_subset():
    c1, c2 = np.array([1, 0, 1, 1], bool), np.array([1, 1, 0, 1], bool)
    f = O.encode([c1, c2])
    assert f["positions"] == "all"
    pos, correct = O.decode(f)
    assert pos.tolist() == [0, 1, 2, 3] and correct.tolist() == [c1.tolist(), c2.tolist()]
    # a subset given in crafting order (unsorted) is stored sorted with the outcomes permuted along
    g = O.encode([np.array([1, 0, 0], bool)], positions=[7, 2, 5], split_size=10)
    pos, correct = O.decode(g)
    assert pos.tolist() == [2, 5, 7] and correct[0].tolist() == [False, False, True]


def test_align_pairs_on_common_images_and_averages_repeats():
    a = O.encode([np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)])  # positions 0..3
    b = O.encode([np.array([0, 1], bool)], positions=[1, 3], split_size=4)
    pos, (ra, rb) = O.align(a, b)
    assert pos.tolist() == [1, 3]
    assert ra.tolist() == [0.5, 0.0] and rb.tolist() == [0.0, 1.0]


def test_decode_rejects_missing_outcomes():
    with pytest.raises(FileProblem, match="no per-image outcomes"):
        O.decode(None, "r.json")
