"""The science a finished end-to-end run of a preset can show, asserted (issue #24).

:func:`check_science` is called by the tests that finish the tiny presets (the workflow run, the
kill-and-resume and SLURM runs, and the CIFAR layout run with ``tests/presets/tiny_cifar10.yaml``).
On the run's own files it asserts, with margins chosen to hold across seeds (measured values in
the presets' headers):

* every model replica's clean accuracy (its ``metrics.json``, and the clean record of every target)
  is at least ``chance + ABOVE_CHANCE``;
* no spiking layer is silent: the converted SNNs' threshold balancing flagged none, and every
  spiking layer of a converted SNN (its metrics) and of every SNN target (its clean record) fires
  at least ``MIN_RATE`` spikes per neuron per step on the clean test images;
* every adversarial set the run crafted lies in its eps-ball and in [0, 1], and a gradient attack
  moved the input (max |x_adv - x| > eps / 2);
* every white-box gradient attack at eps = 0 leaves every target's accuracy equal to its clean
  accuracy (exactly: both use the same per-repeat seeds);
* white-box PGD lowers every target's accuracy by at least ``MIN_DROP`` at every eps > 0 of the
  run, and by at least ``MIN_DROP`` more than random-sign noise of the same eps does (the ``noise``
  attack: a broken gradient, an attack that returns its input or a silent network all fail here).

The tiny preset attacks at one eps (each extra craft/evaluate job costs a process start on two
cores), so the eps = 0 and noise sets are made here by the stages' own CLIs (``spkrobust craft`` /
``spkrobust evaluate``, in-process, with the run's config slices) on the run's models, written
outside its ``results/``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from spkrobust.config.vocab import GRADIENT_TYPES

ABOVE_CHANCE = 0.20  # clean accuracy at least this far above chance (1 / classes)
MIN_RATE = 1e-3      # spikes per neuron per step: below it a spiking layer counts as silent
MIN_DROP = 0.10      # white-box PGD: accuracy drop at least this, and this much more than noise's


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def run_config(wd: Path, preset: str, **overrides) -> dict:
    """The run's config: the preset with ``--config`` overrides (key=value), validated (defaults filled)."""
    from spkrobust.config.validate import validate_config

    cfg = yaml.safe_load((wd / preset).read_text())
    cfg.update(overrides)
    return validate_config(cfg)


def _test_inputs(wd: Path, dataset: str):
    from spkrobust.data.datasets import load_prepared, to_float

    prep = load_prepared(wd / f"results/{dataset}/data.pt")
    return prep, to_float(prep.test_x)


def check_clean_and_firing(wd: Path, cfg: dict, above_chance: float = ABOVE_CHANCE) -> dict:
    """Clean accuracy of every model replica and firing of every spiking layer; returns
    ``{(dataset, model, replica): clean accuracy}`` from the metrics."""
    from spkrobust.config.expand import expand_models, model_replicas

    accs = {}
    for ds in cfg["datasets"]:
        for name, spec in expand_models(cfg).items():
            for rep in model_replicas(cfg, spec):
                m = _json(wd / f"results/{ds}/models/{name}/r{rep}/metrics.json")
                chance = 1.0 / m["meta"]["num_classes"]
                who = f"{ds} {name} r{rep}"
                assert m["clean_acc"] >= chance + above_chance, \
                    f"{who}: clean accuracy {m['clean_acc']:.3f} is not {above_chance:.2f} above chance {chance:.3f}"
                if spec["kind"] == "convert":
                    assert not m["silent_layers"], f"{who}: threshold balancing found silent layers {m['silent_layers']}"
                    _check_rates(who + " (conversion metrics)", m["firing_rates"], len(m["meta"]["thresholds"]))
                accs[(ds, name, rep)] = m["clean_acc"]
        for path in sorted((wd / f"results/{ds}/clean").rglob("r*.json")):
            c = _json(path)
            who = f"{ds} {c['model']} r{c['replica']} (clean record)"
            chance = 1.0 / c["num_classes"]
            assert c["clean_acc"] >= chance + above_chance, \
                f"{who}: clean accuracy {c['clean_acc']:.3f} is not {above_chance:.2f} above chance {chance:.3f}"
            if c["kind"] == "snn":
                n_layers = len(_json(wd / f"results/{ds}/models/{c['model']}/r{c['replica']}/metrics.json")
                               ["meta"]["thresholds"])
                _check_rates(who, c["firing_rates"], n_layers)
            else:
                assert c["firing_rates"] == [], f"{who}: an ANN has no spiking layers"
    return accs


