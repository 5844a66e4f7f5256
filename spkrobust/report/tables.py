"""``tables.md`` (clean, white-box, black-box and transfer accuracy) and ``checks.md``."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from spkrobust.report.data import _Data, replica_clean_accs
from spkrobust.config.expand import eps_display
from spkrobust.evaluation.checks.flags import FLAGS
from spkrobust.text import fmt_csv, md_table, pct, pm


def _replica_spread(models: list[dict], order: list[str]) -> str:
    """Per model: the spread of its evaluation clean accuracy over independently trained replicas
    (the training-seed spread that the claims' two-level CIs carry)."""
    by = {name: v for (_, name), v in replica_clean_accs(models).items()}  # models: one dataset's
    rows = []
    for name in sorted(by, key=order.index):
        v = np.asarray(by[name])
        sd = f"{100 * v.std(ddof=1):.1f}" if len(v) > 1 else "– (one training run)"
        rows.append([name, len(v), pct(float(v.mean())), f"{100 * v.min():.1f}–{100 * v.max():.1f}", sd])
    return md_table(["model", "replicas", "mean clean acc", "min–max", "std over replicas"], rows)


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
                             m.get("surrogate") or "", pct(m.get("clean_acc")),
                             pm(m.get("eval_clean_acc"), m.get("eval_clean_acc_std"),
                                 (m.get("eval_clean_acc_std") or 0) > 0)])
            parts.append("`surrogate`: what spike-based training (kind `snn`) trained with, and what every attack "
                         "without its own `grad:` differentiates through; a converted SNN was not trained with it.\n\n")
            parts.append(md_table(["model", "replica", "kind", "arch", "neuron", "leak", "T", "encoder",
                                    "surrogate", "clean acc (training)", "clean acc (evaluation)"], rows))
            parts.append("\n### Clean accuracy over training replicas\n\n" + _replica_spread(models, order))
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
                parts.append(md_table(["target"] + eps_hdr, rows))
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
                parts.append(md_table(["target", "source", "setting"] + eps_hdr, rows))
            else:
                parts.append("not measured: no black-box or transfer records.\n")
    return "".join(parts)


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    return pm(r.get("adv_acc"), r.get("adv_acc_std"), (r.get("repeats") or 1) > 1)


def checks_md(records: list[dict], clean: list[dict], models: list[dict]) -> str:
    head = "# Sanity checks\n\n"
    try:
        from spkrobust.evaluation.checks import run_checks
    except ImportError as e:
        return head + f"not measured: spkrobust.evaluation.checks is not available ({e}).\n"
    try:
        results = run_checks(records, clean, models)
    except Exception as e:  # a failing check must not hide the rest of the report
        import sys
        import traceback

        traceback.print_exc(file=sys.stderr)
        return head + f"not measured: spkrobust.evaluation.checks.run_checks failed ({type(e).__name__}: {e}).\n"
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
                    [fmt_csv(r.get(k)).replace("\n", " ") for k in extra])
    summary = ", ".join(f"{counts[s]} {s}" for s in ("flag", "not_measured", "ok") if counts[s])
    return head + f"{summary}.\n\n" + md_table(["check", "status", "detail"] + extra, rows) + flags_md(results)


def flags_md(results: list[dict]) -> str:
    """What each check in ``results`` means (:data:`spkrobust.evaluation.checks.flags.FLAGS`)."""
    names = [n for n in FLAGS if any(r.get("name") == n for r in results)]
    if not names:
        return ""
    return "\n## What each flag means\n\n" + md_table(
        ["check", "level", "raised if", "what to do"],
        [[n, FLAGS[n].level, FLAGS[n].raised_if, FLAGS[n].what_to_do] for n in names])
