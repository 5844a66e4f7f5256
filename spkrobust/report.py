"""Aggregation of evaluation records and the human-readable report.

Two CLI stages live here:

``aggregate``
    reads the per-job evaluation records (one JSON per adversarial set x target), the models'
    ``metrics.json`` files and, optionally, the clean-accuracy JSONs, and writes into ``--out-dir``:

    * ``summary.csv`` -- one row per (dataset, source, source_replica, attack, eps, target,
      target_replica), columns :data:`SUMMARY_COLUMNS`, sorted by dataset, attack, eps (numeric),
      source, source replica, target, target replica;
    * ``models.csv`` -- one row per trained model replica, columns :data:`MODEL_COLUMNS`;
    * ``records.json`` -- ``{"format": "spkrobust-records-1", "records": [...], "clean": [...],
      "models": [...]}``: the merged raw records, clean records and model metrics (without
      package versions), read by the ``report`` stage for the sanity checks.

``report``
    reads those three files from ``--report-dir`` and always writes the fixed set
    :data:`REPORT_FILES` there (``tables.md claims.md checks.md index.md acc_vs_eps.png
    heatmap.png acc_vs_T.png acc_vs_leak.png``); a figure without data still exists and says
    ``not measured: <why>``. Optional per-item figures (``acc_vs_eps_<dataset>_<attack>.png``,
    ``heatmap_<dataset>_<attack>_<eps>.png``, ``acc_vs_T_<dataset>.png``,
    ``acc_vs_leak_<dataset>.png``) are written too unless ``--no-extras``; ``index.md`` links
    everything that was produced.

Model kinds: ``models.csv`` ``kind`` is the *config* kind, ``ann`` | ``convert`` | ``snn``, read
from the metrics' top-level ``"kind"``; when that is missing it is derived from ``meta.kind`` (an
``snn`` whose metrics carry ``method``/``source_kind == "convert"``/``config.kind == "convert"``
is ``convert``). ``summary.csv`` ``source_kind``/``target_kind`` use the same config kind when the
model's metrics are known, otherwise the record's own field.

All accuracies are fractions in [0, 1] in the CSV files and percentages in the markdown.
"""
from __future__ import annotations

import csv
import io as _pyio
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from spkrobust.errors import FileProblem, UserError
from spkrobust.config import setting_of
from spkrobust.io import atomic_write_bytes, atomic_write_json, atomic_write_text

SUMMARY_COLUMNS = [
    "dataset", "source", "source_replica", "source_kind", "attack", "eps", "eps_label",
    "target", "target_replica", "target_kind", "setting", "clean_acc", "clean_acc_std",
    "adv_acc", "adv_acc_std", "n", "repeats", "zero_grad_frac", "stochastic", "seed",
    "attack_type", "attack_params",
]
NON_ATTACK_TYPES = ("noise",)  # random perturbations: in tables and plots, not in the claims
MODEL_COLUMNS = [
    "dataset", "model", "kind", "arch", "neuron", "leak", "timesteps", "encoder", "replica",
    "seed", "clean_acc", "method", "epochs", "wall_s", "base", "parent", "eval_clean_acc",
    "eval_clean_acc_std",
]
AGGREGATE_FILES = ("summary.csv", "models.csv", "records.json")
REPORT_FILES = (
    "tables.md", "claims.md", "checks.md", "index.md",
    "acc_vs_eps.png", "heatmap.png", "acc_vs_T.png", "acc_vs_leak.png",
)
RECORDS_FORMAT = "spkrobust-records-1"
SNN_KINDS = ("convert", "snn")
SETTINGS = ("white-box", "black-box", "transfer")
NOISE_FLOOR = 0.01  # differences below max(std, 1 point) are marked "(within noise)"

_REQUIRED_RECORD_KEYS = ("dataset", "source", "source_replica", "attack", "eps", "target",
                         "target_replica", "adv_acc")
_INT_COLS = {"source_replica", "target_replica", "n", "repeats", "replica", "seed", "timesteps",
             "epochs"}
_FLOAT_COLS = {"eps", "clean_acc", "clean_acc_std", "adv_acc", "adv_acc_std", "zero_grad_frac",
               "leak", "wall_s", "eval_clean_acc", "eval_clean_acc_std"}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    if not path.exists():
        raise FileProblem(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FileProblem(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); "
                          "delete it and rerun the stage that writes it") from None
    except UnicodeDecodeError:
        raise FileProblem(f"{path}: not a text JSON file") from None


def eps_display(label: str) -> str:
    """``2_255`` -> ``2/255``; other labels unchanged."""
    return str(label).replace("_", "/")


def _eps_label(eps: Any) -> str:
    if isinstance(eps, str):
        return eps.replace("/", "_")
    x = float(eps)
    if x == 0:
        return "0"
    k = x * 255
    if abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}_255"
    return repr(x)


def _eps_value(eps: Any) -> float:
    if isinstance(eps, str):
        s = eps.replace("_", "/")
        if "/" in s:
            a, b = s.split("/", 1)
            return float(a) / float(b)
        return float(s)
    return float(eps)