def _check_rates(who: str, rates: list[float], n_layers: int) -> None:
    assert len(rates) == n_layers, f"{who}: {len(rates)} firing rates for {n_layers} spiking layers"
    silent = [k for k, r in enumerate(rates) if r < MIN_RATE]
    assert not silent, f"{who}: spiking layer(s) {silent} silent (firing rates {[round(r, 4) for r in rates]})"


def check_adversarial_sets(wd: Path, cfg: dict) -> int:
    """Every crafted set is in its eps-ball and in [0, 1]; gradient attacks moved the input."""
    from spkrobust.attacks.files import load_adv

    n = 0
    for ds in cfg["datasets"]:
        prep, x = _test_inputs(wd, ds)
        test_idx = getattr(prep, "test_idx", None)  # the split's dataset indices (absent: positions)
        lookup = {int(v): i for i, v in enumerate(test_idx.tolist() if test_idx is not None else range(len(x)))}
        for path in sorted((wd / f"results/{ds}/adv").rglob("*.pt")):
            adv = load_adv(path)
            eps, atype = float(adv["meta"]["eps"]), adv["meta"].get("attack_type")
            x0 = x[torch.tensor([lookup[int(i)] for i in adv["indices"].tolist()])]
            xa = adv["x_adv"].float()
            dist = float((xa - x0).abs().max())
            where = path.relative_to(wd)
            assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0, f"{where}: leaves [0, 1]"
            assert dist <= eps + 1e-6, f"{where}: max |x_adv - x| = {dist:.6f} > eps {eps:.6f}"
            if atype in GRADIENT_TYPES and eps > 0:
                assert dist > eps / 2, f"{where}: {atype} left the input (nearly) unchanged: max change {dist:.6f}"
            n += 1
    assert n, "the run crafted no adversarial sets"
    return n


def _stage(argv: list[str]) -> None:
    from spkrobust.cli import main as cli

    assert cli(argv) == 0, f"spkrobust {' '.join(argv[:1])} failed"


def _extra_record(wd: Path, cfg: dict, scratch: Path, ds: str, model: str, rep: int, attack: dict,
                  eps: str) -> dict:
    """``attack`` at ``eps`` from ``model`` r``rep`` on itself, by the stage CLIs with the run's slices."""
    from spkrobust.config.expand import craft_slice, eps_label, eval_slice

    out = scratch / f"{ds}-{model}-r{rep}-{attack['type']}-{eps_label(eps)}"
    out.mkdir(parents=True, exist_ok=True)
    data = str(wd / f"results/{ds}/data.pt")
    model_pt = str(wd / f"results/{ds}/models/{model}/r{rep}/model.pt")
    _stage(["craft", "--data", data, "--model", model_pt, "--attack-cfg", json.dumps(attack), "--eps", str(eps),
            "--cfg", json.dumps(craft_slice(cfg)), "--out", str(out / "adv.pt")])
    _stage(["evaluate", "--data", data, "--adv", str(out / "adv.pt"), "--target", model_pt,
            "--clean", str(wd / f"results/{ds}/clean/{model}/r{rep}.json"), "--cfg", json.dumps(eval_slice(cfg)),
            "--out", str(out / "record.json")])
    return _json(out / "record.json")


