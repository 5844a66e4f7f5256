"""The model metrics record (``models/<model>/r<k>/metrics.json``, written by ``train-ann``,
``convert`` and ``train-snn``): its typed fields, its format tag, and the one writer and reader.

Every kind writes the same keys; a field a kind does not have is None (an ANN has no
``ann_clean_acc``, a converted SNN no ``history``).  ``aggregate`` reads the file with
:func:`read_metrics`.  ``docs/architecture.md`` lists :data:`METRICS_KEYS` (``tests/unit/evaluation/test_records.py``
compares them).  Torch-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spkrobust.config.vocab import METRICS_FORMAT
from spkrobust.io import atomic_write_json, read_tagged

FORMAT = METRICS_FORMAT


@dataclass
class ModelMetrics:
    """One trained (or converted) model replica."""

    name: str  # the model (sweep member) name
    base: str  # its config key
    kind: str  # config kind: ann | convert | snn
    replica: int
    dataset: str
    seed: int
    clean_acc: float  # on the prepared test split
    n_test: int
    meta: dict  # the saved model's metadata (spkrobust.nets.models)
    config: dict  # the model slice the stage ran with
    epochs: int  # 0 for a conversion
    wall_s: float
    versions: dict  # spkrobust.provenance.package_versions
    device: str
    environment: dict | None = None  # spkrobust.provenance.environment: what decides bit-identity
    init: str | None = None  # the model it started from (convert: the ANN; snn: --init)
    n_train: int | None = None  # training images (ann, snn)
    train: dict | None = None  # hyperparameters with the schema's defaults (ann, snn)
    history: list = field(default_factory=list)  # per epoch: loss, train_acc, lr, seconds (ann, snn)
    resumed_from_epoch: int | None = None  # (ann, snn)
    ann_clean_acc: float | None = None  # the converted ANN's accuracy (convert)
    method: str | None = None  # conversion method (convert)
    silent_layers: list | None = None  # layers that never spiked during calibration (convert)
    firing_rates: dict | None = None  # spikes per neuron per step on the test split (convert)

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}


METRICS_KEYS = ("format",) + tuple(f.name for f in dataclasses.fields(ModelMetrics))


def write_metrics(metrics: ModelMetrics, path: str | Path | None) -> dict:
    """The record as JSON (written to ``path`` unless None)."""
    out = metrics.as_json()
    if path:
        atomic_write_json(out, path)
    return out


def read_metrics(path: str | Path) -> dict:
    """A metrics file, refused unless tagged :data:`FORMAT`."""
    return read_tagged(path, FORMAT, "model metrics file", "train-ann/convert/train-snn")
