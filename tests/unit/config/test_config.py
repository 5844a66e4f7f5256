"""spkrobust.config.expand on real configs: sweeps and parents (expand_models), the evaluation grid, eps
parsing and labels, and the per-stage slices (what a job depends on)."""
from __future__ import annotations

import copy

import pytest
import yaml

from helpers.wfutil import REPO
from spkrobust.config import expand as C
from spkrobust.errors import ConfigError
from spkrobust.config.options import AttackOptions, EvalOptions
from spkrobust.config.validate import validate_config



def tiny(**edit) -> dict:
    cfg = yaml.safe_load((REPO / "tests/presets/tiny.yaml").read_text())
    for k, v in edit.items():
        cfg[k] = v
    return validate_config(cfg)


def test_expand_models_sweeps_and_parent_members():
    cfg = yaml.safe_load((REPO / "tests/presets/tiny.yaml").read_text())
    cfg["models"]["snn_conv"]["sweep"] = {"T": [4, 8]}
    cfg["models"]["snn_bp"]["sweep"] = {"leak": [0.9, 1.0]}
    models = C.expand_models(validate_config(cfg))
    assert list(models) == ["ann", "snn_conv-T4", "snn_conv-T8", "snn_bp-T4-leak0.9", "snn_bp-T4-leak1.0",
                            "snn_bp-T8-leak0.9", "snn_bp-T8-leak1.0"]
    m = models["snn_bp-T8-leak0.9"]
    assert (m["base"], m["from"], m["leak"], m["T"]) == ("snn_bp", "snn_conv-T8", 0.9, cfg["models"]["snn_bp"]["T"])
    assert m["sweep_values"] == {"leak": 0.9} and "sweep" not in m
    assert models["snn_conv-T4"]["T"] == 4 and models["snn_conv-T4"]["from"] == "ann"


def test_grid_is_sources_by_replicas_by_attacks_by_eps_by_targets():
    cfg = tiny(eps=["0", "8/255"])
    cells = C.grid(cfg)
    # sources ann r1, ann r2, snn_bp r1; 2 attacks; 2 eps; targets ann r1, snn_bp r1
    assert len(cells) == 3 * 2 * 2 * 2
    assert {c["eps"] for c in cells} == {"0", "8_255"}
    by = {(c["source"], c["source_replica"], c["target"]): c["setting"] for c in cells}
    assert by[("ann", 1, "ann")] == "white-box" and by[("ann", 2, "ann")] == "black-box"
    assert by[("snn_bp", 1, "ann")] == "transfer"


def test_grid_pairing_cycle_pairs_each_target_replica_with_one_other_chain():
    cfg = yaml.safe_load((REPO / "tests/presets/tiny.yaml").read_text())
    cfg.update(replicas=3, eps=[0.1])
    cfg["models"]["snn_bp"]["replicas"] = 1
    cfg["grid"] = {"sources": ["ann"], "targets": ["ann", "snn_bp"], "target_replicas": [1, 2, 3], "pairing": "cycle"}
    cfg["attacks"] = {"fgsm": {"type": "fgsm"}}
    cells = C.grid(validate_config(cfg))
    got = {(c["source_replica"], c["target"], c["target_replica"], c["setting"]) for c in cells}
    targets = {c["target"] for c in cells}
    assert targets == {"ann", "snn_bp"}
    # replica r: white-box on itself, then every target's replica r - 1 (r1's sets on r3)
    want = {(1, "ann", 1, "white-box"), (2, "ann", 2, "white-box"), (3, "ann", 3, "white-box"),
            (2, "ann", 1, "black-box"), (3, "ann", 2, "black-box"), (1, "ann", 3, "black-box"),
            (2, "snn_bp", 1, "transfer")}  # snn_bp has one replica
    assert got == want
    cfg["grid"]["pairing"] = "all"
    assert len(C.grid(validate_config(cfg))) == 3 * 3 + 3  # ann r1-3 x targets ann r1-3 + snn_bp r1


def test_grid_pairing_is_validated():
    cfg = yaml.safe_load((REPO / "tests/presets/tiny.yaml").read_text())
    cfg.setdefault("grid", {})["pairing"] = "diagonal"
    with pytest.raises(ConfigError, match="grid.pairing"):
        validate_config(cfg)


def test_grid_selects_every_member_of_a_base_name():
    cfg = yaml.safe_load((REPO / "tests/presets/tiny.yaml").read_text())
    cfg["models"]["snn_bp"]["sweep"] = {"T": [2, 3]}
    cells = C.grid(validate_config(cfg))
    assert {c["target"] for c in cells} == {"ann", "snn_bp-T2", "snn_bp-T3"}


@pytest.mark.parametrize("value,expected", [(0, 0.0), ("8/255", 8 / 255), ("8_255", 8 / 255), (" 8 / 255 ", 8 / 255),
                                            ("0.1", 0.1), (1, 1.0)])
def test_parse_eps(value, expected):
    assert C.parse_eps(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["300/255", -0.1, "x", True, "8/0", None])
def test_parse_eps_refuses_with_the_key(value):
    with pytest.raises(ConfigError, match=r"^eps\[3\]: must be a number or 'a/b' fraction in \[0, 1\]"):
        C.parse_eps(value, "eps[3]")


def test_eps_label_and_alpha():
    assert [C.eps_label(e) for e in (0, 0.0, "8/255", " 8 / 255", 0.1)] == ["0", "0", "8_255", "8_255", "0.1"]
    assert C.parse_alpha("1/4*eps", 0.2) == pytest.approx(0.05) and C.parse_alpha("2/255", 0.5) == pytest.approx(2 / 255)
    with pytest.raises(ConfigError, match="^a: a relative step"):
        C.parse_alpha("0*eps", 0.1, "a")
    with pytest.raises(ConfigError, match=r"^a: must be .* in \(0, 1\]"):
        C.parse_alpha(0, 0.1, "a")


def test_editing_eval_repeats_changes_only_the_evaluation_slice():
    """clean/evaluate depend on eval.repeats and eval.batch_size; grad/craft do not (and vice versa)."""
    a = tiny()
    b = copy.deepcopy(a)
    b["eval"]["repeats"] += 1
    b["eval"]["batch_size"] += 1
    assert C.eval_slice(a) != C.eval_slice(b) and C.craft_slice(a) == C.craft_slice(b)
    c = copy.deepcopy(a)
    c["eval"]["eot_samples"] = 4
    assert C.eval_slice(a) == C.eval_slice(c) and C.craft_slice(a) != C.craft_slice(c)


def test_stage_options_from_the_slices_and_schema_defaults():
    cfg = tiny()
    ev = EvalOptions.from_cfg(C.eval_slice(cfg))
    assert (ev.repeats, ev.batch_size, ev.seed, ev.device) == (cfg["eval"]["repeats"], cfg["eval"]["batch_size"], 0, "cpu")
    at = AttackOptions.from_cfg(C.craft_slice(cfg))
    assert (at.eot_samples, at.attack_batch_size, at.grad_mode) == (1, 64, "bptt")  # schema defaults
    with pytest.raises(AttributeError):
        ev.repeats = 5  # frozen
    assert EvalOptions.from_cfg({}) == EvalOptions(seed=0, device="auto", repeats=3, batch_size=256)
    with pytest.raises(ConfigError, match="^eval.repeats: must be an integer >= 1, got 0$"):
        EvalOptions.from_cfg({"eval": {"repeats": 0}})
    with pytest.raises(ConfigError, match="^eval.grad_mode: 'x' is not allowed"):
        AttackOptions.from_cfg({"eval": {"grad_mode": "x"}})
