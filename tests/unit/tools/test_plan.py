"""spkrobust plan and the memory model (spkrobust.nets.memory, spkrobust.tools.jobs): layer-shape
arithmetic, sizes that fit the budget, identical models trained once, resources in a dry-run."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from helpers.wfutil import REPO
from spkrobust.config.expand import aliases, expand_models, load_configs
from spkrobust.config.expand import grid as spk_grid
from spkrobust.config.validate import validate_config
from spkrobust.nets import memory as mm
from spkrobust.tools import jobs, plan

CONFIGS = ["config.yaml", "workflow/presets/study2019.yaml", "workflow/presets/study2020.yaml"]


def _cfg(path):
    return validate_config(load_configs([REPO / path]))


def test_macs_from_layer_shapes():
    # the issue's figures per image and step: VGG5 68 M, VGG9 195 M, VGG11 710 M
    assert [round(mm.net(a, "cifar10").macs / 1e6) for a in ("vgg5", "vgg9", "vgg11")] == [68, 195, 710]
    n = mm.net("vgg5", "cifar10")  # 64x32x32 is the widest current; 5 spiking layers
    assert n.widest == 64 * 32 * 32 and n.acts == 65536 + 2 * 32768 + 2 * 1024
    # a small hand check: a 3->64 conv on 32x32 is 32*32*64*27 MACs
    assert n.prefix_macs[0] == 32 * 32 * 64 * 27


def test_sizing_cuts_time_when_one_image_does_not_fit():
    per, state = 1e6, 1e5
    s = mm.size_bptt(per, state, batch=64, T=100, avail=50e6)  # one image over T = 100 MB > 50 MB
    assert s.micro_batch == 1 and s.time_chunk < 100 and s.fits
    assert s.time_chunk * per + -(-100 // s.time_chunk) * state <= 50e6
    s = mm.size_bptt(per, state, batch=64, T=100, avail=1e9)  # 10 images fit
    assert (s.micro_batch, s.time_chunk) == (10, 100)
    s = mm.size_inference(per, batch=256, T=2000, avail=1e9)  # the batch stays, T is cut
    assert s.micro_batch == 256 and s.time_chunk == 3
    assert not mm.size_inference(per, batch=8, T=10, avail=0.5e6).fits


@pytest.mark.parametrize("path", CONFIGS)
@pytest.mark.parametrize("mem_mb", [3000, 16000])
def test_plan_fits_the_budget(path, mem_mb):
    cfg = _cfg(path)
    b = jobs.budget(cfg, 1, mem_mb)
    assert b.device == "cpu"  # no GPU here
    ps = plan.plan_jobs(cfg, b)
    models = expand_models(cfg)
    for p in ps:
        assert p.fits, p
        assert p.host_mb * jobs.HEADROOM <= mem_mb + 1e-6, p
        assert p.resources(b)["mem_mb"] <= max(mem_mb, 1000)
        assert p.resources(b, attempt=2)["mem_mb"] > p.resources(b)["mem_mb"]  # a retry gets more
        if p.rule in ("convert", "clean", "train_snn") and models[p.name]["kind"] != "ann":
            f = jobs.model_facts(cfg, models, p.name, "cpu")
            n = mm.net(f["arch"], cfg["datasets"][0])
            per = mm.bptt_bytes(n, f["backend"]) if p.rule == "train_snn" else mm.infer_bytes(n, f["backend"])
            assert p.micro_batch * p.time_chunk * per / mm.MIB <= mem_mb, p
            assert p.time_chunk <= f["T"]
    s = plan.summarize(ps, b)
    assert s["total"]["jobs"] == len(ps) and s["total"]["flop"] == pytest.approx(sum(p.flop for p in ps))


def test_plan_totals_match_the_issue_estimates():
    flop = {p: plan.summarize(plan.plan_jobs(_cfg(p), jobs.budget(_cfg(p), 1, 16000)),
                              jobs.budget(_cfg(p), 1, 16000))["total"]["flop"] for p in CONFIGS}
    # issue 20's estimates from the layer shapes: 2.2e17, 1.4e18, 3.8e18 FLOP
    for p, want in zip(CONFIGS, (2.2e17, 1.4e18, 3.8e18)):
        assert 0.8 * want < flop[p] < 1.25 * want, (p, flop[p])


def test_plan_cli_json():
    out = subprocess.run([sys.executable, "-m", "spkrobust", "plan", "--config", "config.yaml", "--mem-mb", "3000",
                          "--json"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    s = json.loads(out)
    rules = {r["rule"]: r for r in s["rules"]}
    assert rules["convert"]["jobs"] == 2 and rules["convert"]["time_chunk"][0] < 2000
    assert s["budget"]["host_mb"] == 3000 and s["total"]["fits"]


def test_identical_models_are_aliases():
    a = aliases(_cfg("workflow/presets/study2020.yaml"))
    assert a == {("snn5_leak-leak0.99", 1): ("snn5-T100", 1), ("snn5_neuron-neuronlif", 1): ("snn5-T100", 1),
                 ("snn5_neuron-neuronif", 1): ("snn5_leak-leak1.0", 1)}
    assert aliases(_cfg("config.yaml")) == {}


def _dry_run(preset, *extra):
    p = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", preset, *extra], cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout + p.stderr


def test_dry_run_trains_duplicates_once_and_shows_planned_resources():
    out = _dry_run("workflow/presets/study2020.yaml", "--default-resources", "mem_mb=16000")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert counts["train_snn"] == "22"  # 28 model replicas, 6 of them (3 per dataset) aliases
    assert "models/snn5_leak-leak0.99/" not in out and "models/snn5_neuron-neuronif/" not in out
    cfg = _cfg("workflow/presets/study2020.yaml")
    b = jobs.budget(cfg, 1, 16000)
    want = jobs.job(cfg, expand_models(cfg), b, "convert", "cifar10", "conv5").resources(b)
    block = re.search(r"rule convert:(?:(?!\nrule ).)*?wildcards: dataset=cifar10, model=conv5, replica=1\n"
                      r"\s+resources: ([^\n]*)", out, re.S)
    assert block, out[-3000:]
    for k in ("mem_mb", "runtime", "micro_batch", "time_chunk"):  # the last two: --micro-batch/--time-chunk
        assert f"{k}={want[k]}" in block.group(1), (k, want, block.group(1))
    assert "gpu=1" in block.group(1)
    clean = re.search(r"rule clean:.*?resources: ([^\n]*)", out, re.S).group(1)
    assert "gpu=1" in clean  # clean and evaluate request the GPU like the other stages


def test_evaluate_job_cuts_for_every_target():
    """An evaluate job runs all targets with one cut: the smallest micro-batch of their clean plans
    and the smallest time chunk that cuts a target's T (a chunk of its whole T, as an ANN's T = 1
    or a short SNN's, constrains nothing), so each stays in its plan and the plan's peak is real."""
    cfg = _cfg("config.yaml")
    models = expand_models(cfg)
    b = jobs.budget(cfg, 1, 3000)
    ds = cfg["datasets"][0]
    names = list(models)
    clean = {t: jobs.job(cfg, models, b, "clean", ds, t) for t in names}
    ev = jobs.job(cfg, models, b, "evaluate", ds, model=names[0], targets=names)
    T = {t: int(models[t].get("T") or 1) for t in names}
    cuts = [p.time_chunk for t, p in clean.items() if p.time_chunk < T[t]]
    assert cuts and ev.time_chunk == min(cuts) > 1
    # the cut keeps every target within its own plan
    for t, p in clean.items():
        assert min(ev.time_chunk, T[t]) <= p.time_chunk and ev.micro_batch <= p.micro_batch
    assert ev.micro_batch == min(p.micro_batch for p in clean.values())
    assert ev.resources(b)["time_chunk"] == ev.time_chunk


def test_attack_jobs_are_cut_as_the_bounded_attacks_run():
    """A crafting job's cut follows its estimators (spkrobust.nets.bounded.effective_cut): pdsg keeps
    the attack batch and cuts only T, hart / bptr / rga keep all T and cut only the batch; an
    ensemble's largest piece decides its memory."""
    per, state = 1e6, 1e5
    step = jobs._size_attack({"bptt"}, per, state, 64, 100, 50e6)
    assert (step.micro_batch, step.fits) == (1, True) and step.time_chunk < 100
    pd = jobs._size_attack({"pdsg"}, per, state, 64, 100, 1e9)  # the whole attack batch, T cut
    assert pd.fits and pd.micro_batch == 64 and pd.time_chunk < 100
    assert mm.bptt_piece(per, state, 64, pd.time_chunk, 100) <= 1e9 < mm.bptt_piece(per, state, 64, pd.time_chunk + 1, 100)
    tg = jobs._size_attack({"hart"}, per, state, 64, 100, 1e9)
    assert (tg.micro_batch, tg.time_chunk) == (10, 100)
    assert not jobs._size_attack({"bptr"}, per, state, 64, 100, 50e6).fits  # one image over T does not fit
    both = jobs._size_attack({"pdsg", "hart"}, per, state, 64, 100, 1e9)
    assert both.time_chunk < 100 and both.micro_batch == 10
    cfg = _cfg("config.yaml")
    ens = {"type": "ensemble", "members": [{"type": "pgd", "grad": "pdsg"},
                                           {"type": "fgsm", "grad": {"mode": "mix", "members": ["hart", "ste"]}}]}
    assert jobs.grad_modes(cfg, ens) == {"pdsg", "hart", "ste"}
    assert jobs.grad_modes({**cfg, "eval": {**cfg["eval"], "grad_mode": "rate"}}, None) == {"bptr"}


