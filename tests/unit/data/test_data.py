"""Prepared datasets: seeded canonical subsets, clear errors for broken or missing files."""
from __future__ import annotations


import pytest
import torch

from spkrobust.data.datasets import load_prepared, prepare
from spkrobust.errors import FileProblem



def test_prepare_writes_canonical_seeded_subsets(small_data, small_data_path):
    d = small_data
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (3000, 1, 28, 28)
    assert d.test_x.shape == (500, 1, 28, 28) and len(d.calib_idx) == 128
    assert len(d.classes) == 10 and d.classes[0] == "T-shirt/top"
    assert len(d.source_sha256) == 64
    assert set(d.test_y.tolist()) == set(range(10))
    again = prepare("fashion_mnist", "data", train_size=3000, test_size=500, calib_size=128, seed=0)
    assert torch.equal(again["train_x"], d.train_x) and torch.equal(again["test_y"], d.test_y)
    other = prepare("fashion_mnist", "data", train_size=3000, test_size=500, calib_size=128, seed=1)
    assert not torch.equal(other["train_y"], d.train_y)


def test_truncated_prepared_file_is_a_clear_error(small_data_path, tmp_path):
    bad = tmp_path / "data.pt"
    bad.write_bytes(small_data_path.read_bytes()[:5000])
    with pytest.raises(FileProblem, match=str(bad)):
        load_prepared(bad)


def test_missing_cifar_names_the_files_and_where_to_put_them(tmp_path):
    with pytest.raises(FileProblem) as e:
        prepare("cifar10", tmp_path)
    msg = str(e.value)
    assert "data_batch_1" in msg and str(tmp_path) in msg and "\n" not in msg

