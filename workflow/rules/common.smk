# Helpers shared by all rule files: the expanded model set, the evaluation grid, per-stage config
# slices and the library files each stage runs.  Everything here is computed once at parse time.
# Every rule runs `python -m spkrobust <stage> ...` (not the `spkrobust` script), so that the
# library next to this Snakefile is the one that runs when executed from the repository root.
import json
import re

from pathlib import Path

from spkrobust.config import expand as spk  # pure Python; must never import torch
from spkrobust.tools.codedeps import stage_code  # pure Python too

# the config is valid here: the Snakefile validated it (expand_models and grid included)
MODELS = spk.expand_models(config)  # name -> resolved spec (sweep members included)
GRID = spk.grid(config)  # one dict per evaluation record
DATASETS = list(config["datasets"])
EPS = {spk.eps_label(e): e for e in config["eps"]}  # label (used in paths) -> config literal
REPLICAS = {m: spk.model_replicas(config, s) for m, s in MODELS.items()}  # model -> [1, 2, ...]

# A GPU is requested for training and crafting jobs unless the config pins the device to the CPU.
# Locally the `gpu` resource is ignored (unless --resources gpu=N is given); with the SLURM
# executor it becomes `--gpus=N`.  Override per rule with --set-resources RULE:gpu=N.
GPU = 0 if config.get("device") == "cpu" else 1

# Threads per torch job (exported by Snakemake as OMP_NUM_THREADS, which torch follows): 1.
# These networks and batches are small, so torch's intra-op threads scale poorly and the grid has
# many independent jobs: on a 2-core CPU, two 1-thread jobs side by side finished 17 % (ANN
# training), 20 % (SNN training) and 15 % (evaluation) sooner than the same jobs one after another
# with 2 threads each.  With few, large jobs and idle cores, raise it per rule, e.g.
# `--set-threads train_ann=8 train_snn=8`.  On a GPU, `--resources gpu=N` (not threads) limits
# how many GPU jobs run at once.
JOB_THREADS = 1


def _alt(names):
    """A regex matching exactly one of `names` (and nothing at all for an empty list)."""
    names = sorted(set(map(str, names)), key=len, reverse=True)
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def models_of(kind):
    return [n for n, s in MODELS.items() if s["kind"] == kind]


def _slice(stage, wc):
    if stage == "prepare":
        return spk.data_slice(config, wc["dataset"])
    if stage in ("train-ann", "convert", "train-snn"):
        return spk.model_slice(config, wc["model"], int(wc["replica"]))
    if stage in ("clean", "evaluate"):
        return spk.eval_slice(config)
    if stage in ("grad", "craft"):
        return spk.craft_slice(config)
    raise ValueError(f"no config slice for stage {stage!r}")


def to_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def cfg_json(stage, **wildcards):
    """The JSON config slice a stage depends on (passed as params, so only it triggers reruns)."""
    return to_json(_slice(stage, wildcards))


# --- library files per stage ---------------------------------------------------------------------
# Shell rules only track their command text, so the library files a stage runs are its inputs:
# `code=lib("attacks")` is every .py/.c file of spkrobust/attacks/ plus every module they import
# (spkrobust.tools.codedeps, read with ast), so editing spkrobust/attacks/registry.py reruns
# gradients, crafting and, since evaluation imports it, clean accuracy and evaluation, but no
# training.  spkrobust/config/ is not tracked: config changes reach the jobs through their params.
_LIBDIR = Path(workflow.basedir) / "spkrobust"


def lib(*subpackages):
    """The library files (relative paths) the stage of `subpackages` runs."""
    return [os.path.relpath(p) for p in stage_code(*subpackages, pkg=_LIBDIR)]


def targets():
    """What `snakemake all` builds: the aggregated tables and every report file."""
    return ["results/report/summary.csv", "results/report/models.csv", *REPORT_FILES]


def caption(name):
    """A caption file of workflow/report/ for `snakemake --report`."""
    return os.path.join(workflow.basedir, "workflow", "report", name)