def check_eps0(wd: Path, cfg: dict, scratch: Path) -> list[str]:
    """Every white-box gradient attack of the run at eps = 0 leaves each target at its clean accuracy."""
    from spkrobust.config.expand import grid

    lines, seen = [], set()
    for cell in grid(cfg):
        attack = cfg["attacks"][cell["attack"]]
        key = (cell["dataset"], cell["target"], cell["target_replica"], cell["attack"])
        if cell["setting"] != "white-box" or attack["type"] not in GRADIENT_TYPES or key in seen:
            continue
        seen.add(key)
        ds, t, tr = key[:3]
        zero = _extra_record(wd, cfg, scratch, ds, t, tr, attack, 0)
        clean = _json(wd / f"results/{ds}/clean/{t}/r{tr}.json")["clean_acc"]
        assert zero["adv_acc"] == zero["clean_acc"] == clean, \
            f"{ds} {t} r{tr}: {cell['attack']} at eps 0 gives {zero['adv_acc']:.4f}, clean {clean:.4f}"
        lines.append(f"{ds} {t} r{tr}: {cell['attack']} at eps 0 {zero['adv_acc']:.4f} = clean {clean:.4f}")
    assert lines, "the run has no white-box gradient attack"
    return lines


def _record(wd: Path, cell: dict) -> dict:
    from spkrobust.config.expand import eps_label

    return _json(wd / "results/{dataset}/eval/{source}/r{source_replica}/{attack}/{e}/{target}/r{target_replica}.json"
                 .format(e=eps_label(cell["eps"]), **cell))


def check_attack_margins(wd: Path, cfg: dict, scratch: Path, min_drop: float = MIN_DROP) -> list[str]:
    """White-box PGD lowers each target's accuracy by ``min_drop`` and by ``min_drop`` more than
    random-sign noise of the same eps (crafted here from the same model, same slices)."""
    from spkrobust.config.expand import grid, parse_eps

    lines = []
    for cell in grid(cfg):
        attack = cfg["attacks"][cell["attack"]]
        if cell["setting"] != "white-box" or attack["type"] != "pgd" or parse_eps(cell["eps"]) <= 0:
            continue
        ds, t, tr = cell["dataset"], cell["target"], cell["target_replica"]
        rec = _record(wd, cell)
        noise = _extra_record(wd, cfg, scratch, ds, t, tr, {"type": "noise"}, cell["eps"])
        assert noise["clean_acc"] == rec["clean_acc"], (noise["clean_acc"], rec["clean_acc"])
        drop, noise_drop = rec["clean_acc"] - rec["adv_acc"], noise["clean_acc"] - noise["adv_acc"]
        who = f"{ds} {t} r{tr}: white-box {cell['attack']} at eps {cell['eps']}"
        assert drop >= min_drop, f"{who} lowers accuracy by {drop:.3f} (< {min_drop}): the attack is not working"
        assert drop >= noise_drop + min_drop, \
            f"{who} lowers accuracy by {drop:.3f}, random-sign noise by {noise_drop:.3f}: not {min_drop} more"
        lines.append(f"{who}: clean {rec['clean_acc']:.4f}, PGD {rec['adv_acc']:.4f} (drop {drop:+.4f}), "
                     f"noise {noise['adv_acc']:.4f} (drop {noise_drop:+.4f})")
    assert lines, "the run has no white-box PGD at eps > 0"
    return lines


def check_science(wd: Path, preset: str, scratch: Path, above_chance: float = ABOVE_CHANCE,
                  min_drop: float = MIN_DROP, **overrides) -> dict:
    """All of the above on the finished run in ``wd`` of ``preset`` (with ``--config`` ``overrides``);
    ``scratch``: a directory for the eps = 0 sets. Returns what was measured (printed)."""
    cfg = run_config(wd, preset, **overrides)
    accs = check_clean_and_firing(wd, cfg, above_chance)
    n_sets = check_adversarial_sets(wd, cfg)
    lines = check_eps0(wd, cfg, Path(scratch))
    margins = check_attack_margins(wd, cfg, Path(scratch), min_drop)
    summary = {"clean": {f"{ds} {m} r{r}": round(a, 4) for (ds, m, r), a in accs.items()},
               "adversarial_sets": n_sets, "attacks": lines, "margins": margins}
    print("science:", json.dumps(summary, indent=1))
    return summary
