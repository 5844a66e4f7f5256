"""What each sanity flag means, in one table: the level it is computed at, when it is raised, and
what to do about it.  The report's ``checks.md`` prints it below the results
(:func:`spkrobust.report.tables.checks_md`); ``tests/unit/evaluation/test_checks.py`` asserts that every check
:func:`~spkrobust.evaluation.checks.run_checks` can return has a row here.

``flag`` means "look at this": the numbers are inconsistent with a working attack/evaluation beyond
the tolerance band of :mod:`spkrobust.evaluation.checks.base`; it is not proof of a bug.
"""
from __future__ import annotations

from typing import NamedTuple

from spkrobust.evaluation.checks.base import CHANCE_TOL, ENSEMBLE_DROP_MARGIN, LARGE_EPS, ZERO_GRAD_MAX


class Flag(NamedTuple):
    level: str  # what one result is about
    raised_if: str
    what_to_do: str


FLAGS: dict[str, Flag] = {
    "eps0_equals_clean": Flag(
        "target",
        "an eps = 0 record's accuracy differs from the target's clean accuracy beyond the band (one image of slack)",
        "the evaluation is not reproducible: check the seeds (common random numbers), that clean and evaluate see "
        "the same test images, and a backend that is not deterministic; add 0 to `eps` to measure it"),
    "monotone_in_eps": Flag(
        "attack × target",
        "adversarial accuracy rises with eps beyond the band (compared with the lowest accuracy at any smaller eps)",
        "the attack is failing at the larger eps: too few steps or a fixed step too small for the ball "
        "(use `alpha: 0.25*eps`), or masked gradients; raise `steps`, add random restarts or an `ensemble`"),
    "iterative_ge_single_step": Flag(
        "iterative attack × source, white-box",
        "PGD/EOT-PGD/APGD/SA-PGD leave a higher accuracy than FGSM/R-FGSM at the same eps",
        "the iterative attack is misconfigured (step size, steps) or the gradient is obfuscated; check `alpha`, "
        "use EOT on stochastic sources (`eot_samples`), try another gradient estimator (`grad:`)"),
    "large_eps_to_chance": Flag(
        "source, white-box",
        f"at the largest eps (≥ {LARGE_EPS} pixel units) the strongest iterative attack leaves more than chance "
        f"+ {CHANCE_TOL:.0%}",
        "such a large perturbation can erase any image: the attack does not follow the gradient (masking, too few "
        "steps); raise `steps`, try `grad: {mode: bptr}`/`act`, or an `ensemble`"),
    "blackbox_not_stronger_than_whitebox": Flag(
        "attack × target",
        "an adversarial set crafted on another replica hurts the target more than its own white-box set",
        "the white-box gradients are masked (the classic sign of gradient obfuscation): attack the target with "
        "other estimators (`grad:`), EOT, or an `ensemble`; report the black-box number as the upper bound"),
    "noise_weaker_than_attack": Flag(
        "attack × target, white-box",
        "random sign noise of the same eps hurts more than the attack",
        "the attack is broken for this model (a wrong sign, no gradient, a stuck step): check the attack's "
        "`zero_gradient_fraction` and parameters"),
    "zero_gradient_fraction": Flag(
        "source × attack",
        f"more than {ZERO_GRAD_MAX:.0%} of the inputs have an all-zero input gradient",
        "the source gives no gradient there (saturated or silent spiking layers, a surrogate too narrow): use "
        "another surrogate or estimator (`grad:`), or more timesteps"),
    "ensemble_drop": Flag(
        "source × eps, white-box",
        f"the adaptive `ensemble` lowers accuracy more than {ENSEMBLE_DROP_MARGIN:.0%} below the strongest other "
        "attack",
        "the single-estimator attacks overestimate the model's robustness: report the ensemble's number "
        "(the overestimate table says by how much)"),
    "ensemble_not_weaker": Flag(
        "ensemble × source × eps, white-box",
        "the adaptive `ensemble` leaves a higher accuracy than another attack of the same cell beyond the band "
        "(a per-sample worst case over members can only be stronger than each)",
        "add that attack's own set as the ensemble's first member (`{set: <attack>}`: with `stop_early` each "
        "member attacks what the earlier left), judge a Poisson model's fooling iterates on more draws "
        "(`eval.eot_samples`), or add restarts"),
    "stochastic_target": Flag(
        "target",
        "the two-pass repeat check disagrees with what the model declares (random but declared deterministic, "
        "declared random but identical passes), or a random target was evaluated with one repeat",
        "set `eval.repeats` ≥ 2 for stochastic (Poisson) targets; a deterministic model that varies points to a "
        "non-deterministic backend"),
    "records": Flag(
        "all",
        "(never a flag) there are no evaluation records",
        "run the evaluations first"),
}
