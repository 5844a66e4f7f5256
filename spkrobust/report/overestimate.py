"""How much a single-estimator attack overestimates robustness: the overestimate table.

Input: the evaluation records (``records.json``'s ``records``) with their per-image outcomes
(:mod:`spkrobust.evaluation.outcomes`). For every white-box cell (dataset × model × eps) that has an
``ensemble`` attack, each other attack of the same cell (the studies' attacks: FGSM, PGD, ...; noise
baselines left out) is compared with the ensemble *paired on the same images*: the difference of
accuracies ``attack − ensemble`` and its 95 % CI (:func:`spkrobust.report.stats.paired_diff_groups`:
the image bootstrap for one replica, the crossed replica x image t-interval for several). A positive difference is robustness the single
attack reported but the adaptive ensemble took away.

Each row also says how the model was trained (its training surrogate: ``models.csv`` ``surrogate``) and
through which backward pass the single attack differentiated (the record's ``grad_mode``; ``bptt`` alone is the
training surrogate); the ensemble's members name their own estimators.

The second table counts, per ensemble set, which member broke how many images first (the member
order decides credit when ``stop_early``), and how many each broke at all.

Output: one markdown section (:func:`overestimate_md`); no other module of the report is needed.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from spkrobust.attacks.ensemble_record import decode_record
from spkrobust.config.vocab import NON_ATTACK_TYPES
from spkrobust.text import md_table, pct

NOT_COMPARED = NON_ATTACK_TYPES


def _white_box(r: dict) -> bool:
    return r["setting"] == "white-box"


def _type(r: dict) -> str:
    return str(r["attack_type"])


def _cells(records: list[dict]) -> dict:
    cells: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records or []:
        if r.get("adv_acc") is None or not _white_box(r) or not r.get("outcomes"):
            continue
        key = (str(r.get("dataset", "")), str(r["target"]), float(r["eps"]), str(r.get("eps_label", r["eps"])))
        cells[key][str(r["attack"])].append(r)
    return cells


def trained_with(model: dict | None) -> str:
    """How a model (a ``models.csv`` row) was trained, in terms of the surrogate gradient."""
    if not model:
        return ""
    kind, sg = model.get("kind"), model.get("surrogate") or "?"
    named = {"ann": "ANN (exact gradient)", "convert": "converted (no surrogate)"}
    return named.get(kind, f"BPTT, {sg} surrogate")


def attack_gradient(record: dict, model: dict | None) -> str:
    """The backward pass an attack's record says it crafted through, the training surrogate named."""
    mode = record.get("grad_mode")
    if (model or {}).get("kind") == "ann" or (mode is None and record.get("target_kind") == "ann"):
        return "exact"
    if mode in (None, "bptt"):
        return f"bptt, {(model or {}).get('surrogate') or 'training'} surrogate"
    return str(mode)


def overestimate_rows(records: list[dict], seed: int = 0, models: list[dict] | None = None) -> list[dict]:
    """One row per white-box (dataset, model, eps, attack, ensemble) with the paired difference;
    ``models`` (``models.csv`` rows) name the training surrogate and the attack's gradient."""
    from spkrobust.evaluation.outcomes import align
    from spkrobust.report.stats import paired_diff_groups

    by_model = {(str(m["dataset"]), str(m["model"])): m for m in models or []}
    rows = []
    for (ds, model, eps, label), by_attack in sorted(_cells(records).items()):
        ensembles = sorted(a for a, rs in by_attack.items() if _type(rs[0]) == "ensemble")
        others = sorted(a for a, rs in by_attack.items() if _type(rs[0]) not in ("ensemble",) + NOT_COMPARED)
        for ens in ensembles:
            for atk in others:
                reps = sorted({int(r["target_replica"]) for r in by_attack[atk]}
                              & {int(r["target_replica"]) for r in by_attack[ens]})
                if not reps:
                    continue
                a_recs = [next(r for r in by_attack[atk] if int(r["target_replica"]) == k) for k in reps]
                e_recs = [next(r for r in by_attack[ens] if int(r["target_replica"]) == k) for k in reps]
                _, rates = align(*[r["outcomes"] for r in a_recs + e_recs])
                A, E = np.stack(rates[:len(reps)]), np.stack(rates[len(reps):])
                d = paired_diff_groups(A, E, seed=seed)
                m = by_model.get((ds, model))
                rows.append({"dataset": ds, "model": model,  # the config kind (convert) where models.csv has it
                             "kind": (m or {}).get("kind") or a_recs[0].get("target_kind") or "",
                             "trained_with": trained_with(m), "gradient": attack_gradient(a_recs[0], m),
                             "eps": eps, "eps_label": label, "attack": atk, "ensemble": ens,
                             "acc_attack": float(A.mean()), "acc_ensemble": float(E.mean()),
                             "diff": d.diff, "low": d.low, "high": d.high, "n": d.n, "replicas": len(reps)})
    return rows


