"""``spkrobust aggregate``: merge the per-job evaluation records, the models' ``metrics.json``
and the clean-accuracy JSONs into ``summary.csv``, ``models.csv`` and ``records.json``.

* ``summary.csv`` -- one row per (dataset, source, source_replica, attack, eps, target,
  target_replica), columns :data:`SUMMARY_COLUMNS`, sorted by dataset, attack, eps (numeric),
  source, source replica, target, target replica;
* ``models.csv`` -- one row per trained model replica, columns :data:`MODEL_COLUMNS`; ``surrogate`` is an
  SNN's surrogate: the one spike-based training (kind ``snn``) trained it with, and the one every attack
  without its own ``grad:`` differentiates through (a converted SNN was never trained with it);
* ``records.json`` -- ``{"format": RECORDS_FORMAT, "records": [...], "clean": [...],
  "models": [...]}``: the merged raw records, clean records and model metrics (without
  package versions), read by the ``report`` stage for the sanity checks.

Model kinds: ``models.csv`` ``kind`` is the *config* kind, ``ann`` | ``convert`` | ``snn``, the
metrics record's ``kind`` (:mod:`spkrobust.training.records`); ``summary.csv``
``source_kind``/``target_kind`` use the same config kind when the model's metrics are known,
otherwise the record's own field.

All accuracies are fractions in [0, 1] in the CSV files.
"""
from __future__ import annotations

import json

import csv
import io as _pyio
from pathlib import Path
from typing import Iterable

from spkrobust.errors import FileProblem, UserError
from spkrobust.evaluation.records import read_record
from spkrobust.io import atomic_write_json, atomic_write_text, read_tagged
from spkrobust.report.data import _num
from spkrobust.training.records import read_metrics
from spkrobust.text import fmt_csv
from spkrobust.config.vocab import CLEAN_FORMAT, RECORDS_FORMAT


SUMMARY_COLUMNS = [
    "dataset", "source", "source_replica", "source_kind", "attack", "eps", "eps_label",
    "target", "target_replica", "target_kind", "setting", "clean_acc", "clean_acc_std",
    "adv_acc", "adv_acc_std", "n", "repeats", "zero_grad_frac", "stochastic", "seed",
    "attack_type", "attack_params",
]

MODEL_COLUMNS = [
    "dataset", "model", "kind", "arch", "neuron", "leak", "timesteps", "encoder", "surrogate", "replica",
    "seed", "clean_acc", "method", "epochs", "wall_s", "base", "parent", "eval_clean_acc",
    "eval_clean_acc_std", "same_as",
]

AGGREGATE_FILES = ("summary.csv", "models.csv", "records.json")


def _read_path_list(path: str) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise FileProblem(f"{p}: path list not found")
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _gather(explicit: list[str] | None, from_files: list[str] | None) -> list[Path]:
    paths: list[str] = list(explicit or [])
    for f in from_files or []:
        paths.extend(_read_path_list(f))
    seen, out = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(Path(p))
    return out


def load_records(paths: Iterable[Path]) -> list[dict]:
    """Read evaluation records (format :mod:`spkrobust.evaluation.records`); one per key."""
    recs, where = [], {}
    for p in paths:
        r = read_record(p)
        key = _record_key(r)
        if key in where:
            raise UserError(f"two records for the same evaluation {key}: {where[key]} and {p}")
        where[key] = p
        recs.append(r)
    recs.sort(key=_record_sort_key)
    return recs


def _record_key(r: dict) -> tuple:
    return (r["dataset"], r["source"], int(r["source_replica"]), r["attack"], str(r["eps_label"]),
            r["target"], int(r["target_replica"]))


def _record_sort_key(r: dict) -> tuple:
    return (str(r["dataset"]), str(r["attack"]), float(r["eps"]), str(r["source"]),
            int(r["source_replica"]), str(r["target"]), int(r["target_replica"]))


def load_models(paths: Iterable[Path]) -> tuple[list[dict], list[dict]]:
    """Read model metrics files (format :mod:`spkrobust.training.records`) -> (models.csv
    rows, raw metrics without ``versions``)."""
    rows, raws, where = [], [], {}
    for p in paths:
        m = read_metrics(p)
        meta, spec = m["meta"], m["config"]["model"]
        name, dataset, replica, kind = m["name"], m["dataset"], int(m["replica"]), m["kind"]
        snn = kind != "ann"
        row = {
            "dataset": dataset, "model": name, "kind": kind, "arch": meta.get("arch"),
            "neuron": meta.get("neuron") if snn else None, "leak": _num(meta.get("leak")) if snn else None,
            "timesteps": meta.get("T") if snn else None, "encoder": meta.get("encoder") if snn else None,
            "surrogate": meta.get("surrogate") if snn else None,
            "replica": replica, "seed": m["seed"], "clean_acc": _num(m["clean_acc"]), "method": m.get("method"),
            "epochs": m["epochs"], "wall_s": _num(m.get("wall_s")), "base": m["base"], "parent": spec.get("from"),
            "eval_clean_acc": None, "eval_clean_acc_std": None,
        }
        key = (dataset, name, replica)
        if key in where:
            raise UserError(f"two metrics files for model {name} replica {replica} of {dataset}: "
                            f"{where[key]} and {p}")
        where[key] = p
        rows.append(row)
        raws.append({k: v for k, v in m.items() if k != "versions"})
    rows.sort(key=lambda r: (str(r["dataset"]), str(r["model"]), int(r["replica"])))
    raws.sort(key=lambda r: (str(r["dataset"]), str(r["name"]), int(r["replica"])))
    return rows, raws