def report_item(path, rst, category):
    """``path`` marked for ``snakemake --report`` with its caption ``workflow/report/<rst>``."""
    return report(path, caption=caption(rst), category=category)


# --- paths ----------------------------------------------------------------------------------------
def data_pt(dataset):
    return f"results/{dataset}/data.pt"


def model_pt(dataset, model, replica):
    return f"results/{dataset}/models/{canonical(model, replica)}/r{replica}/model.pt"


def metrics_json(dataset, model, replica):
    return f"results/{dataset}/models/{canonical(model, replica)}/r{replica}/metrics.json"


def clean_json(dataset, model, replica):
    return f"results/{dataset}/clean/{model}/r{replica}.json"


def grad_pt(dataset, source, replica):
    return f"results/{dataset}/grad/{source}/r{replica}.pt"


def adv_pt(dataset, source, replica, attack, eps):
    return f"results/{dataset}/adv/{source}/r{replica}/{attack}/{eps}.pt"


def eval_dir(dataset, source, sr, attack, eps):
    """The folder of one adversarial set's records (the output of its evaluate job)."""
    return f"results/{dataset}/eval/{source}/r{sr}/{attack}/{eps}"


def record_json(g):
    return f"{eval_dir(g['dataset'], g['source'], g['source_replica'], g['attack'], g['eps'])}/{g['target']}/r{g['target_replica']}.json"


# One evaluation job per adversarial set loads it once and evaluates each target the grid pairs it
# with (process start-up, mostly importing torch, costs seconds: per-record jobs would multiply it
# by the number of targets).  With grid.pairing: cycle the sets differ in their target replicas, so
# a job's records go to one folder per set and the job evaluates exactly that set's grid cells.
SET_CELLS = spk.cells_by_set(GRID)  # (dataset, source, source replica, attack, eps) -> its grid cells
EVAL_DIRS = [eval_dir(*key) for key in SET_CELLS]


def models_in_use():
    """(dataset, model, replica) of every grid source and target and their ancestors (`from:`, same
    replica): a sweep member's extra replicas that no job attacks or evaluates are not trained; an
    alias (ALIAS) stands for the model it shares outputs with."""
    out = set()
    for g in GRID:
        for m, r in ((g["source"], g["source_replica"]), (g["target"], g["target_replica"])):
            while m is not None and (g["dataset"], m, r) not in out:
                out.add((g["dataset"], m, r))
                m = MODELS[m].get("from")
    return sorted({(d, canonical(m, r), r) for d, m, r in out})


def set_cells(wc):
    """The grid cells of the set of this evaluate job, in grid order."""
    return SET_CELLS[(wc["dataset"], wc["source"], int(wc["sr"]), wc["attack"], wc["eps"])]


def eval_target_inputs(wc):
    cells = set_cells(wc)
    return {
        "targets": [model_pt(c["dataset"], c["target"], c["target_replica"]) for c in cells],
        "clean": [clean_json(c["dataset"], c["target"], c["target_replica"]) for c in cells],
    }


def eval_record_outs(wc):
    """The job's record files, inside its output folder."""
    return " ".join(record_json(c) for c in set_cells(wc))


def uses_grad(attack):
    return spk.uses_grad(config, attack)


# --- input functions --------------------------------------------------------------------------------
def parent_pt(wc):
    """The model a converted / spike-trained model starts from (same dataset and replica)."""
    return model_pt(wc.dataset, MODELS[wc.model]["from"], wc.replica)


def init_inputs(wc):
    return {"init": parent_pt(wc)} if MODELS[wc.model].get("from") else {}


def grad_input(wc):
    return {"grad": grad_pt(wc.dataset, wc.source, wc.replica)} if uses_grad(wc.attack) else {}


def member_set_inputs(wc):
    """The stored sets an ensemble's `{set: <attack>}` members reuse (same source replica and eps)."""
    return {
        f"set_{a}": adv_pt(wc.dataset, wc.source, wc.replica, a, wc.eps) for a in spk.member_sets(config, wc.attack)
    }


