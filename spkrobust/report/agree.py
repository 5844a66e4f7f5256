"""``spkrobust agree``: do two runs of one preset (another training seed) say the same?

Each run's report folder (``summary.csv``, ``models.csv``, ``records.json``) is judged again with
:func:`spkrobust.report.claims.evaluate_claims` and :func:`spkrobust.report.headline.evaluate_headline`,
and the two are set side by side, claim by claim, on their pooled estimates:

- **verdicts**: a claim *conflicts* when one run supports it and the other contradicts it (the
  "(one training run)" label aside);
- **each estimate inside the other run's CI** (the rerun check of issue #22). Even exact 95 % intervals
  fail it often: two independent estimates of one mean differ by ``sqrt(2)`` standard errors' worth of
  noise, so the other run's estimate lands inside a 95 % interval only :data:`RERUN_HOLD` (≈ 83 %) of
  the time in the normal limit (equal widths); with 3 replicas' t-intervals, 89-91 % in simulation
  (``tests/unit/report/test_agree.py``). It is reported, not used for the verdict;
- **the difference** ``b - a`` of the two pooled estimates with its 95 % interval, the two half-widths
  combined in quadrature (independent trainings; conservative where the runs share test images,
  whose part cancels in the difference; ``--config seed=1`` also redraws ``prepare``'s training and
  test subsets, so there the runs are independent in images too), and a two-sided p-value from it. The runs **disagree** on a
  claim when Holm's step-down test over the claims (:func:`spkrobust.report.stats.holm`, family-wise
  5 %) rejects "same pooled value", or when the verdicts conflict.

Beside the claims: each model's clean accuracy over its replicas in both runs, and the runs' training
seeds (the same seeds in both runs means the same trainings, not a rerun: said in the output).
"""
from __future__ import annotations

import math
from pathlib import Path

from scipy import stats as _st

from spkrobust.io import atomic_write_text
from spkrobust.report import stats as S
from spkrobust.report.claims import evaluate_claims
from spkrobust.report.compare import base_verdict, fmt_diff
from spkrobust.report.data import replica_clean_accs
from spkrobust.report.headline import evaluate_headline
from spkrobust.report.render import load
from spkrobust.text import md_table

_Z = float(_st.norm.ppf((1 + S.CONFIDENCE) / 2))
# how often an independent rerun's estimate lies inside an exact interval at S.CONFIDENCE
RERUN_HOLD = float(2 * _st.norm.cdf(_Z / math.sqrt(2)) - 1)


def claims_of(report_dir: Path) -> tuple[list[dict], list[dict]]:
    """([{id, claim, verdict, pooled}] for the headline and every claim, the models.csv rows)."""
    data, _ = load(report_dir)
    head = evaluate_headline(data)
    rows = [{k: c.get(k) for k in ("id", "claim", "verdict", "pooled")} for c in [head, *evaluate_claims(data)]]
    return rows, data.models


def _half(d: dict) -> float:
    return (d["high"] - d["low"]) / 2


def compare_runs(a: list[dict], b: list[dict], alpha: float = S.ALPHA) -> list[dict]:
    """One row per claim present in both runs (see the module doc for each field)."""
    bs = {c["id"]: c for c in b}
    rows = []
    for ca in a:
        cb = bs.get(ca["id"])
        if cb is None:
            continue
        pa, pb = ca.get("pooled"), cb.get("pooled")
        row = {"id": ca["id"], "claim": ca["claim"], "verdict_a": ca["verdict"], "verdict_b": cb["verdict"],
               "pooled_a": pa, "pooled_b": pb,
               "conflict": {base_verdict(ca["verdict"]), base_verdict(cb["verdict"])}
               == {"supported", "contradicted"},
               "a_in_b": None, "b_in_a": None, "delta": None, "p": None}
        if pa is not None and pb is not None:
            h = math.hypot(_half(pa), _half(pb))
            delta = pb["diff"] - pa["diff"]
            row.update(a_in_b=pb["low"] <= pa["diff"] <= pb["high"], b_in_a=pa["low"] <= pb["diff"] <= pa["high"],
                       delta={"diff": delta, "low": delta - h, "high": delta + h},
                       p=1.0 if h == 0 and delta == 0 else 0.0 if h == 0 else
                       float(2 * _st.norm.sf(abs(delta) / (h / _Z))))
        rows.append(row)
    tested = [r for r in rows if r["p"] is not None]
    for r, rej in zip(tested, S.holm([r["p"] for r in tested], alpha)):
        r["differs"] = rej
    for r in rows:
        r.setdefault("differs", False)
        r["agree"] = not (r["conflict"] or r["differs"])
    return rows


def _seeds(models: list[dict]) -> list[int]:
    return sorted({int(m["seed"]) for m in models if m.get("seed") is not None})


def _acc(v: list[float] | None) -> str:
    if not v:
        return "–"
    return f"{100 * sum(v) / len(v):.1f} ({100 * min(v):.1f}–{100 * max(v):.1f}, {len(v)})"


