"""Files carrying a code payload are refused and the payload never runs (issue #6, part 5).

Every spkrobust ``.pt`` reader goes through :func:`spkrobust.io.safe_load` (``torch.load`` with
``weights_only=True``).  Each test writes a file whose unpickling would create a marker file, then
checks that the loaders (``safe_load``, ``models.load_model``, ``data.load_prepared``,
``attack_files.load_adv``, the training-checkpoint load) raise a :class:`FileProblem` naming the file,
and that the marker was never created.  Truncated, empty and random-bytes files give "corrupt"
errors; a torch file that is not a spkrobust one gives "not a spkrobust ...".  Tensors are tiny.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.wfutil import REPO
from spkrobust.attacks import files as attack_files

from spkrobust.data import datasets as data

from spkrobust.nets import models
from spkrobust.errors import FileProblem
from spkrobust.io import safe_load
from spkrobust.config.vocab import ADV_FORMAT

MARKER_NAME = "PAYLOAD_RAN"


class OpenPayload:
    """Unpickling calls ``open(marker, "w")``: creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class SystemPayload:
    """Unpickling runs a shell command (``os.system``) that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


# what each loader expects: (loader, format, a well-formed body for that format)
def _model_body():
    return {"meta": {"kind": "ann", "arch": "vgg5"}, "state_dict": {"w": torch.zeros(2)}}


def _data_body():
    return {"dataset": "fashion_mnist", "train_x": torch.zeros(2, 1, 2, 2, dtype=torch.uint8),
            "train_y": torch.zeros(2, dtype=torch.long), "test_x": torch.zeros(2, 1, 2, 2, dtype=torch.uint8),
            "test_y": torch.zeros(2, dtype=torch.long), "calib_idx": torch.arange(1), "classes": ["a", "b"],
            "shape": [1, 2, 2], "mean": [0.5], "std": [0.25], "source_sha256": "0" * 64, "seed": 0}


def _adv_body():
    return {"x_adv": torch.zeros(2, 1, 2, 2), "indices": torch.arange(2), "labels": torch.zeros(2, dtype=torch.long),
            "meta": {"source": "ann"}}


def _ckpt(path):
    return safe_load(path, what="training checkpoint")


LOADERS = {
    "safe_load": (lambda p: safe_load(p, expect_format=models.FORMAT, what="model checkpoint"),
                  models.FORMAT, _model_body, "model checkpoint"),
    "load_model": (models.load_model, models.FORMAT, _model_body, "model checkpoint"),
    "load_prepared": (data.load_prepared, data.FORMAT, _data_body, "prepared dataset"),
    "load_adv": (attack_files.load_adv, ADV_FORMAT, _adv_body, "adversarial set"),
    "training_checkpoint": (_ckpt, None, _model_body, "training checkpoint"),
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _payload_file(tmp_path: Path, fmt: str | None, body, how: str, payload_cls) -> tuple[Path, Path]:
    marker = tmp_path / MARKER_NAME
    obj = dict(body())
    if fmt is not None:
        obj["format"] = fmt
    if how == "whole":  # the whole file is the payload object
        obj = payload_cls(marker)
    else:  # hidden in metadata of an otherwise well-formed file
        obj["meta"] = {"note": payload_cls(marker)}
    path = tmp_path / f"evil-{how}.pt"
    if how == "pickle":  # a plain pickle, not torch's zip container
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    elif how == "legacy":  # torch's pre-1.6 (non-zip) serialisation
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(obj, path)
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize("payload_cls", [OpenPayload, SystemPayload], ids=["open", "os.system"])
@pytest.mark.parametrize("how", ["nested", "whole", "legacy", "pickle"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_code_payload_is_refused_and_never_runs(tmp_path, loader, how, payload_cls):
    load, fmt, body, what = LOADERS[loader]
    path, marker = _payload_file(tmp_path, fmt, body, how, payload_cls)
    with pytest.raises(FileProblem) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert "\n" not in msg, msg
    if how != "pickle":  # torch containers: recognised as a refused object
        assert "refused" in msg and what in msg, msg
    assert not marker.exists(), "the payload ran while loading"


def test_payload_message_is_clean_and_names_the_refused_object(tmp_path):
    path, marker = _payload_file(tmp_path, models.FORMAT, _model_body, "nested", SystemPayload)
    with pytest.raises(FileProblem) as info:
        models.load_model(path)
    msg = str(info.value)
    assert not ANSI.search(msg), msg
    assert "posix.system" in msg or "os.system" in msg, msg  # what the file tried to call
    assert "can still be loaded" not in msg, msg
    assert not marker.exists()


def _valid_file(tmp_path: Path, loader: str) -> Path:
    _, fmt, body, _ = LOADERS[loader]
    obj = dict(body())
    if fmt is not None:
        obj["format"] = fmt
    obj["pad"] = torch.arange(4096, dtype=torch.float32)  # enough bytes to cut in the middle
    path = tmp_path / "good.pt"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("cut", ["half", "header", "empty"])
def test_truncated_file_is_reported_as_corrupt(tmp_path, loader, cut):
    good = _valid_file(tmp_path, loader)
    raw = good.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes({"half": raw[: len(raw) // 2], "header": raw[:64], "empty": b""}[cut])
    with pytest.raises(FileProblem) as info:
        LOADERS[loader][0](path)
    msg = str(info.value)
    assert str(path) in msg and "corrupt or truncated" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("loader", list(LOADERS))
def test_random_bytes_are_refused(tmp_path, loader):
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(256)) * 16 + os.urandom(1024))
    with pytest.raises(FileProblem) as info:
        LOADERS[loader][0](path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg, msg


def test_random_bytes_are_not_called_a_code_payload(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(FileProblem) as info:
        data.load_prepared(path)
    assert "payload" not in str(info.value) and "corrupt" in str(info.value), str(info.value)


@pytest.mark.parametrize("loader,what", [("safe_load", "model checkpoint"), ("load_model", "model checkpoint"),
                                         ("load_prepared", "prepared dataset"), ("load_adv", "adversarial set")])
@pytest.mark.parametrize("content", ["tensor", "dict", "other_format"])
def test_foreign_torch_file_is_not_a_spkrobust_file(tmp_path, loader, what, content):
    path = tmp_path / "foreign.pt"
    obj = {"tensor": torch.zeros(3), "dict": {"weight": torch.zeros(3)},
           "other_format": {"format": "spkrobust-grad-1", "sign": torch.zeros(3, dtype=torch.int8)}}[content]
    torch.save(obj, path)
    with pytest.raises(FileProblem) as info:
        LOADERS[loader][0](path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not a spkrobust {what}"), msg


@pytest.mark.parametrize("loader", ["load_model", "load_prepared", "load_adv"])
def test_missing_fields_and_missing_file(tmp_path, loader):
    load, fmt, _, what = LOADERS[loader]
    path = tmp_path / "hollow.pt"
    torch.save({"format": fmt}, path)
    with pytest.raises(FileProblem) as info:
        load(path)
    assert str(path) in str(info.value) and "lacks" in str(info.value), str(info.value)
    with pytest.raises(FileProblem, match="not found"):
        load(tmp_path / "absent.pt")


def test_cli_refuses_payload_with_one_line_and_exit_2(tmp_path):
    """The user path: a stage given a poisoned file prints one error line naming it, no traceback."""
    evil, marker = _payload_file(tmp_path, data.FORMAT, _data_body, "nested", SystemPayload)
    p = subprocess.run([sys.executable, "-m", "spkrobust", "clean", "--data", str(evil), "--model", str(evil),
                        "--cfg", json.dumps({"device": "cpu"}), "--out", str(tmp_path / "clean.json")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       # torch.jit's FutureWarning at SpikingJelly import is unrelated noise (reported)
                       env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore::FutureWarning"})
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"spkrobust clean: error: {evil}: refused"), p.stderr
    assert "Traceback" not in p.stderr
    assert not marker.exists() and not (tmp_path / "clean.json").exists()