def member_set_args(wc, input):
    return " ".join(f"--set {a}={input[f'set_{a}']}" for a in spk.member_sets(config, wc.attack))


# --- identical models are made once ----------------------------------------------------------------
# (model, replica) -> (same_as, replica): two specs with the same training (spec with defaults and
# inherited values, seed, parent) share the outputs of the first (spkrobust.config.expand.aliases).
ALIAS = spk.aliases(config)
ALIAS_ROWS = [
    {
        "model": m,
        "replica": r,
        "same_as": c,
        "base": MODELS[m]["base"],
        "parent": MODELS[m].get("from"),
        **{k: MODELS[m][k] for k in ("neuron", "leak") if k in MODELS[m]},
    }
    for (m, r), (c, _) in ALIAS.items()
]


def canonical(model, replica):
    """The model whose outputs `model` replica `replica` shares (itself unless an alias)."""
    try:
        return ALIAS.get((model, int(replica)), (model,))[0]
    except ValueError:  # a wildcard pattern such as "{replica}"
        return model


# --- resources from the plan (spkrobust.tools.jobs; torch-free) -----------------------------------
# Each job's micro-batch, time chunk, mem_mb, gpu_mem_mb and runtime come from the memory model and
# a budget per job: the `mem_mb` / `gpu_mem_mb` a user gives (--set-resources RULE:mem_mb=N, or
# --default-resources mem_mb=N), else 0.8 x RAM / job slots (host) and 0.9 x the GPU's memory.
# A job requests its planned peak x 1.15, x 1.5 per retry (Snakemake's `attempt`).
from spkrobust.tools import jobs as JOBS  # noqa: E402


def _slots():
    """Jobs side by side here (cores / threads per job); 1 where no core count is set (a cluster)."""
    try:
        return max(1, int(workflow.cores or 1) // JOB_THREADS)
    except WorkflowError:  # no --cores: remote executors such as SLURM
        return 1


_SLOTS = _slots()


def _user_resource(rule, name):
    """An integer `name` the user set for `rule` (--set-resources) or every rule (--default-resources)."""
    rs = getattr(workflow, "resource_settings", None)
    over = (getattr(rs, "overwrite_resources", None) or {}).get(rule, {}) if rs else {}
    if name in over:
        return float(over[name])
    args = getattr(getattr(rs, "default_resources", None), "args", None) or []
    for a in args:
        k, _, v = str(a).partition("=")
        if k.strip() == name and v.strip().isdigit():
            return float(v)
    return None


_BUDGETS = {}


def budget_of(rule):
    if rule not in _BUDGETS:
        _BUDGETS[rule] = JOBS.budget(config, _SLOTS, _user_resource(rule, "mem_mb"), _user_resource(rule, "gpu_mem_mb"))
    return _BUDGETS[rule]


_PLANS = {}


def plan_of(rule, wc):
    """The job's plan; cached on what it depends on (not replica or eps), so a dry-run stays fast."""
    d = wc["dataset"]
    if rule == "prepare":
        key, args = (rule, d), {}
    elif rule in ("train_ann", "convert", "train_snn", "clean"):
        key, args = (rule, d, wc["model"]), {"model": wc["model"]}
    elif rule == "grad":
        key, args = (rule, d, wc["source"]), {"model": wc["source"]}
    elif rule == "craft":
        key = (rule, d, wc["source"], wc["attack"])
        args = {"model": wc["source"], "attack": wc["attack"], "uses_grad": uses_grad(wc["attack"])}
    else:  # evaluate: the set's grid targets
        names = tuple(c["target"] for c in set_cells(wc))
        key, args = (rule, d, names), {"model": wc["source"], "targets": list(names)}
    if key not in _PLANS:
        _PLANS[key] = JOBS.job(config, MODELS, budget_of(rule), rule, d, **args)
    return _PLANS[key]


def planned(rule, key):
    """A resource callable: `key` of the plan of this job of `rule` at this attempt."""

    def _get(wildcards, attempt):
        return plan_of(rule, wildcards).resources(budget_of(rule), attempt)[key]

    return _get
