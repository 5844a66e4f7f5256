"""Malformed configs are refused before any job, with ONE line naming the key path (issue #6).

Every bad config is ``tests/presets/tiny.yaml`` with one key mutated.  All of them go through
:func:`spkrobust.config.validate.validate_config`; a representative set also goes through a REAL
``snakemake -n --configfile bad.yaml`` (the repository's Snakefile, a scratch working directory)
and must exit non-zero with one ``config error: <key>: ...`` line, no traceback, no job planned.
The shipped config and presets must validate.
"""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.wfutil import REPO
from spkrobust.errors import ConfigError, UserError
from spkrobust.config.validate import validate_config

TINY = REPO / "tests" / "presets" / "tiny.yaml"
SHIPPED = [REPO / "config.yaml", *sorted((REPO / "workflow" / "presets").glob("*.yaml")),
           *sorted((REPO / "tests" / "presets").glob("*.yaml"))]

_DELETE = object()


def tiny() -> dict:
    return yaml.safe_load(TINY.read_text())


def mutate(cfg: dict, path: str, value) -> dict:
    """Set (or delete, with ``_DELETE``) the key at a dotted path such as ``models.snn_bp.T``."""
    cfg = copy.deepcopy(cfg)
    *parents, last = path.split(".")
    node = cfg
    for k in parents:
        node = node.setdefault(k, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return cfg


def _cycle(cfg):
    cfg = copy.deepcopy(cfg)
    cfg["models"]["snn_ft"] = {"kind": "snn", "from": "snn_bp", "T": 2}
    cfg["models"]["snn_bp"]["from"] = "snn_ft"
    return cfg


# (id, mutation: (dotted key, new value) or a function, text the one-line message must start with)
BAD = [
    ("from-missing", ("models.snn_bp.from", "snn_ghost"), "models.snn_bp.from: 'snn_ghost' is not a model"),
    ("from-cycle", _cycle, "models.snn_bp.from: forms a cycle"),
    ("from-self", ("models.snn_bp.from", "snn_bp"), "models.snn_bp.from: a model cannot come from itself"),
    ("from-member-missing", ("models.snn_bp.from", "snn_conv-T99"),
     "models.snn_bp.from: 'snn_conv-T99' is not a member of snn_conv (members: snn_conv)"),
    ("convert-from-snn", ("models.snn_conv.from", "snn_bp"), "models.snn_conv.from: 'snn_bp' is an snn, but a convert must come from an ann"),
    ("convert-no-from", ("models.snn_conv.from", _DELETE), "models.snn_conv.from: missing"),
    ("ann-with-from", ("models.ann.from", "snn_bp"), "models.ann.from: an ann is trained from scratch"),
    ("grid-source-unknown", ("grid.sources", ["ann", "vgg"]), "grid.sources[1]: 'vgg' is not a model"),
    ("grid-target-unknown", ("grid.targets", ["resnet"]), "grid.targets[0]: 'resnet' is not a model"),
    ("eps-above-1", ("eps", ["8/255", 2]), "eps[1]: must be a number or 'a/b' fraction in [0, 1]"),
    ("eps-negative", ("eps", [-0.1]), "eps[0]: must be a number"),
    ("eps-not-number", ("eps", ["eight"]), "eps[0]: must be a number"),
    ("eps-bool", ("eps", [True]), "eps[0]: must be a number"),
    ("eps-div-zero", ("eps", ["8/0"]), "eps[0]: must be a number"),
    ("eps-duplicate", ("eps", ["8/255", "8 / 255"]), "eps[1]: '8 / 255' repeats eps[0]"),
    ("eps-not-list", ("eps", "8/255"), "eps: must be a non-empty list"),
    ("T-zero", ("models.snn_bp.T", 0), "models.snn_bp.T: must be an integer >= 1, got 0"),
    ("T-float", ("models.snn_bp.T", 2.5), "models.snn_bp.T: must be an integer >= 1, got 2.5"),
    ("T-bool", ("models.snn_conv.T", True), "models.snn_conv.T: must be an integer >= 1, got True"),
    ("T-sweep-zero", ("models.snn_bp.sweep", {"T": [2, 0]}), "models.snn_bp.sweep.T[1]: must be an integer >= 1"),
    ("leak-above-1", ("models.snn_bp.leak", 1.5), "models.snn_bp.leak: must be a number in (0, 1]"),
    ("leak-zero", ("models.snn_bp.leak", 0), "models.snn_bp.leak: must be a number in (0, 1]"),
    ("leak-string", ("models.snn_bp.leak", "high"), "models.snn_bp.leak: must be a number, got 'high'"),
    ("attack-type", ("attacks.pgd.type", "cw"), "attacks.pgd.type: 'cw' is not allowed; allowed: fgsm, rfgsm, pgd"),
    ("neuron", ("models.snn_bp.neuron", "izhikevich"), "models.snn_bp.neuron: 'izhikevich' is not allowed; allowed: if, lif"),
    ("encoder", ("models.snn_bp.encoder", "rate"), "models.snn_bp.encoder: 'rate' is not allowed; allowed: poisson"),
    ("dataset", ("datasets", ["mnist"]), "datasets[0]: 'mnist' is not allowed; allowed: fashion_mnist, cifar10, cifar100"),
    ("arch", ("models.ann.arch", "resnet18"), "models.ann.arch: 'resnet18' is not allowed; allowed: vgg5, vgg9, vgg11, vgg11_tv"),
    ("kind", ("models.snn_bp.kind", "rnn"), "models.snn_bp.kind: 'rnn' is not allowed; allowed: ann, convert, snn"),
    ("method", ("models.snn_conv.method", "robust"), "models.snn_conv.method: 'robust' is not allowed; allowed: threshold, max, 99.9%"),
    ("surrogate", ("models.snn_bp.surrogate", "relu"), "models.snn_bp.surrogate: 'relu' is not allowed; allowed: linear, sigmoid, atan"),
    ("backend", ("models.snn_bp.backend", "triton"), "models.snn_bp.backend: 'triton' is not allowed; allowed: auto, torch, cupy, fused"),
    ("device", ("device", "tpu"), "device: 'tpu' is not allowed; allowed: auto, cpu, cuda"),
    ("replicas-zero", ("replicas", 0), "replicas: must be an integer >= 1, got 0"),
    ("model-replicas-zero", ("models.snn_bp.replicas", 0), "models.snn_bp.replicas: must be an integer >= 1"),
    ("steps-negative", ("attacks.pgd.steps", -1), "attacks.pgd.steps: must be an integer >= 1, got -1"),
    ("steps-string", ("attacks.pgd.steps", "7"), "attacks.pgd.steps: must be an integer >= 1, got '7'"),
    ("alpha-above-1", ("attacks.pgd.alpha", 2), "attacks.pgd.alpha: must be a number or 'a/b' fraction in (0, 1]"),
    ("alpha-zero", ("attacks.pgd.alpha", 0), "attacks.pgd.alpha: must be a number or 'a/b' fraction in (0, 1]"),
    ("random-start", ("attacks.pgd.random_start", "yes"), "attacks.pgd.random_start: must be true or false"),
    ("eot-zero", ("attacks.fgsm.eot_samples", 0), "attacks.fgsm.eot_samples: must be an integer >= 1, got 0"),
    ("param-of-other-attack", ("attacks.fgsm.steps", 3), "attacks.fgsm.steps: not a parameter of fgsm; allowed: eot_samples"),
    ("apgd-loss", ("attacks.pgd", {"type": "apgd", "loss": "mse"}), "attacks.pgd.loss: 'mse' is not allowed; allowed: ce, dlr"),
    ("set-member-unknown", ("attacks.ens", {"type": "ensemble", "members": [{"set": "pgdd"}]}),
     "attacks.ens.members[0].set: 'pgdd' is not an attack (known: "),
    ("set-member-ensemble", ("attacks.ens", {"type": "ensemble", "members": [{"set": "ens"}]}),
     "attacks.ens.members[0].set: 'ens' is an ensemble; a member reuses the set of a single attack"),
    ("set-member-params", ("attacks.ens", {"type": "ensemble", "members": [{"set": "pgd", "steps": 3}]}),
     "attacks.ens.members[0].steps: unknown key; allowed: set"),
    ("data-test-size", ("data.test_size", 0), "data.test_size: must be an integer >= 1, got 0"),
    ("data-train-size", ("data.train_size", "all"), "data.train_size: must be an integer >= 1, got 'all'"),
    ("data-calib-size", ("data.calib_size", 64.5), "data.calib_size: must be an integer >= 1, got 64.5"),
    ("eval-repeats", ("eval.repeats", 0), "eval.repeats: must be an integer >= 1, got 0"),
    ("target-replicas", ("grid.target_replicas", [1, 3]), "grid.target_replicas[1]: replica 3 does not exist"),
    ("top-level-typo", ("epsilon", [0.1]), "epsilon: unknown top-level key"),
    ("model-key-typo", ("models.snn_bp.nueron", "if"), "models.snn_bp.nueron: unknown key for kind snn"),
    ("train-key", ("models.ann.train.optimizer", "adam"), "models.ann.train.optimizer: unknown key for an ann"),
    ("model-not-mapping", ("models.snn_bp", "snn"), "models.snn_bp: must be a mapping"),
    ("model-name-dash", ("models.snn-x", {"kind": "ann"}), "models.snn-x: model names must start with a letter"),
    ("required-missing", ("attacks", _DELETE), "attacks: missing (required)"),
    ("schema-eps-pattern", ("eps", ["1e-2"]), "eps[0]: "),  # accepted as a fraction, refused by the schema
]

# a representative set that also runs through real `snakemake -n`
SNAKEMAKE_IDS = ["from-missing", "from-cycle", "grid-source-unknown", "eps-above-1", "T-zero",
                 "attack-type", "target-replicas", "top-level-typo"]


def bad_config(mutation) -> dict:
    return mutation(tiny()) if callable(mutation) else mutate(tiny(), *mutation)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    validate_config(yaml.safe_load(path.read_text()))


def test_at_least_twenty_bad_inputs():
    assert len(BAD) >= 20 and len({b[0] for b in BAD}) == len(BAD)
    assert set(SNAKEMAKE_IDS) <= {b[0] for b in BAD}


@pytest.mark.parametrize("name,mutation,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_config_one_line_naming_the_key(name, mutation, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(bad_config(mutation))
    msg = str(info.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg and len(msg) < 300, msg


def _dry_run(tmp_path: Path, cfg: dict) -> tuple[subprocess.CompletedProcess, Path]:
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"),
                        "--directory", str(work), "--configfile", str(cfg_file)],
                       cwd=work, capture_output=True, text=True, timeout=300)
    return p, work


@pytest.mark.parametrize("name,mutation,expected", [b for b in BAD if b[0] in SNAKEMAKE_IDS],
                         ids=[b[0] for b in BAD if b[0] in SNAKEMAKE_IDS])
def test_snakemake_dry_run_refuses_bad_config(tmp_path, name, mutation, expected):
    p, work = _dry_run(tmp_path, bad_config(mutation))
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    # Snakemake's own note that it loaded profiles/default is the only other line allowed
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("Using workflow specific profile")]
    errors = [ln for ln in lines if ln.startswith("config error: ")]
    assert len(errors) == 1 and errors[0][len("config error: "):].startswith(expected), out
    assert lines == errors, f"more than the one error line:\n{out}"
    assert "Traceback" not in out and 'File "' not in out, out
    assert "Building DAG" not in out and not (work / "results").exists(), out


