"""The report's data: ``summary.csv``/``models.csv`` read back typed, and the queries on them
(:class:`_Data`, per-eps means, sweep groups)."""
from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from spkrobust.errors import FileProblem
from spkrobust.config.vocab import NON_ATTACK_TYPES, SNN_KINDS

_INT_COLS = {"source_replica", "target_replica", "n", "repeats", "replica", "seed", "timesteps",
             "epochs"}

_FLOAT_COLS = {"eps", "clean_acc", "clean_acc_std", "adv_acc", "adv_acc_std", "zero_grad_frac",
               "leak", "wall_s", "eval_clean_acc", "eval_clean_acc_std"}


def _num(x: Any) -> float | None:
    if x is None or x == "":
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _mean(xs: Iterable[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _pooled_std(stds: Iterable[float | None]) -> float:
    stds = [s for s in stds if s is not None]
    return math.sqrt(sum(s * s for s in stds) / len(stds)) if stds else 0.0

_SWEEP_PART = re.compile(r"^[A-Za-z_]+-?[0-9][0-9._e]*$")


def sweep_base(name: str) -> str:
    """Base model name of a sweep member: ``snn_bp-T4-leak0.9`` -> ``snn_bp``."""
    parts = str(name).split("-")
    while len(parts) > 1 and _SWEEP_PART.match(parts[-1]):
        parts.pop()
    return "-".join(parts)


def read_csv(path: Path) -> list[dict]:
    """Read ``summary.csv``/``models.csv`` back with numbers typed (empty -> None)."""
    path = Path(path)
    if not path.exists():
        raise FileProblem(f"{path}: not found; run `spkrobust aggregate` first")
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if v is None or v == "":
                    row[k] = None
                elif k in _INT_COLS:
                    try:
                        row[k] = int(float(v))
                    except ValueError:
                        raise FileProblem(f"{path}: column {k} holds {v!r}, not a number") from None
                elif k in _FLOAT_COLS:
                    try:
                        row[k] = float(v)
                    except ValueError:
                        raise FileProblem(f"{path}: column {k} holds {v!r}, not a number") from None
                else:
                    row[k] = v
            rows.append(row)
    return rows


def replica_clean_accs(models: Iterable[dict]) -> dict[tuple, list[float]]:
    """(dataset, model) -> the clean accuracy of each trained replica (``models.csv`` rows): the
    ``clean`` stage's where it ran, else the one training measured."""
    out: dict[tuple, list[float]] = defaultdict(list)
    for m in models:
        v = m.get("eval_clean_acc") if m.get("eval_clean_acc") is not None else m.get("clean_acc")
        if v is not None:
            out[(m["dataset"], m["model"])].append(float(v))
    return dict(out)


class _Data:
    """The summary and models tables with the lookups the report needs."""

    def __init__(self, summary: list[dict], models: list[dict], records: Iterable[dict] = (),
                 clean: Iterable[dict] = ()):
        self.summary = summary
        self.models = models
        self.records = list(records)  # raw records with per-image outcomes (records.json), for the claims
        self.clean = list(clean)
        self.datasets = sorted({r["dataset"] for r in summary} | {m["dataset"] for m in models})
        self.kind: dict[tuple, str] = {}
        self.info: dict[tuple, dict] = {}
        for m in models:
            key = (m["dataset"], m["model"])
            self.kind[key] = m.get("kind") or ""
            self.info.setdefault(key, m)
        for r in summary:
            for side in ("source", "target"):
                key = (r["dataset"], r[side])
                if key not in self.kind and r.get(f"{side}_kind"):
                    self.kind[key] = r[f"{side}_kind"]

    def attacks(self, dataset: str, claims: bool = False) -> list[str]:
        """Attack names measured on ``dataset``; ``claims=True`` leaves out random-noise baselines."""
        return sorted({r["attack"] for r in self.summary if r["dataset"] == dataset
                       and not (claims and (r.get("attack_type") in NON_ATTACK_TYPES
                                            or r["attack"] in NON_ATTACK_TYPES))})

    def eps_list(self, dataset: str, attack: str | None = None) -> list[tuple[float, str]]:
        s = {(r["eps"], r["eps_label"]) for r in self.summary
             if r["dataset"] == dataset and (attack is None or r["attack"] == attack)}
        return sorted(s)

    def model_order(self, dataset: str, names: Iterable[str]) -> list[str]:
        rank = {"ann": 0, "convert": 1, "snn": 2}

        def key(n):
            info = self.info.get((dataset, n), {})
            return (rank.get(self.kind.get((dataset, n), ""), 3), info.get("base") or sweep_base(n),
                    info.get("timesteps") or 0, info.get("leak") or 0, n)
        return sorted(set(names), key=key)

    def rows(self, dataset=None, attack=None, setting=None, target=None, source=None,
             source_kinds=None, target_kinds=None, eps=None) -> list[dict]:
        out = []
        for r in self.summary:
            if dataset is not None and r["dataset"] != dataset:
                continue
            if attack is not None and r["attack"] != attack:
                continue
            if setting is not None and r["setting"] not in ((setting,) if isinstance(setting, str) else setting):
                continue
            if target is not None and r["target"] != target:
                continue
            if source is not None and r["source"] != source:
                continue
            if eps is not None and r["eps"] != eps:
                continue
            if source_kinds is not None and self.kind.get((r["dataset"], r["source"])) not in source_kinds:
                continue
            if target_kinds is not None and self.kind.get((r["dataset"], r["target"])) not in target_kinds:
                continue
            out.append(r)
        return out


def _by_eps(rows: list[dict]) -> dict[float, tuple[float, float]]:
    """eps -> (mean adv acc over the rows at that eps, pooled std over repeats)."""
    acc = defaultdict(list)
    std = defaultdict(list)
    for r in rows:
        if r.get("adv_acc") is None:
            continue
        acc[r["eps"]].append(r["adv_acc"])
        std[r["eps"]].append(r.get("adv_acc_std") or 0.0)
    return {e: (sum(v) / len(v), _pooled_std(std[e])) for e, v in acc.items()}






def _param_groups(data, ds: str, param: str, kinds: tuple = SNN_KINDS) -> dict[tuple, list[str]]:
    """Models of ``kinds`` that differ only in ``param`` (members of one sweep from one parent),
    each group sorted by ``param``; groups with fewer than two values are left out. ``data`` is
    anything with ``info[(dataset, model)]`` rows (:class:`_Data`, the claims' ``World``)."""
    fixed = ("kind", "arch", "neuron", "encoder", "base", "parent", "leak", "timesteps")
    groups = defaultdict(list)
    for (d, name), info in data.info.items():
        if d != ds or info.get("kind") not in kinds or info.get(param) is None:
            continue
        key = tuple((f, info.get(f)) for f in fixed if f != param)
        groups[key].append(name)
    return {k: sorted(v, key=lambda n: data.info[(ds, n)][param]) for k, v in groups.items()
            if len({data.info[(ds, n)][param] for n in v}) >= 2}