def member_rows(records: list[dict]) -> list[dict]:
    """Per white-box ensemble set and member: images it broke first, broke at all, attacked."""
    seen, rows = set(), []
    for r in records or []:
        if _type(r) != "ensemble" or not _white_box(r) or not r.get("ensemble"):
            continue
        key = (r.get("dataset"), r["source"], int(r.get("source_replica", 1)), r["attack"], float(r["eps"]))
        if key in seen:
            continue
        seen.add(key)
        e = decode_record(r["ensemble"])
        before = e["clean_wrong"].copy()
        for i, name in enumerate(e["members"]):
            first = e["broken"][i] & ~before
            before |= e["broken"][i]
            rows.append({"dataset": key[0], "model": f"{key[1]} r{key[2]}", "ensemble": key[3], "eps": key[4],
                         "eps_label": r.get("eps_label", key[4]), "member": name, "first": int(first.sum()),
                         "broke": int(e["broken"][i].sum()), "attempted": int(e["attempted"][i].sum()),
                         "n": len(before)})
    return rows


def overestimate_md(records: list[dict], seed: int = 0, models: list[dict] | None = None) -> str:
    """The report section: the overestimate table and the ensemble members' wins."""
    parts = ["## Overestimate: single attack vs. adaptive ensemble (white-box)\n\n"]
    rows = overestimate_rows(records, seed, models)
    if not rows:
        parts.append("not measured: no white-box `ensemble` attack with per-image outcomes in the records "
                     "(add an attack `{type: ensemble, members: [...]}`; see workflow/presets/adaptive.yaml).\n")
        return "".join(parts)
    parts.append("Accuracy (%) under each attack and under the per-sample worst case of the ensemble, on the same "
                 "images; `overestimate` = attack − ensemble in points with its 95 % paired CI (image bootstrap "
                 "for one replica; with several, a replica x image random-effects t-interval). A positive overestimate is robustness the single attack "
                 "reported that the adaptive attack removed. `trained with`: the model's training; `gradient`: "
                 "the backward pass the single attack crafted through (the ensemble's members are named by theirs "
                 "below).\n\n")
    parts.append(md_table(
        ["dataset", "model", "kind", "trained with", "eps", "attack", "gradient", "acc", "ensemble", "acc ens.",
         "overestimate [95 % CI]", "n", "replicas"],
        [[r["dataset"], r["model"], r["kind"], r["trained_with"], r["eps_label"], r["attack"], r["gradient"],
          pct(r["acc_attack"]), r["ensemble"], pct(r["acc_ensemble"]),
          f"{100 * r['diff']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]", r["n"], r["replicas"]]
         for r in rows]))
    mrows = member_rows(records)
    if mrows:
        parts.append("\n### Which ensemble members win\n\n"
                     "Per white-box ensemble set: images each member broke first (in member order, images the "
                     "source misclassified before any attack excluded), images it broke at all, images it "
                     "attacked (with `stop_early` a member attacks only the survivors of the earlier ones).\n\n")
        parts.append(md_table(["dataset", "source", "ensemble", "eps", "member", "first", "broke", "attacked", "n"],
                            [[r["dataset"], r["model"], r["ensemble"], r["eps_label"], r["member"], r["first"],
                              r["broke"], r["attempted"], r["n"]] for r in mrows]))
    return "".join(parts)