def _num(x: Any) -> float | None:
    if x is None or x == "":
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt_csv(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _pm(mean: float | None, std: float | None, show_std: bool) -> str:
    if mean is None:
        return "–"
    if show_std and std is not None:
        return f"{_pct(mean)} ± {_pct(std)}"
    return _pct(mean)


def _mean(xs: Iterable[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _pooled_std(stds: Iterable[float | None]) -> float:
    stds = [s for s in stds if s is not None]
    return math.sqrt(sum(s * s for s in stds) / len(stds)) if stds else 0.0


def _safe_name(s: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(s))


_SWEEP_PART = re.compile(r"^[A-Za-z_]+-?[0-9][0-9._e]*$")


def sweep_base(name: str) -> str:
    """Base model name of a sweep member: ``snn_bp-T4-leak0.9`` -> ``snn_bp``."""
    parts = str(name).split("-")
    while len(parts) > 1 and _SWEEP_PART.match(parts[-1]):
        parts.pop()
    return "-".join(parts)


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


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------

def load_records(paths: Iterable[Path]) -> list[dict]:
    """Read evaluation records; checks the required keys; one record per key (else UserError)."""
    recs, where = [], {}
    for p in paths:
        r = _read_json(Path(p))
        if not isinstance(r, dict):
            raise FileProblem(f"{p}: not an evaluation record (expected a JSON object)")
        missing = [k for k in _REQUIRED_RECORD_KEYS if k not in r]
        if missing:
            raise FileProblem(f"{p}: not an evaluation record (missing {', '.join(missing)})")
        r = dict(r)
        r["source_replica"] = int(r["source_replica"])
        r["target_replica"] = int(r["target_replica"])
        r.setdefault("eps_label", _eps_label(r["eps"]))
        r["eps"] = _eps_value(r["eps"])
        if not r.get("setting"):
            r["setting"] = setting_of(r["source"], r["source_replica"], r["target"], r["target_replica"])
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


def _model_spec(m: dict) -> dict:
    """The model's config spec inside metrics: ``config.model`` (a stage slice) or ``config``."""
    cfg = m.get("config") or {}
    if isinstance(cfg.get("model"), dict):
        return cfg["model"]
    return cfg if isinstance(cfg, dict) else {}


def model_kind(m: dict) -> str:
    """Config kind of a model from its metrics: ``ann`` | ``convert`` | ``snn``."""
    kind = m.get("kind")
    if kind in ("ann", "convert", "snn"):
        return kind
    meta = m.get("meta") or {}
    cfg = _model_spec(m)
    if cfg.get("kind") in ("ann", "convert", "snn"):
        return cfg["kind"]
    mk = meta.get("kind")
    if mk == "ann":
        return "ann"
    if mk == "snn":
        if m.get("source_kind") == "convert" or meta.get("source_kind") == "convert" or "method" in m:
            return "convert"
        return "snn"
    return str(kind or mk or "")


def load_models(paths: Iterable[Path]) -> tuple[list[dict], list[dict]]:
    """Read model metrics files -> (models.csv rows, raw metrics without ``versions``)."""
    rows, raws, where = [], [], {}
    for p in paths:
        m = _read_json(Path(p))
        if not isinstance(m, dict):
            raise FileProblem(f"{p}: not a model metrics file (expected a JSON object)")
        meta = m.get("meta") or {}
        cfg = _model_spec(m)
        name = m.get("name", meta.get("name", cfg.get("name")))
        dataset = m.get("dataset", meta.get("dataset"))
        replica = m.get("replica", meta.get("replica"))
        if name is None or dataset is None or replica is None:
            raise FileProblem(f"{p}: not a model metrics file (needs name, dataset and replica)")
        kind = model_kind(m)
        row = {
            "dataset": dataset, "model": name, "kind": kind,
            "arch": meta.get("arch", cfg.get("arch")),
            "neuron": meta.get("neuron") if kind != "ann" else None,
            "leak": _num(meta.get("leak")) if kind != "ann" else None,
            "timesteps": meta.get("T") if kind != "ann" else None,
            "encoder": meta.get("encoder") if kind != "ann" else None,
            "replica": int(replica), "seed": m.get("seed", meta.get("seed")),
            "clean_acc": _num(m.get("clean_acc", meta.get("clean_acc"))),
            "method": m.get("method", cfg.get("method")),
            "epochs": m.get("epochs", (cfg.get("train") or {}).get("epochs") if kind != "convert" else 0),
            "wall_s": _num(m.get("wall_s")),
            "base": m.get("base") or cfg.get("base") or sweep_base(name),
            "parent": cfg.get("from") or m.get("from"),
            "eval_clean_acc": None, "eval_clean_acc_std": None,
        }
        key = (dataset, name, int(replica))
        if key in where:
            raise UserError(f"two metrics files for model {name} replica {replica} of {dataset}: "
                            f"{where[key]} and {p}")
        where[key] = p
        rows.append(row)
        raws.append({k: v for k, v in m.items() if k != "versions"})
    rows.sort(key=lambda r: (str(r["dataset"]), str(r["model"]), int(r["replica"])))
    raws.sort(key=lambda r: (str(r.get("dataset")), str(r.get("name")), int(r.get("replica", 0))))
    return rows, raws


_CLEAN_PATH = re.compile(r"(?:^|/)(?P<dataset>[^/]+)/clean/(?P<model>[^/]+)/r(?P<replica>\d+)\.json$")


def load_clean(paths: Iterable[Path]) -> list[dict]:
    """Read clean-accuracy JSONs; dataset/model/replica from the content or the standard path."""
    out = []
    for p in paths:
        c = _read_json(Path(p))
        if not isinstance(c, dict):
            raise FileProblem(f"{p}: not a clean-accuracy record (expected a JSON object)")
        c = dict(c)
        m = _CLEAN_PATH.search(Path(p).as_posix())
        c.setdefault("dataset", m.group("dataset") if m else None)
        model = c.get("model", c.get("target", c.get("name")))
        if model is None and m:
            model = m.group("model")
        c["model"] = model
        rep = c.get("replica", c.get("target_replica"))
        if rep is None and m:
            rep = m.group("replica")
        c["replica"] = int(rep) if rep is not None else None
        if c["dataset"] is None or c["model"] is None or c["replica"] is None:
            raise FileProblem(f"{p}: clean record without dataset/model/replica")
        out.append(c)
    out.sort(key=lambda c: (str(c["dataset"]), str(c["model"]), int(c["replica"])))
    return out


# --------------------------------------------------------------------------------------------
# aggregate
# --------------------------------------------------------------------------------------------

def summarize(records: list[dict], models: list[dict]) -> list[dict]:
    """One ``summary.csv`` row per record, kinds from the models' config kind when known."""
    kinds = {(m["dataset"], m["model"]): m["kind"] for m in models}
    rows = []
    for r in records:
        row = {c: r.get(c) for c in SUMMARY_COLUMNS}
        if row.get("attack_type") is None:
            row["attack_type"] = (r.get("attack_params") or {}).get("type") if isinstance(r.get("attack_params"), dict) else None
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
        w.writerow([_fmt_csv(r.get(c)) for c in columns])
    atomic_write_text(buf.getvalue(), path)


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


def aggregate(record_paths: Iterable[Path], metrics_paths: Iterable[Path], out_dir: Path,
              clean_paths: Iterable[Path] = ()) -> list[Path]:
    """Write ``summary.csv``, ``models.csv`` and ``records.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    records = load_records(record_paths)
    models, raw_models = load_models(metrics_paths)
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
    p.add_argument("--records", nargs="*", metavar="FILE", default=[],
                   help="evaluation record JSON files")
    p.add_argument("--records-from", action="append", metavar="FILE", default=[],
                   help="file listing record paths, one per line (repeatable)")
    p.add_argument("--metrics", nargs="*", metavar="FILE", default=[],
                   help="model metrics.json files")
    p.add_argument("--metrics-from", action="append", metavar="FILE", default=[],
                   help="file listing metrics paths, one per line (repeatable)")
    p.add_argument("--clean", nargs="*", metavar="FILE", default=[],
                   help="clean-accuracy JSON files (optional)")
    p.add_argument("--clean-from", action="append", metavar="FILE", default=[],
                   help="file listing clean-accuracy paths, one per line (repeatable)")
    p.add_argument("--records-dir", metavar="DIR", default=None,
                   help="instead of lists: discover every record, metrics and clean JSON under "
                        "the standard results/ layout")
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
    files = aggregate(recs, mets, Path(args.out_dir), clean)
    print(f"aggregate: {len(recs)} records, {len(mets)} models -> " + ", ".join(str(f) for f in files))
    return 0


# --------------------------------------------------------------------------------------------
# report data access
# --------------------------------------------------------------------------------------------

class _Data:
    """The summary and models tables with the lookups the report needs."""

    def __init__(self, summary: list[dict], models: list[dict]):
        self.summary = summary
        self.models = models
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


def _compare(rows_a: list[dict], rows_b: list[dict]) -> dict | None:
    """Average adversarial accuracy over the eps > 0 measured on both sides.

    Returns a dict with ``a``, ``b`` (means over the common eps > 0, each eps first averaged over
    the rows at that eps, i.e. over replicas/sources), ``std_a``, ``std_b`` (pooled repeat std),
    ``diff = a - b``, ``noise = max(sqrt(std_a^2 + std_b^2), 0.01)``, ``eps`` (common values),
    or None when no eps > 0 is measured on both sides.
    """
    ea, eb = _by_eps(rows_a), _by_eps(rows_b)
    common = sorted(e for e in set(ea) & set(eb) if e > 0)
    if not common:
        return None
    a = sum(ea[e][0] for e in common) / len(common)
    b = sum(eb[e][0] for e in common) / len(common)
    sa = _pooled_std(ea[e][1] for e in common)
    sb = _pooled_std(eb[e][1] for e in common)
    return {"a": a, "b": b, "std_a": sa, "std_b": sb, "diff": a - b,
            "noise": max(math.sqrt(sa * sa + sb * sb), NOISE_FLOOR), "eps": common}


def _mean_acc(rows: list[dict]) -> float | None:
    e = _by_eps([r for r in rows if r["eps"] > 0])
    return sum(v[0] for v in e.values()) / len(e) if e else None


# --------------------------------------------------------------------------------------------
# tables.md
# --------------------------------------------------------------------------------------------

def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def tables_md(data: _Data) -> str:
    parts = ["# Accuracy tables\n\n",
             "Accuracies in percent. `mean ± std` where the target was evaluated with repeats > 1 "
             "(std over repeated stochastic forward passes). White-box: source = target (same "
             "replica); black-box: source is another replica of the target's model; transfer: "
             "source is another model.\n"]
    if not data.datasets:
        parts.append("\nnot measured: no records and no models.\n")
    for ds in data.datasets:
        parts.append(f"\n## {ds}\n\n### Clean accuracy\n\n")
        models = [m for m in data.models if m["dataset"] == ds]
        if models:
            rows = []
            order = data.model_order(ds, {m["model"] for m in models})
            for m in sorted(models, key=lambda m: (order.index(m["model"]), m["replica"])):
                rows.append([m["model"], m["replica"], m.get("kind") or "", m.get("arch") or "",
                             m.get("neuron") or "", "" if m.get("leak") is None else f"{m['leak']:g}",
                             "" if m.get("timesteps") is None else m["timesteps"], m.get("encoder") or "",
                             _pct(m.get("clean_acc")),
                             _pm(m.get("eval_clean_acc"), m.get("eval_clean_acc_std"),
                                 (m.get("eval_clean_acc_std") or 0) > 0)])
            parts.append(_md_table(["model", "replica", "kind", "arch", "neuron", "leak", "T", "encoder",
                                    "clean acc (training)", "clean acc (evaluation)"], rows))
        else:
            parts.append("not measured: no model metrics for this dataset.\n")
        for atk in data.attacks(ds):
            eps = data.eps_list(ds, atk)
            eps_hdr = [f"ε={eps_display(l)}" for _, l in eps]
            parts.append(f"\n### {atk}: white-box\n\n")
            wb = data.rows(dataset=ds, attack=atk, setting="white-box")
            order = data.model_order(ds, {r["target"] for r in wb})
            keys = sorted({(r["target"], r["target_replica"]) for r in wb},
                          key=lambda k: (order.index(k[0]), k[1]))
            if keys:
                rows = []
                for t, tr in keys:
                    cells = {r["eps"]: r for r in wb if r["target"] == t and r["target_replica"] == tr}
                    rows.append([f"{t} r{tr}"] + [_cell(cells.get(e)) for e, _ in eps])
                parts.append(_md_table(["target"] + eps_hdr, rows))
            else:
                parts.append("not measured: no white-box records.\n")
            parts.append(f"\n### {atk}: black-box and transfer\n\n")
            bb = data.rows(dataset=ds, attack=atk, setting=("black-box", "transfer"))
            keys = sorted({(r["target"], r["target_replica"], r["source"], r["source_replica"], r["setting"]) for r in bb})
            order = data.model_order(ds, [k[0] for k in keys] + [k[2] for k in keys])
            keys.sort(key=lambda k: (order.index(k[0]), k[1], k[4] != "black-box", order.index(k[2]), k[3]))
            if keys:
                rows = []
                for t, tr, s, sr, st in keys:
                    cells = {r["eps"]: r for r in bb if (r["target"], r["target_replica"], r["source"], r["source_replica"]) == (t, tr, s, sr)}
                    rows.append([f"{t} r{tr}", f"{s} r{sr}", st] + [_cell(cells.get(e)) for e, _ in eps])
                parts.append(_md_table(["target", "source", "setting"] + eps_hdr, rows))
            else:
                parts.append("not measured: no black-box or transfer records.\n")
    return "".join(parts)


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    return _pm(r.get("adv_acc"), r.get("adv_acc_std"), (r.get("repeats") or 1) > 1)


# --------------------------------------------------------------------------------------------
# claims
# --------------------------------------------------------------------------------------------

CLAIMS = [
    ("1", "SNNs are at least as robust as the ANN under black-box attacks"),
    ("2", "On SNN targets, SNN-crafted (black-box) attacks are stronger than ANN-crafted ones"),
    ("3", "Fewer timesteps T make an SNN more robust"),
    ("4", "More leak (smaller leak factor) makes an SNN more robust"),
    ("5", "Spike-trained SNNs are at least as robust as converted SNNs"),
]


def evaluate_claims(data: _Data) -> list[dict]:
    """Evaluate the studies' five claims on measured numbers.

    Robustness of a model under (dataset, attack, setting) is its adversarial accuracy averaged
    over the eps > 0 that both sides of a comparison measured (each eps first averaged over the
    matching records: target replicas, source replicas, source models). ``diff`` is the side the
    claim says is more robust (or, for claim 2, the accuracy under ANN-crafted attacks) minus the
    other side. A comparison *holds* when ``diff >= 0`` for the "at least as robust" claims (1, 5)
    and when ``diff > 0`` for the strict claims (2, 3, 4); ``(within noise)`` marks
    ``|diff| < max(sqrt(std_a^2 + std_b^2), 0.01)`` (std = pooled std over repeats).

    1. For each SNN model S (kind ``convert`` or ``snn``) and ANN model A, per attack:
       black-box accuracy of S as target (source = another replica of S) minus that of A.
    2. For each SNN target S, per attack: accuracy under ANN-crafted attacks (source kind
       ``ann``, any replica) minus accuracy under SNN-crafted black-box attacks (source = another
       replica of S). Positive = SNN-crafted attacks are stronger.
    3. Among SNN models of one kind, arch, neuron, encoder, leak, sweep base name and parent
       (``from``) -- i.e. members of one sweep that differ only in T (at least two T values) --
       per attack and setting (white-box, black-box, and transfer from each common source model: the
       same adversarial inputs for every member): accuracy at the smallest T minus accuracy
       at the largest T; the Spearman rank correlation between T and accuracy over all members
       is reported (negative = fewer T more robust).
    4. As 3 with the leak factor (T fixed): accuracy at the smallest leak minus at the largest.
    5. For each spike-trained SNN (kind ``snn``) and converted SNN (kind ``convert``), per attack
       and setting (as in 3): accuracy of the trained minus the converted one.

    Attacks of type ``noise`` (random sign noise, a baseline) are left out of every claim.
    A claim's verdict is ``holds`` when every comparison holds, ``does not hold`` when at least
    one does not (the numbers say how many held), ``not measured`` when no comparison could be
    made (the reason is given).
    """
    out = []
    for cid, statement in CLAIMS:
        fn = {"1": _claim1, "2": _claim2, "3": lambda d: _claim_param(d, "timesteps", "T"),
              "4": lambda d: _claim_param(d, "leak", "leak"), "5": _claim5}[cid]
        comps, why = fn(data)
        out.append(_verdict(cid, statement, comps, why))
    return out


def _finish(comp: dict, strict: bool, context: dict) -> dict:
    d = comp["diff"]
    ok = d > 0 if strict else d >= 0
    comp = dict(comp, **context)
    comp["holds"] = ok
    comp["within_noise"] = abs(d) < comp["noise"]
    return comp


def _verdict(cid: str, statement: str, comps: list[dict], why: str) -> dict:
    if not comps:
        return {"id": cid, "claim": statement, "verdict": "not measured", "numbers": why,
                "comparisons": []}
    k = sum(c["holds"] for c in comps)
    n = len(comps)
    noisy = sum(c["within_noise"] for c in comps)
    diffs = [c["diff"] for c in comps]
    mean_d = sum(diffs) / n
    verdict = "holds" if k == n else "does not hold"
    nums = (f"holds in {k} of {n} comparisons; mean diff {100 * mean_d:+.1f} points "
            f"(range {100 * min(diffs):+.1f} to {100 * max(diffs):+.1f})")
    if noisy:
        nums += f"; {noisy} of {n} within noise"
    if noisy == n:
        nums += " (within noise)"
    return {"id": cid, "claim": statement, "verdict": verdict, "numbers": nums, "comparisons": comps}


def _clean_of(data: _Data, ds: str, model: str) -> float | None:
    rows = [r for r in data.summary if r["dataset"] == ds and r["target"] == model and r.get("clean_acc") is not None]
    if rows:
        return _mean(r["clean_acc"] for r in rows)
    return _mean(m.get("clean_acc") for m in data.models if m["dataset"] == ds and m["model"] == model)


def _models_of(data: _Data, ds: str, kinds: tuple) -> list[str]:
    names = {n for (d, n), k in data.kind.items() if d == ds and k in kinds}
    return data.model_order(ds, names)


def _claim1(data: _Data):
    comps = []
    for ds in data.datasets:
        snns, anns = _models_of(data, ds, SNN_KINDS), _models_of(data, ds, ("ann",))
        for atk in data.attacks(ds, claims=True):
            for s in snns:
                rs = data.rows(dataset=ds, attack=atk, setting="black-box", target=s)
                for a in anns:
                    ra = data.rows(dataset=ds, attack=atk, setting="black-box", target=a)
                    c = _compare(rs, ra)
                    if c:
                        cs, ca = _clean_of(data, ds, s), _clean_of(data, ds, a)
                        note = "" if cs is None or ca is None else f"clean {_pct(cs)} vs {_pct(ca)}"
                        comps.append(_finish(c, False, {"dataset": ds, "attack": atk, "setting": "black-box",
                                                        "a_name": s, "b_name": a, "note": note}))
    return comps, "no black-box records (source = other replica) for both an SNN and an ANN target"


def _claim2(data: _Data):
    comps = []
    for ds in data.datasets:
        for atk in data.attacks(ds, claims=True):
            for s in _models_of(data, ds, SNN_KINDS):
                r_ann = data.rows(dataset=ds, attack=atk, target=s, source_kinds=("ann",))
                r_snn = data.rows(dataset=ds, attack=atk, target=s, setting="black-box")
                c = _compare(r_ann, r_snn)
                if c:
                    comps.append(_finish(c, True, {"dataset": ds, "attack": atk, "setting": "transfer vs black-box",
                                                   "a_name": f"ANN → {s}", "b_name": f"{s} (other replica) → {s}", "note": ""}))
    return comps, "no SNN target attacked both by an ANN (transfer) and by another replica of itself (black-box)"


def _param_groups(data: _Data, ds: str, param: str) -> dict[tuple, list[str]]:
    fixed = ("kind", "arch", "neuron", "encoder", "base", "parent", "leak", "timesteps")
    groups = defaultdict(list)
    for (d, name), info in data.info.items():
        if d != ds or info.get("kind") not in SNN_KINDS or info.get(param) is None:
            continue
        key = tuple((f, info.get(f)) for f in fixed if f != param)
        groups[key].append(name)
    return {k: sorted(v, key=lambda n: data.info[(ds, n)][param]) for k, v in groups.items()
            if len({data.info[(ds, n)][param] for n in v}) >= 2}


def _spearman(xs: list[float], ys: list[float]) -> float | None:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    if len(xs) < 2:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den > 0 else None


def _settings(data: "_Data", ds: str, atk: str):
    """(label, setting, source) to compare models in: white-box, black-box, then transfer attacks
    from each common source model (e.g. every T-sweep member attacked by the same ANN-crafted sets),
    so that models that are targets only are still compared on identical adversarial inputs."""
    out = [("white-box", "white-box", None), ("black-box", "black-box", None)]
    srcs = sorted({r["source"] for r in data.rows(dataset=ds, attack=atk, setting="transfer")})
    out += [(f"transfer from {src}", "transfer", src) for src in srcs]
    return out


def _claim_param(data: _Data, param: str, label: str):
    comps = []
    for ds in data.datasets:
        groups = _param_groups(data, ds, param)
        for atk in data.attacks(ds, claims=True):
            for slabel, setting, src in _settings(data, ds, atk):
                for members in groups.values():
                    have = [n for n in members if data.rows(dataset=ds, attack=atk, setting=setting, target=n, source=src)]
                    vals = [data.info[(ds, n)][param] for n in have]
                    if len(set(vals)) < 2:
                        continue
                    lo, hi = have[0], have[-1]
                    c = _compare(data.rows(dataset=ds, attack=atk, setting=setting, target=lo, source=src),
                                 data.rows(dataset=ds, attack=atk, setting=setting, target=hi, source=src))
                    if not c:
                        continue
                    accs = [_mean_acc([r for r in data.rows(dataset=ds, attack=atk, setting=setting, target=n, source=src)
                                       if r["eps"] in c["eps"]]) for n in have]
                    rho = _spearman(vals, accs)
                    series = ", ".join(f"{label}={v:g}: {_pct(a)}" for v, a in zip(vals, accs))
                    cleans = ", ".join(f"{label}={v:g}: {_pct(_clean_of(data, ds, n))}" for v, n in zip(vals, have))
                    note = (f"adv acc {series}; Spearman ρ({label}, acc) = "
                            f"{'n/a' if rho is None else f'{rho:+.2f}'}; clean {cleans}")
                    comps.append(_finish(c, True, {"dataset": ds, "attack": atk, "setting": slabel,
                                                   "a_name": lo, "b_name": hi, "note": note}))
    return comps, (f"no SNN models that differ only in {label} (need a sweep over {label} with "
                   f"white-box, black-box or common-source transfer records)")


def _claim5(data: _Data):
    comps = []
    for ds in data.datasets:
        trained, conv = _models_of(data, ds, ("snn",)), _models_of(data, ds, ("convert",))
        for atk in data.attacks(ds, claims=True):
            for slabel, setting, src in _settings(data, ds, atk):
                for s in trained:
                    for c_ in conv:
                        c = _compare(data.rows(dataset=ds, attack=atk, setting=setting, target=s, source=src),
                                     data.rows(dataset=ds, attack=atk, setting=setting, target=c_, source=src))
                        if c:
                            cs, cc = _clean_of(data, ds, s), _clean_of(data, ds, c_)
                            note = "" if cs is None or cc is None else f"clean {_pct(cs)} vs {_pct(cc)}"
                            comps.append(_finish(c, False, {"dataset": ds, "attack": atk, "setting": slabel,
                                                            "a_name": s, "b_name": c_, "note": note}))
    return comps, "no spike-trained and converted SNN evaluated in the same setting"


def claims_md(claims: list[dict]) -> str:
    lines = ["# The studies' claims on measured numbers\n\n",
             "Robustness = adversarial accuracy averaged over the eps > 0 measured for both sides "
             "(percent). diff = a − b in points; a comparison holds when diff ≥ 0 (claims 1, 5) or "
             "diff > 0 (claims 2, 3, 4). `(within noise)`: |diff| < max(√(std_a² + std_b²), 1 point), "
             "std = pooled std over repeats. Random-noise baselines (attack type `noise`) are left out. "
             "Precise definitions: `spkrobust.report.evaluate_claims`.\n",
             "\n"]
    lines.append(_md_table(["#", "claim", "verdict", "numbers"],
                           [[c["id"], c["claim"], f"**{c['verdict']}**", c["numbers"]] for c in claims]))
    heads = {"1": ("SNN target", "ANN target"), "2": ("acc under ANN-crafted", "acc under SNN-crafted (black-box)"),
             "3": ("smallest T", "largest T"), "4": ("smallest leak", "largest leak"),
             "5": ("spike-trained", "converted")}
    for c in claims:
        lines.append(f"\n## Claim {c['id']}: {c['claim']}\n\n")
        if not c["comparisons"]:
            lines.append(f"not measured: {c['numbers']}\n")
            continue
        ha, hb = heads[c["id"]]
        rows = []
        for x in c["comparisons"]:
            diff = f"{100 * x['diff']:+.1f}" + (" (within noise)" if x["within_noise"] else "")
            rows.append([x["dataset"], x["attack"], x["setting"], x["a_name"], _pm(x["a"], x["std_a"], x["std_a"] > 0),
                         x["b_name"], _pm(x["b"], x["std_b"], x["std_b"] > 0), diff,
                         "holds" if x["holds"] else "does not hold",
                         ", ".join(eps_display(_eps_label(e)) for e in x["eps"]), x.get("note", "")])
        lines.append(_md_table(["dataset", "attack", "setting", ha, "a", hb, "b", "diff", "verdict", "eps", "notes"], rows))
    return "".join(lines)


# --------------------------------------------------------------------------------------------
# checks.md
# --------------------------------------------------------------------------------------------

def checks_md(records: list[dict], clean: list[dict], models: list[dict]) -> str:
    head = "# Sanity checks\n\n"
    try:
        from spkrobust.checks import run_checks
    except ImportError as e:
        return head + f"not measured: spkrobust.checks is not available ({e}).\n"
    try:
        results = run_checks(records, clean, models)
    except Exception as e:  # a failing check must not hide the rest of the report
        import sys
        import traceback

        traceback.print_exc(file=sys.stderr)
        return head + f"not measured: spkrobust.checks.run_checks failed ({type(e).__name__}: {e}).\n"
    results = list(results or [])
    if not results:
        return head + "not measured: no checks applied to these records.\n"
    counts = defaultdict(int)
    for r in results:
        counts[r.get("status", "?")] += 1
    order = {"flag": 0, "not_measured": 1, "ok": 2}
    results.sort(key=lambda r: (order.get(r.get("status"), 3), str(r.get("name", ""))))
    extra = sorted({k for r in results for k in r} - {"name", "status", "detail"})
    rows = []
    for r in results:
        rows.append([r.get("name", ""), f"**{r.get('status', '')}**" if r.get("status") == "flag" else r.get("status", ""),
                     str(r.get("detail", "")).replace("\n", " ")] +
                    [_fmt_csv(r.get(k)).replace("\n", " ") for k in extra])
    summary = ", ".join(f"{counts[s]} {s}" for s in ("flag", "not_measured", "ok") if counts[s])
    return head + f"{summary}.\n\n" + _md_table(["check", "status", "detail"] + extra, rows)


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------

def _figure(nplots: int, ncols: int, w: float = 6.0, h: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, nplots))
    nrows = max(1, math.ceil(nplots / ncols))
    fig = Figure(figsize=(w * ncols, h * nrows))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nplots)]
    return fig, axes


def _save(fig, path: Path) -> None:
    buf = _pyio.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    atomic_write_bytes(buf.getvalue(), path)


def _not_measured_png(path: Path, title: str, why: str) -> None:
    fig, (ax,) = _figure(1, 1, 6, 2.5)
    ax.axis("off")
    ax.text(0.5, 0.6, title, ha="center", va="center", fontsize=12, weight="bold")
    ax.text(0.5, 0.35, f"not measured: {why}", ha="center", va="center", fontsize=10, wrap=True)
    _save(fig, path)


def _color(i: int):
    import matplotlib

    return matplotlib.colormaps["tab10"](i % 10)


def _eps_axis(ax, eps: list[tuple[float, str]]) -> None:
    ax.set_xticks([e for e, _ in eps])
    ax.set_xticklabels([eps_display(l) for _, l in eps], rotation=45, fontsize=7)
    ax.set_xlabel("ε")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _line(ax, rows: list[dict], **kw) -> bool:
    e = _by_eps(rows)
    if not e:
        return False
    xs = sorted(e)
    ax.errorbar(xs, [e[x][0] for x in xs], yerr=[e[x][1] for x in xs], capsize=2, marker="o", ms=3, **kw)
    return True


def _panel_acc_vs_eps(ax, data: _Data, ds: str, atk: str) -> None:
    eps = data.eps_list(ds, atk)
    targets = data.model_order(ds, {r["target"] for r in data.rows(dataset=ds, attack=atk)})
    for i, t in enumerate(targets):
        wb = _line(ax, data.rows(dataset=ds, attack=atk, target=t, setting="white-box"),
                   color=_color(i), ls="-", label=t)
        _line(ax, data.rows(dataset=ds, attack=atk, target=t, setting="black-box"),
              color=_color(i), ls="--", label=None if wb else t)
    _eps_axis(ax, eps)
    ax.set_title(f"{ds} / {atk}", fontsize=10)
    _legend(ax)


def _heat_values(data: _Data, ds: str, atk: str, eps: float):
    rows = data.rows(dataset=ds, attack=atk, eps=eps)
    names = data.model_order(ds, {r["source"] for r in rows} | {r["target"] for r in rows})
    sources = [n for n in names if any(r["source"] == n for r in rows)]
    targets = [n for n in names if any(r["target"] == n for r in rows)]
    vals, marks = [], []
    for s in sources:
        vrow, mrow = [], []
        for t in targets:
            cell = [r for r in rows if r["source"] == s and r["target"] == t]
            other = [r for r in cell if r["source_replica"] != r["target_replica"]]
            use = other or cell
            vrow.append(_mean(r["adv_acc"] for r in use) if use else float("nan"))
            mrow.append("" if other or not cell else "wb")
        vals.append(vrow)
        marks.append(mrow)
    return sources, targets, vals, marks


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _panel_heatmap(ax, data: _Data, ds: str, atk: str, eps: float, label: str) -> None:
    import numpy as np

    sources, targets, vals, marks = _heat_values(data, ds, atk, eps)
    arr = np.array(vals, dtype=float) if vals else np.zeros((0, 0))
    ax.imshow(np.ma.masked_invalid(arr), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels(targets, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(sources)))
    ax.set_yticklabels(sources, fontsize=7)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    for i in range(len(sources)):
        for j in range(len(targets)):
            v = vals[i][j]
            txt = "–" if math.isnan(v) else f"{100 * v:.0f}" + ("*" if marks[i][j] else "")
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="black" if not math.isnan(v) and v > 0.6 else "white")
    ax.set_title(f"{ds} / {atk} / ε={eps_display(label)}\n(source replica ≠ target; * = white-box only)", fontsize=9)


def _heat_eps(data: _Data, ds: str, atk: str, choice: str | None) -> tuple[float, str] | None:
    pos = [(e, l) for e, l in data.eps_list(ds, atk) if e > 0]
    if not pos:
        return None
    if choice is not None:
        for e, l in pos:
            if l == choice.replace("/", "_"):
                return e, l
    return pos[(len(pos) - 1) // 2]


def _panel_param(ax, data: _Data, ds: str, atk: str, param: str, label: str) -> bool:
    groups = _param_groups(data, ds, param)
    drew = False
    xvals: set = set()
    eps = data.eps_list(ds, atk)
    ci = 0
    for gi, members in enumerate(groups.values()):
        base = data.info[(ds, members[0])].get("base") or sweep_base(members[0])
        for e, l in eps:
            for setting, ls in (("white-box", "-"), ("black-box", "--")):
                xs, ys, ss = [], [], []
                for n in members:
                    bye = _by_eps(data.rows(dataset=ds, attack=atk, setting=setting, target=n, eps=e))
                    if e in bye:
                        xs.append(data.info[(ds, n)][param])
                        ys.append(bye[e][0])
                        ss.append(bye[e][1])
                if len(set(xs)) >= 2:
                    xvals.update(xs)
                    ax.errorbar(xs, ys, yerr=ss, marker="o", ms=3, capsize=2, ls=ls, color=_color(ci),
                                label=f"{base} ε={eps_display(l)} {setting}")
                    drew = True
            ci += 1
    if drew:
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        if param == "timesteps":
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        ax.set_xticks(sorted(xvals))
        ax.set_xticklabels([f"{v:g}" for v in sorted(xvals)], fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title(f"{ds} / {atk}", fontsize=10)
        _legend(ax)
    return drew


def _plot_param(data: _Data, path: Path, datasets: list[str], param: str, label: str, title: str) -> bool:
    panels = [(ds, atk) for ds in datasets if _param_groups(data, ds, param) for atk in data.attacks(ds)]
    if panels:
        fig, axes = _figure(len(panels), min(3, max(len(data.attacks(ds)) for ds in datasets)))
        drawn = [_panel_param(ax, data, ds, atk, param, label) for ax, (ds, atk) in zip(axes, panels)]
        if any(drawn):
            for ax, d in zip(axes, drawn):
                if not d:
                    ax.axis("off")
                    ax.text(0.5, 0.5, "not measured", ha="center", va="center")
            fig.suptitle(title)
            fig.tight_layout()
            _save(fig, path)
            return True
    _not_measured_png(path, title, f"no SNN models that differ only in {label} with white-box or "
                                   f"black-box records (need a sweep with at least two {label} values)")
    return False


def plots(data: _Data, out: Path, extras: bool = True, heatmap_eps: str | None = None) -> list[Path]:
    """Write the fixed figures (and per-item extras); returns the extras written."""
    written: list[Path] = []
    # accuracy vs eps
    panels = [(ds, atk) for ds in data.datasets for atk in data.attacks(ds)]
    title = "Adversarial accuracy vs ε (solid: white-box, dashed: black-box)"
    if panels:
        ncols = min(3, max(len(data.attacks(ds)) for ds in data.datasets))
        fig, axes = _figure(len(panels), ncols)
        for ax, (ds, atk) in zip(axes, panels):
            _panel_acc_vs_eps(ax, data, ds, atk)
        fig.suptitle(title)
        fig.tight_layout()
        _save(fig, out / "acc_vs_eps.png")
        if extras:
            for ds, atk in panels:
                fig, (ax,) = _figure(1, 1, 6.5, 4.5)
                _panel_acc_vs_eps(ax, data, ds, atk)
                fig.tight_layout()
                p = out / f"acc_vs_eps_{_safe_name(ds)}_{_safe_name(atk)}.png"
                _save(fig, p)
                written.append(p)
    else:
        _not_measured_png(out / "acc_vs_eps.png", title, "no evaluation records")
    # heatmaps
    title = "Source × target adversarial accuracy (%)"
    hp = [(ds, atk, _heat_eps(data, ds, atk, heatmap_eps)) for ds, atk in panels]
    hp = [x for x in hp if x[2] is not None]
    if hp:
        ncols = min(3, max(len(data.attacks(ds)) for ds in data.datasets))
        fig, axes = _figure(len(hp), ncols, 5.2, 4.6)
        for ax, (ds, atk, (e, l)) in zip(axes, hp):
            _panel_heatmap(ax, data, ds, atk, e, l)
        fig.suptitle(title)
        fig.tight_layout()
        _save(fig, out / "heatmap.png")
        if extras:
            for ds, atk in panels:
                for e, l in data.eps_list(ds, atk):
                    if e <= 0:
                        continue
                    fig, (ax,) = _figure(1, 1, 6, 5)
                    _panel_heatmap(ax, data, ds, atk, e, l)
                    fig.tight_layout()
                    p = out / f"heatmap_{_safe_name(ds)}_{_safe_name(atk)}_{_safe_name(l)}.png"
                    _save(fig, p)
                    written.append(p)
    else:
        _not_measured_png(out / "heatmap.png", title, "no records with ε > 0")
    # T and leak
    for param, label, fixed, prefix in (("timesteps", "T", "acc_vs_T.png", "acc_vs_T"),
                                        ("leak", "leak", "acc_vs_leak.png", "acc_vs_leak")):
        title = f"SNN adversarial accuracy vs {label} (solid: white-box, dashed: black-box)"
        _plot_param(data, out / fixed, data.datasets, param, label, title)
        if extras:
            for ds in data.datasets:
                if _param_groups(data, ds, param):
                    p = out / f"{prefix}_{_safe_name(ds)}.png"
                    if _plot_param(data, p, [ds], param, label, f"{ds}: {title}"):
                        written.append(p)
                    elif p.exists():
                        p.unlink()
    return written


_EXTRA_PATTERNS = ("acc_vs_eps_*.png", "heatmap_*.png", "acc_vs_T_*.png", "acc_vs_leak_*.png")


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def _load_records_json(path: Path) -> tuple[list, list, list]:
    if not path.exists():
        return [], [], []
    obj = _read_json(path)
    if isinstance(obj, list):
        return obj, [], []
    if not isinstance(obj, dict) or obj.get("format") != RECORDS_FORMAT:
        raise FileProblem(f"{path}: not a spkrobust records file (expected format {RECORDS_FORMAT!r})")
    return obj.get("records", []), obj.get("clean", []), obj.get("models", [])


def index_md(data: _Data, claims: list[dict], extras: list[Path]) -> str:
    lines = ["# spkrobust report\n\n"]
    n_models = len(data.models)
    lines.append(f"{len(data.summary)} evaluation records, {n_models} trained model replicas, "
                 f"datasets: {', '.join(data.datasets) or 'none'}.\n\n")
    lines.append("## Claims\n\n")
    lines.append(_md_table(["#", "claim", "verdict"], [[c["id"], c["claim"], c["verdict"]] for c in claims]))
    lines.append("\n## Files\n\n")
    for name, what in (("tables.md", "clean, white-box and black-box accuracy tables"),
                       ("claims.md", "the five claims with the numbers behind each verdict"),
                       ("checks.md", "sanity flags"),
                       ("summary.csv", "one row per evaluation"),
                       ("models.csv", "one row per trained model replica")):
        lines.append(f"- [{name}]({name}) — {what}\n")
    lines.append("\n## Figures\n\n")
    for name in ("acc_vs_eps.png", "heatmap.png", "acc_vs_T.png", "acc_vs_leak.png"):
        lines.append(f"### {name}\n\n![{name}]({name})\n\n")
    if extras:
        lines.append("### Per-item figures\n\n")
        for p in sorted(extras, key=lambda p: p.name):
            lines.append(f"- [{p.name}]({p.name})\n")
    return "".join(lines)


def report(report_dir: Path, extras: bool = True, heatmap_eps: str | None = None) -> list[Path]:
    """Write :data:`REPORT_FILES` (and extras) into ``report_dir``; returns every file written."""
    report_dir = Path(report_dir)
    summary = read_csv(report_dir / "summary.csv")
    models = read_csv(report_dir / "models.csv")
    missing = [c for c in ("dataset", "source", "source_replica", "attack", "eps", "eps_label", "target",
                           "target_replica", "setting", "adv_acc") if summary and c not in summary[0]]
    if missing:
        raise FileProblem(f"{report_dir / 'summary.csv'}: missing columns {', '.join(missing)}")
    for r in summary:
        if not r.get("setting"):
            r["setting"] = setting_of(r["source"], r["source_replica"], r["target"], r["target_replica"])
    records, clean, raw_models = _load_records_json(report_dir / "records.json")
    data = _Data(summary, models)
    claims = evaluate_claims(data)
    from spkrobust.overestimate import overestimate_md

    atomic_write_text(tables_md(data) + "\n" + overestimate_md(records), report_dir / "tables.md")
    atomic_write_text(claims_md(claims), report_dir / "claims.md")
    atomic_write_text(checks_md(records, clean, raw_models), report_dir / "checks.md")
    before = {p for pat in _EXTRA_PATTERNS for p in report_dir.glob(pat)}
    written = plots(data, report_dir, extras=extras, heatmap_eps=heatmap_eps)
    for stale in before - set(written):  # extras of an earlier run that no longer apply
        stale.unlink(missing_ok=True)
    atomic_write_text(index_md(data, claims, written), report_dir / "index.md")
    return [report_dir / f for f in REPORT_FILES] + written


def configure_report(p) -> None:
    p.add_argument("--report-dir", required=True, metavar="DIR",
                   help="directory holding summary.csv, models.csv, records.json; the report is written there")
    p.add_argument("--no-extras", action="store_true",
                   help="write only the fixed files (no per-dataset/attack/eps figures)")
    p.add_argument("--heatmap-eps", default=None, metavar="LABEL",
                   help="eps label (e.g. 8/255 or 8_255) for heatmap.png; default: the median eps > 0")


def run_report(args) -> int:
    """Write tables.md, claims.md, checks.md, index.md and the figures from the aggregated files."""
    files = report(Path(args.report_dir), extras=not args.no_extras, heatmap_eps=args.heatmap_eps)
    print(f"report: {len(files)} files in {args.report_dir}")
    return 0


CLI = {"aggregate": (configure_aggregate, run_aggregate), "report": (configure_report, run_report)}
