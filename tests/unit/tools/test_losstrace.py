"""spkrobust.tools.losstrace on a real trained ANN and real Fashion-MNIST images: one loss per attack
step, measured on the inputs every attack sees (pixels in [0, 1]), and the loss rises under PGD."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from spkrobust.data.datasets import load_prepared
from spkrobust.nets.models import load_model
from spkrobust.tools import losstrace


def test_trace_of_every_default_attack(trained_ann_path, small_data_path, tmp_path, capsys):
    out = tmp_path / "trace.json"
    assert losstrace.main(["--model", str(trained_ann_path), "--data", str(small_data_path), "--images", "16",
                           "--eps", "8/255", "--steps", "6", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["traces"]) == set(losstrace.DEFAULT_ATTACKS) and res["images"] == 16
    model = load_model(trained_ann_path).eval()
    x, y = (t[:16] for t in load_prepared(small_data_path).test_inputs())
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with torch.no_grad():
        clean_loss = float(F.cross_entropy(model(x), y))
        clean_acc = float((model(x).argmax(1) == y).float().mean())
    assert clean_acc >= 0.5  # the ANN is alive: the trace measures a real model
    for name, t in res["traces"].items():
        assert len(t["loss"]) == 6, name  # one entry per gradient step (an ANN: no EOT draws)
        assert t["acc"] <= clean_acc, name
    pgd = res["traces"]["pgd"]["loss"]
    # PGD's first gradient is taken in the ball around the clean image: its loss starts near the clean loss
    # (random start moves it by at most eps: measured 0.694 against 0.693; 0-255 pixels gave 1.12) and rises
    assert pgd[0] == pytest.approx(clean_loss, rel=0.1) and pgd[-1] > pgd[0] + 0.05
    assert "step" in capsys.readouterr().out
