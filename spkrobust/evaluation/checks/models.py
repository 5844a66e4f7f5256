"""Checks of the models themselves: the source gives input gradients, the target is as random as it declares."""
from __future__ import annotations

from collections import defaultdict

from spkrobust.evaluation.checks.base import (GRADIENT, ZERO_GRAD_MAX, entry, pc, who)


def check_zero_grad(recs: list[dict]) -> list[dict]:
    sets = {}
    for r in recs:
        if r["_type"] in GRADIENT:
            sets[(r["dataset"], r["source"], r["source_replica"], r["attack"], r["eps"])] = r.get("zero_grad_frac")
    by = defaultdict(list)
    for (ds, s, sr, atk, e), z in sets.items():
        by[(ds, s, sr, atk)].append((e, z))
    out = []
    for (ds, s, sr, atk), vals in sorted(by.items()):
        known = [(e, z) for e, z in vals if z is not None]
        if not known:
            out.append(entry("zero_gradient_fraction", "not_measured", "zero_grad_frac not recorded",
                              dataset=ds, source=who(s, sr), attack=atk))
            continue
        e, z = max(known, key=lambda v: v[1])
        status = "flag" if z > ZERO_GRAD_MAX else "ok"
        out.append(entry("zero_gradient_fraction", status,
                          f"max {pc(z)} of inputs with an all-zero input gradient (at eps {e:.4g}; "
                          f"limit {pc(ZERO_GRAD_MAX)}) over {len(known)} set(s)",
                          dataset=ds, source=who(s, sr), attack=atk))
    if not out:
        out.append(entry("zero_gradient_fraction", "not_measured", "no gradient-based attack records"))
    return out


def check_stochastic(clean: list[dict] | None) -> list[dict]:
    if not clean:
        return [entry("stochastic_target", "not_measured", "no clean-accuracy records given")]
    out = []
    for c in sorted(clean, key=lambda c: (str(c.get("dataset")), str(c.get("model")), int(c.get("replica") or 0))):
        target = who(c.get("model"), c.get("replica"))
        rc = c.get("repeat_check")
        declared = bool(c.get("stochastic"))
        ds = c.get("dataset")
        if not rc:
            out.append(entry("stochastic_target", "not_measured", "the clean record has no two-pass repeat check",
                              dataset=ds, target=target))
            continue
        spread = (f"two passes: {pc(rc.get('pred_disagree_frac'))} of predictions differ, max logit diff "
                  f"{rc.get('logit_max_abs_diff', 0):.3g}; clean {pc(c.get('clean_acc'))} ± "
                  f"{pc(c.get('clean_acc_std'))} over {c.get('repeats')} repeat(s)")
        differs = bool(rc.get("differs"))
        if declared and differs:
            status, what = ("flag", "stochastic but evaluated with a single repeat (no spread); ") \
                if int(c.get("repeats") or 1) < 2 else ("ok", "stochastic (declared); ")
        elif not declared and not differs:
            status, what = "ok", "deterministic (declared); "
        elif not declared:
            status, what = "flag", "declared deterministic but the forward pass is random; "
        else:
            status, what = "flag", "declared stochastic but two passes are identical; "
        out.append(entry("stochastic_target", status, what + spread, dataset=ds, target=target))
    return out
