"""The studies' five claims, evaluated on the measured numbers (``claims.md``)."""
from __future__ import annotations

import math

from spkrobust.report.data import SNN_KINDS, _compare, _Data, _mean, _mean_acc, _param_groups
from spkrobust.report.fmt import _eps_label, _md_table, _pct, _pm, eps_display


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
             "Precise definitions: `spkrobust.report.claims.evaluate_claims`.\n",
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
