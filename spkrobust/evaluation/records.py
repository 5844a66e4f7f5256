"""The evaluation record (one adversarial set × one target, ``eval/.../r<k>.json``): its typed
fields, its format tag, and the one writer and reader of the file.

``evaluate`` builds an :class:`EvalRecord` and writes it with :func:`write_record`; ``aggregate``
reads it back with :func:`read_record` (tag and required keys checked, nothing re-derived).  The
sanity checks and the report read the same dicts (``records.json``).  ``docs/architecture.md``
lists :data:`RECORD_KEYS` (``tests/unit/evaluation/test_records.py`` compares them).  Torch-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spkrobust.config.vocab import RECORD_FORMAT
from spkrobust.errors import FileProblem
from spkrobust.io import atomic_write_json, read_tagged

FORMAT = RECORD_FORMAT


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation: what was attacked how (from the adversarial set's meta), on which target
    (``setting`` from :func:`spkrobust.config.expand.setting_of`), and the accuracies."""

    dataset: str
    source: str
    source_replica: int
    attack: str  # the config's attack name
    attack_params: dict | None  # the attack's config spec with its type
    attack_type: str  # fgsm, pgd, ... (spkrobust.config.vocab.ATTACK_TYPES)
    eps: float  # pixel units
    eps_label: str  # spkrobust.config.expand.eps_label
    target: str
    target_replica: int
    setting: str  # white-box | black-box | transfer
    clean_acc: float | None  # the target's clean record
    clean_acc_std: float | None
    clean_repeats: int | None
    adv_acc: float  # mean over repeats
    adv_acc_std: float  # sample std over repeats (0 for one repeat)
    adv_accs: list  # accuracy of each repeat
    repeats: int
    n: int  # images
    outcomes: dict  # per-image correctness (spkrobust.evaluation.outcomes)
    zero_grad_frac: float | None  # inputs with an all-zero input gradient (gradient attacks)
    eot_samples: int | None
    grad_mode: str | None  # the source's backward pass (eval.grad_mode or the attack's grad)
    ensemble: dict | None  # the per-member record of an ensemble set (spkrobust.attacks.ensemble_record)
    craft_seed: int | None
    craft_time_s: float | None
    seed: int  # evaluation seed
    stochastic: bool  # the target's forward pass is random
    source_stochastic: bool | None
    source_kind: str | None
    target_kind: str | None
    num_classes: int | None
    time_s: float

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}


RECORD_KEYS = ("format",) + tuple(f.name for f in dataclasses.fields(EvalRecord))
# what a reader needs to place a record (the rest may be None in a hand-made record)
REQUIRED_KEYS = ("dataset", "source", "source_replica", "attack", "attack_type", "eps", "eps_label", "target",
                 "target_replica", "setting", "adv_acc")


def write_record(record: EvalRecord, path: str | Path) -> dict:
    out = record.as_json()
    atomic_write_json(out, path)
    return out


def read_record(path: str | Path) -> dict:
    """An evaluation record file, refused unless tagged :data:`FORMAT` with :data:`REQUIRED_KEYS`."""
    r = read_tagged(path, FORMAT, "evaluation record", "evaluate")
    missing = [k for k in REQUIRED_KEYS if k not in r]
    if missing:
        raise FileProblem(f"{path}: evaluation record without {', '.join(missing)}; rerun `spkrobust evaluate`")
    return r