def load_clean(paths: Iterable[Path]) -> list[dict]:
    """Read clean-accuracy JSONs (format :data:`~spkrobust.config.vocab.CLEAN_FORMAT`)."""
    out = [read_tagged(p, CLEAN_FORMAT, "clean-accuracy record", "clean") for p in paths]
    out.sort(key=lambda c: (str(c["dataset"]), str(c["model"]), int(c["replica"])))
    return out


def summarize(records: list[dict], models: list[dict]) -> list[dict]:
    """One ``summary.csv`` row per record, kinds from the models' config kind when known."""
    kinds = {(m["dataset"], m["model"]): m["kind"] for m in models}
    rows = []
    for r in records:
        row = {c: r.get(c) for c in SUMMARY_COLUMNS}
        row["source_kind"] = kinds.get((r["dataset"], r["source"]), r.get("source_kind"))
        row["target_kind"] = kinds.get((r["dataset"], r["target"]), r.get("target_kind"))
        for c in ("clean_acc", "clean_acc_std", "adv_acc", "adv_acc_std", "zero_grad_frac"):
            row[c] = _num(r.get(c))
        rows.append(row)
    rows.sort(key=_record_sort_key)
    return rows


def write_csv(rows: list[dict], columns: list[str], path: Path) -> None:
    buf = _pyio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([fmt_csv(r.get(c)) for c in columns])
    atomic_write_text(buf.getvalue(), path)


def add_aliases(models: list[dict], aliases: list[dict]) -> list[dict]:
    """One row per alias (a model trained once under an earlier name,
    :func:`spkrobust.config.expand.aliases`): the trained model's row under the alias's name, base,
    parent and neuron settings, ``same_as`` naming the model whose outputs it shares."""
    out = list(models)
    for a in aliases:
        for m in models:
            if m["model"] == a["same_as"] and int(m["replica"]) == int(a["replica"]):
                row = {**m, **{k: a[k] for k in ("model", "base", "parent", "neuron", "leak") if k in a}}
                row["same_as"] = a["same_as"]
                out.append(row)
    out.sort(key=lambda r: (str(r["dataset"]), str(r["model"]), int(r["replica"])))
    return out


def aggregate(record_paths: Iterable[Path], metrics_paths: Iterable[Path], out_dir: Path,
              clean_paths: Iterable[Path] = (), aliases: list[dict] = ()) -> list[Path]:
    """Write ``summary.csv``, ``models.csv`` and ``records.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    records = load_records(record_paths)
    models, raw_models = load_models(metrics_paths)
    models = add_aliases(models, list(aliases))
    clean = load_clean(clean_paths)
    by_model = {(c["dataset"], c["model"], c["replica"]): c for c in clean}
    for m in models:
        c = by_model.get((m["dataset"], m["model"], m["replica"]))
        if c is not None:
            m["eval_clean_acc"] = _num(c.get("clean_acc"))
            m["eval_clean_acc_std"] = _num(c.get("clean_acc_std"))
    summary = summarize(records, models)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(summary, SUMMARY_COLUMNS, out_dir / "summary.csv")
    write_csv(models, MODEL_COLUMNS, out_dir / "models.csv")
    atomic_write_json({"format": RECORDS_FORMAT, "records": records, "clean": clean,
                       "models": raw_models}, out_dir / "records.json")
    return [out_dir / f for f in AGGREGATE_FILES]


def _discover(records_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Standard layout under ``results/``: eval records, model metrics, clean JSONs."""
    d = Path(records_dir)
    if not d.is_dir():
        raise FileProblem(f"{d}: records directory not found")
    recs = sorted(p for p in d.glob("*/eval/*/r*/*/*/*/r*.json"))
    mets = sorted(d.glob("*/models/*/r*/metrics.json"))
    clean = sorted(d.glob("*/clean/*/r*.json"))
    return recs, mets, clean


def configure_aggregate(p) -> None:
    for name, what in (("records", "evaluation record JSON files"), ("metrics", "model metrics.json files"),
                       ("clean", "clean-accuracy JSON files (optional)")):
        p.add_argument(f"--{name}", nargs="*", metavar="FILE", default=[], help=what)
        p.add_argument(f"--{name}-from", action="append", metavar="FILE", default=[],
                       help=f"file listing {name} paths, one per line (repeatable)")
    p.add_argument("--records-dir", metavar="DIR", default=None,
                   help="instead of lists: discover every record, metrics and clean JSON under "
                        "the standard results/ layout")
    p.add_argument("--aliases", default="[]", metavar="JSON",
                   help="models trained once under an earlier name: [{model, replica, same_as, base, parent, "
                        "neuron, leak}, ...] (models.csv gets a row per alias, column same_as)")
    p.add_argument("--out-dir", required=True, metavar="DIR",
                   help="where summary.csv, models.csv and records.json are written")


def run_aggregate(args) -> int:
    """Merge evaluation records and model metrics into summary.csv, models.csv, records.json."""
    recs = _gather(args.records, args.records_from)
    mets = _gather(args.metrics, args.metrics_from)
    clean = _gather(args.clean, args.clean_from)
    if args.records_dir:
        r2, m2, c2 = _discover(Path(args.records_dir))
        recs = list(dict.fromkeys(recs + r2))
        mets = list(dict.fromkeys(mets + m2))
        clean = list(dict.fromkeys(clean + c2))
    if not recs and not mets:
        raise UserError("nothing to aggregate: give --records/--records-from, --metrics/--metrics-from "
                        "or --records-dir")
    try:
        aliases = json.loads(args.aliases)
    except json.JSONDecodeError as e:
        raise UserError(f"--aliases: not valid JSON ({e})") from None
    files = aggregate(recs, mets, Path(args.out_dir), clean, aliases)
    print(f"aggregate: {len(recs)} records, {len(mets)} models -> " + ", ".join(str(f) for f in files))
    return 0


CLI = {"aggregate": (configure_aggregate, run_aggregate)}