def test_a_reused_set_member_plans_no_crafting():
    """An ensemble member {set: pgd} reads the stored pgd set: the crafting job plans only the source's
    judging passes for it (judge_draws on a Poisson source), and its estimators are the other members'."""
    cfg = _cfg("config.yaml")
    later = {"type": "sapgd", "steps": 10, "grad": {"mode": "assg", "shape": "atan", "a": 0.425}}
    crafted = {"type": "ensemble", "members": [dict(cfg["attacks"]["pgd"]), later]}
    reused = {"type": "ensemble", "members": [{"set": "pgd"}, later]}
    g_c, f_c = jobs.attack_work(cfg, crafted, False, True)
    g_r, f_r = jobs.attack_work(cfg, reused, False, True)
    g_p, _ = jobs.attack_work(cfg, "pgd", False, True)
    assert g_p > 0 and g_r == g_c - g_p and f_r == f_c - 1  # no final pass of its own
    assert f_r == 3 * 8 + 1  # the clean images and two members' candidates, 8 draws each; sapgd's last pass
    fewer = {**reused, "judge_draws": 4}
    assert jobs.attack_work(cfg, fewer, False, True)[1] == 3 * 4 + 1
    assert jobs.attack_work(cfg, fewer, False, False)[1] == 3 + 1  # a deterministic source is judged once
    assert jobs.grad_modes(cfg, reused) == {"assg"}


def test_evaluate_jobs_are_planned_on_their_own_grid_targets():
    """With grid.pairing: cycle a set is evaluated on 7 of the 18 target replicas (the workflow's
    evaluate job), so the plan counts that work, not every target's."""
    def evaluate_flop(cfg):
        return sum(p.flop for p in plan.plan_jobs(cfg, jobs.budget(cfg, 1, 16000)) if p.rule == "evaluate")

    cycle = _cfg("workflow/presets/quick.yaml")
    every = validate_config(load_configs([REPO / "workflow/presets/quick.yaml"]))
    every["grid"]["pairing"] = "all"
    assert len(spk_grid(cycle)) < len(spk_grid(every))
    assert evaluate_flop(cycle) < 0.5 * evaluate_flop(every)