def test_snakemake_dry_run_accepts_tiny(tmp_path):
    p, work = _dry_run(tmp_path, tiny())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "config error" not in p.stdout + p.stderr
    assert not (work / "results").exists()  # a dry run creates nothing


# ---- spkrobust validate (CLI) --------------------------------------------------------------------

def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spkrobust", "validate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_accepts_shipped_and_merges_files(tmp_path):
    p = _cli("--config", str(TINY))
    assert p.returncode == 0 and p.stdout.startswith("ok: "), p.stderr
    over = tmp_path / "over.yaml"
    over.write_text("models:\n  snn_bp:\n    T: 0\n")  # merged into tiny: only T changes
    p = _cli("--config", str(TINY), "--config", str(over))
    assert p.returncode == 2
    assert p.stderr.strip() == "spkrobust validate: error: models.snn_bp.T: must be an integer >= 1, got 0"
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("text,expected", [
    ("models: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "must contain a YAML mapping"),
])
def test_cli_unreadable_config_file(tmp_path, text, expected):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    p = _cli("--config", str(f))
    assert p.returncode == 2 and expected in p.stderr and str(f) in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_cli_missing_file():
    p = _cli("--config", "no/such.yaml")
    assert p.returncode == 2 and "no/such.yaml: config file not found" in p.stderr


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError)


def test_validate_imports_no_torch():
    """The Snakefile imports the validator: it must stay torch-free so that dry-runs are fast."""
    code = ("import sys, yaml; from spkrobust.config.validate import validate_config; "
            f"validate_config(yaml.safe_load(open({str(TINY)!r}))); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
