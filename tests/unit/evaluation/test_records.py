"""The typed records: docs/architecture.md lists exactly their fields, and each is written and read
back through its one module (format tag refused when wrong)."""
from __future__ import annotations

import re

import pytest

from helpers.wfutil import REPO
from spkrobust.errors import FileProblem
from spkrobust.evaluation import records as R
from spkrobust.io import atomic_write_json
from spkrobust.training import records as M

DOC = (REPO / "docs" / "architecture.md").read_text()


def _doc_keys(heading: str) -> tuple[str, ...]:
    """The ``{a, b, ...}`` key list that follows ``heading`` in docs/architecture.md."""
    rest = DOC[DOC.index(heading):]
    body = re.search(r"`\{([^}]*)\}`", rest, re.S).group(1)
    return tuple(k.strip() for k in body.replace("\n", " ").split(","))


def test_docs_list_the_record_fields():
    assert _doc_keys("Evaluation record (") == R.RECORD_KEYS
    assert _doc_keys("Model metrics (") == M.METRICS_KEYS


def _record(**over) -> R.EvalRecord:
    fields = {f: None for f in R.RECORD_KEYS if f != "format"}
    fields.update(dataset="fashion_mnist", source="ann", source_replica=1, attack="pgd", attack_type="pgd", eps=0.1,
                  eps_label="0.1", target="ann", target_replica=1, setting="white-box", adv_acc=0.5, **over)
    return R.EvalRecord(**fields)


def test_evaluation_record_round_trip_and_refusals(tmp_path):
    p = tmp_path / "r1.json"
    written = R.write_record(_record(), p)
    assert R.read_record(p) == written and written["format"] == R.FORMAT
    assert tuple(written) == R.RECORD_KEYS
    atomic_write_json({**written, "format": "spkrobust-record-0"}, p)
    with pytest.raises(FileProblem, match="not a spkrobust evaluation record"):
        R.read_record(p)
    atomic_write_json({k: v for k, v in written.items() if k != "setting"}, p)
    with pytest.raises(FileProblem, match="evaluation record without setting"):
        R.read_record(p)


def test_metrics_record_has_every_key_for_every_kind(tmp_path):
    common = dict(name="a", base="a", replica=1, dataset="fashion_mnist", seed=0, clean_acc=0.9, n_test=10, meta={},
                  config={}, epochs=0, wall_s=1.0, versions={}, device="cpu")
    conv = M.write_metrics(M.ModelMetrics(kind="convert", method="threshold", ann_clean_acc=0.91, **common),
                           tmp_path / "m.json")
    ann = M.ModelMetrics(kind="ann", n_train=100, history=[{"epoch": 1}], **common).as_json()
    assert tuple(conv) == tuple(ann) == M.METRICS_KEYS
    assert M.read_metrics(tmp_path / "m.json") == conv and ann["method"] is None