def _yes(x) -> str:
    return "–" if x is None else "yes" if x else "**no**"


def agree_md(rows: list[dict], models_a: list[dict], models_b: list[dict], names=("a", "b")) -> str:
    na, nb = names
    sa, sb = _seeds(models_a), _seeds(models_b)
    lines = [f"# Do the two runs agree?\n\nrun a: `{na}` (training seeds {', '.join(map(str, sa)) or '–'}); "
             f"run b: `{nb}` (training seeds {', '.join(map(str, sb)) or '–'}).\n\n"]
    if sa and sa == sb:
        lines.append("**Both runs trained with the same seeds: this compares one training with itself, not a "
                     "rerun.**\n\n")
    checked = [r for r in rows if r["delta"] is not None]
    conflicts = [r["id"] for r in rows if r["conflict"]]
    differs = [r["id"] for r in rows if r["differs"]]
    inside = sum(r["a_in_b"] for r in checked) + sum(r["b_in_a"] for r in checked)
    ok = not conflicts and not differs
    lines.append(f"**{'The runs agree' if ok else 'The runs disagree'}** on {len(rows)} claims: "
                 + (f"verdicts conflict (supported in one run, contradicted in the other) on {', '.join(conflicts)}; "
                    if conflicts else "no claim is supported in one run and contradicted in the other; ")
                 + (f"the pooled estimates differ (Holm over {len(checked)} claims, family-wise "
                    f"{100 * S.ALPHA:.0f} %) on {', '.join(differs)}. " if differs else
                    f"no pooled estimate differs between the runs (Holm over {len(checked)} claims, family-wise "
                    f"{100 * S.ALPHA:.0f} %). ")
                 + f"Each estimate inside the other run's 95 % CI: {inside} of {2 * len(checked)} "
                 f"(even an exact interval holds an independent rerun's estimate only about "
                 f"{100 * RERUN_HOLD:.0f} % of the time in the normal limit: about "
                 f"{2 * len(checked) * (1 - RERUN_HOLD):.1f} misses expected; not used for the verdict).\n\n")
    lines.append("Difference = b − a of the pooled estimates (points), 95 % interval from the two CIs' half-widths "
                 "in quadrature; p two-sided; differs = Holm rejects \"the same pooled value\".\n\n")
    lines.append(md_table(
        ["#", "claim", "verdict a", "verdict b", "pooled a", "pooled b", "a inside b's CI", "b inside a's CI",
         "difference b − a", "p", "differs", "agree"],
        [[r["id"], r["claim"], r["verdict_a"], r["verdict_b"], fmt_diff(r["pooled_a"]), fmt_diff(r["pooled_b"]),
          _yes(r["a_in_b"]), _yes(r["b_in_a"]), fmt_diff(r["delta"]),
          "–" if r["p"] is None else f"{r['p']:.2f}", "–" if r["p"] is None else "**yes**" if r["differs"] else "no",
          "yes" if r["agree"] else "**no**"] for r in rows]))
    ca, cb = replica_clean_accs(models_a), replica_clean_accs(models_b)
    keys = sorted(set(ca) | set(cb))
    lines.append("\n## Clean accuracy per model (%, mean over replicas (min–max, replicas))\n\n")
    lines.append(md_table(["dataset", "model", "run a", "run b", "b − a"],
                          [[ds, m, _acc(ca.get((ds, m))), _acc(cb.get((ds, m))),
                            f"{100 * (sum(cb[(ds, m)]) / len(cb[(ds, m)]) - sum(ca[(ds, m)]) / len(ca[(ds, m)])):+.1f}"
                            if (ds, m) in ca and (ds, m) in cb else "–"] for ds, m in keys]))
    return "".join(lines)


def agree(dir_a: Path, dir_b: Path) -> tuple[str, bool]:
    """(``agree.md`` text, whether the runs agree) for two report folders."""
    a, ma = claims_of(Path(dir_a))
    b, mb = claims_of(Path(dir_b))
    rows = compare_runs(a, b)
    return agree_md(rows, ma, mb, (str(dir_a), str(dir_b))), all(r["agree"] for r in rows)


def configure_agree(p) -> None:
    p.add_argument("report_a", metavar="REPORT_A", help="report folder of run a (summary.csv, models.csv, records.json)")
    p.add_argument("report_b", metavar="REPORT_B", help="report folder of run b, e.g. the same preset with --config seed=1")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the comparison (markdown) to FILE")
    p.add_argument("--check", action="store_true", help="exit status 1 when the runs disagree")


def run_agree(args) -> int:
    """Set two runs' claims side by side: verdict conflicts, pooled estimates, clean accuracy."""
    text, ok = agree(Path(args.report_a), Path(args.report_b))
    if args.out:
        atomic_write_text(text, Path(args.out))
    print(text, end="")
    return 1 if args.check and not ok else 0


CLI = {"agree": (configure_agree, run_agree)}
