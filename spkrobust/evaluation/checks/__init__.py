"""Sanity flags for a robustness evaluation, computed from the records (DESIGN §6), one small
function per check, grouped by concept:

* :mod:`.consistency` — ``eps0_equals_clean``, ``monotone_in_eps``;
* :mod:`.strength` — ``iterative_ge_single_step``, ``large_eps_to_chance``, ``ensemble_drop``,
  ``ensemble_not_weaker``, ``blackbox_not_stronger_than_whitebox``, ``noise_weaker_than_attack``;
* :mod:`.models` — ``zero_gradient_fraction``, ``stochastic_target``;
* :mod:`.base` — the tolerance band and what the checks share; :mod:`.flags` — what each flag
  means ("raised if / what to do"), printed in the report's ``checks.md``.

``run_checks(records, clean=None, models=None)`` returns a list of ``{name, status:
ok|flag|not_measured, dataset, source, target, attack, detail}`` (the keys that do not apply are
left out).
"""
from __future__ import annotations

from spkrobust.evaluation.checks.base import entry, normalise
from spkrobust.evaluation.checks.consistency import check_eps0, check_monotone
from spkrobust.evaluation.checks.flags import FLAGS
from spkrobust.evaluation.checks.models import check_stochastic, check_zero_grad
from spkrobust.evaluation.checks.strength import (check_blackbox, check_ensemble_drop, check_ensemble_not_weaker,
                                                  check_iterative, check_large_eps, check_noise)

__all__ = ["FLAGS", "run_checks"]


def run_checks(records: list[dict], clean: list[dict] | None = None,
               models: list[dict] | None = None) -> list[dict]:
    """All sanity checks on evaluation records (+ clean records, + model rows for class counts)."""
    recs = normalise(records)
    out = []
    if not recs:
        out.append(entry("records", "not_measured", "no evaluation records"))
    else:
        out += check_eps0(recs)
        out += check_monotone(recs)
        out += check_iterative(recs) or [entry("iterative_ge_single_step", "not_measured",
                                               "no white-box iterative attack records")]
        out += check_large_eps(recs, models)
        out += check_blackbox(recs)
        out += check_noise(recs)
        out += check_zero_grad(recs)
        out += check_ensemble_drop(recs)
        out += check_ensemble_not_weaker(recs)
    out += check_stochastic(clean)
    return out
