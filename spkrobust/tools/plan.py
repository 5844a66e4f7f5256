"""``spkrobust plan --config FILE...``: every job the workflow would run for a config, sized by the
memory model (:mod:`spkrobust.tools.jobs`), before launching anything. Torch-free.

Per rule: jobs, the micro-batch and time chunk chosen, peak memory per job, FLOPs and the time on
this CPU (1 thread per job) and on a GPU (assumed rate); totals and the largest job. ``--json`` for
scripts. The job list is the Snakefile's (``workflow/rules/common.smk``): the same grid, the same
models in use (aliases of identical models trained once, :func:`spkrobust.config.expand.aliases`).
"""
from __future__ import annotations

import argparse
import json

from spkrobust.config import expand as spk
from spkrobust.tools import jobs as jb

RULES = ("prepare", "train_ann", "convert", "train_snn", "clean", "grad", "craft", "evaluate")
TRAIN_RULE = {"ann": "train_ann", "convert": "convert", "snn": "train_snn"}


def models_in_use(cfg: dict, models: dict, grid: list[dict]) -> list[tuple]:
    out = set()
    for g in grid:
        for m, r in ((g["source"], g["source_replica"]), (g["target"], g["target_replica"])):
            while m is not None and (g["dataset"], m, r) not in out:
                out.add((g["dataset"], m, r))
                m = models[m].get("from")
    return sorted(out)


def plan_jobs(cfg: dict, b: jb.Budget) -> list[jb.JobPlan]:
    """One :class:`~spkrobust.tools.jobs.JobPlan` per job of the DAG (``aggregate``/``report`` left out:
    they read small JSON files)."""
    models, grid = spk.expand_models(cfg), spk.grid(cfg)
    alias = spk.aliases(cfg)
    targets = list(dict.fromkeys((g["target"], g["target_replica"]) for g in grid))
    out = [jb.job(cfg, models, b, "prepare", d) for d in cfg["datasets"]]
    trained = {(d, *alias.get((m, r), (m, r))) for d, m, r in models_in_use(cfg, models, grid)}
    for d, m, r in sorted(trained):
        out.append(jb.job(cfg, models, b, TRAIN_RULE[models[m]["kind"]], d, m))
    for d in cfg["datasets"]:
        out += [jb.job(cfg, models, b, "clean", d, t) for t, _ in targets]
    cells = spk.cells_by_set(grid)
    sets = sorted(cells)
    for d, s, sr in sorted({k[:3] for k in sets if spk.uses_grad(cfg, k[3])}):
        out.append(jb.job(cfg, models, b, "grad", d, s))
    for d, s, sr, a, e in sets:
        out.append(jb.job(cfg, models, b, "craft", d, s, attack=a, uses_grad=spk.uses_grad(cfg, a)))
    for key in sets:  # each set on the targets the grid pairs it with
        out.append(jb.job(cfg, models, b, "evaluate", key[0], key[1], targets=[c["target"] for c in cells[key]]))
    return out


def summarize(plans: list[jb.JobPlan], b: jb.Budget) -> dict:
    rules = []
    for rule in RULES:
        ps = [p for p in plans if p.rule == rule]
        if not ps:
            continue
        big = max(ps, key=lambda p: p.host_mb + p.gpu_mb)
        rules.append({"rule": rule, "jobs": len(ps),
                      "micro_batch": sorted({p.micro_batch for p in ps}),
                      "time_chunk": sorted({p.time_chunk for p in ps}),
                      "peak_host_mb": max(p.host_mb for p in ps), "peak_gpu_mb": max(p.gpu_mb for p in ps),
                      "largest_job": big.name, "flop": sum(p.flop for p in ps),
                      "cpu_h": sum(p.cpu_s for p in ps) / 3600, "gpu_h": sum(p.gpu_s for p in ps) / 3600,
                      "fits": all(p.fits for p in ps)})
    big = max(plans, key=lambda p: p.flop)
    return {"budget": b.as_dict(), "cpu_gflops": jb.CPU_GFLOPS, "gpu_tflops": jb.GPU_TFLOPS, "rules": rules,
            "total": {"jobs": len(plans), "flop": sum(p.flop for p in plans),
                      "cpu_h": sum(p.cpu_s for p in plans) / 3600, "gpu_h": sum(p.gpu_s for p in plans) / 3600,
                      "fits": all(p.fits for p in plans)},
            "largest_job": {**big.as_dict()}}


def _span(v: list[int]) -> str:
    return str(v[0]) if len(v) == 1 else f"{v[0]}-{v[-1]}"


def render(s: dict) -> str:
    b = s["budget"]
    gpu = f", device {b['gpu_mb']:.0f} MB" if b["gpu_mb"] else ""
    lines = [f"budget per job: host {b['host_mb']:.0f} MB{gpu} (activations on {b['device']}; {b['source']})",
             f"rates: CPU {s['cpu_gflops']:.1f} GFLOP/s per job thread (measured), "
             f"GPU {s['gpu_tflops']:.0f} TFLOP/s (assumed)", "",
             "| rule | jobs | micro-batch | time chunk | peak host MB | peak GPU MB | FLOP | CPU h | GPU h | largest job |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in s["rules"]:
        flag = "" if r["fits"] else " (over budget)"
        lines.append(f"| {r['rule']} | {r['jobs']} | {_span(r['micro_batch'])} | {_span(r['time_chunk'])} | "
                     f"{r['peak_host_mb']:.0f} | {r['peak_gpu_mb']:.0f} | {r['flop']:.2e} | {r['cpu_h']:.3g} | "
                     f"{r['gpu_h']:.3g} | {r['largest_job']}{flag} |")
    t, big = s["total"], s["largest_job"]
    lines.append(f"| total | {t['jobs']} | | | | | {t['flop']:.2e} | {t['cpu_h']:.3g} | {t['gpu_h']:.3g} | |")
    lines += ["", f"largest job: {big['rule']} {big['name']}: {big['flop']:.2e} FLOP, "
              f"{big['cpu_s'] / 3600:.3g} CPU h, {big['gpu_s'] / 3600:.3g} GPU h, peak {big['host_mb']:.0f} MB host"
              + (f", {big['gpu_mb']:.0f} MB GPU" if big["gpu_mb"] else "")]
    return "\n".join(lines)


def _configure(p: argparse.ArgumentParser):
    p.add_argument("--config", action="append", required=True, metavar="FILE",
                   help="YAML config file; repeat to merge several (later files win, like Snakemake)")
    p.add_argument("--mem-mb", type=float, default=None, help="host budget per job (default: 0.8 x RAM / slots)")
    p.add_argument("--gpu-mem-mb", type=float, default=None,
                   help="device budget per job (plans for a GPU; default with a GPU here: 0.9 x its memory)")
    p.add_argument("--slots", type=int, default=1, help="jobs side by side on this machine (host default budget)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _run(args):
    """Print the plan of every job: micro-batch, time chunk, memory, FLOPs, time."""
    from spkrobust.config.validate import validate_config

    cfg = spk.load_configs(args.config)
    validate_config(cfg)
    b = jb.budget(cfg, args.slots, args.mem_mb, args.gpu_mem_mb)
    s = summarize(plan_jobs(cfg, b), b)
    print(json.dumps(s, indent=1) if args.json else render(s))
    return 0


CLI = {"plan": (_configure, _run)}
