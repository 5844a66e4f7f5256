"""The memory section of ``spkrobust bench``: peak-RSS growth of one SNN train step as T grows, one
subprocess per T (so that one T's peak does not hide the next's)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from spkrobust.tools.bench_models import _data, _model, train_step_fn

REPO = Path(__file__).resolve().parents[2]


def _rss_peak_bytes() -> int | None:
    """The process's peak RSS (VmHWM) in bytes, or None where /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _mem_child(spec: str) -> None:
    """Subprocess body: peak-RSS growth (bytes) of one SNN train step; prints one JSON line.

    On Linux the peak-RSS mark is reset just before the step (``/proc/self/clear_refs``) and the
    growth is VmHWM after the step minus RSS before it, so memory used only while importing or
    building the model does not hide the step's own peak; elsewhere ``ru_maxrss`` deltas are used."""
    import torch

    p = json.loads(spec)
    torch.set_num_threads(p["threads"])
    x, y = _data(p["batch"])
    model = _model("snn", T=p["T"], backend=p["backend"])
    step = train_step_fn(model, x, y)
    method = "ru_maxrss"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS mark to the current RSS
        base, method = _rss_bytes(), "VmHWM"
    except OSError:
        base = None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    if method == "VmHWM" and base is not None and _rss_peak_bytes() is not None:
        delta = _rss_peak_bytes() - base
    else:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        delta, method = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * scale, "ru_maxrss"
    print(json.dumps({"T": p["T"], "peak_delta_bytes": delta, "backend": model.backend, "method": method}))


def memory_growth(Ts, batch, threads, backend, log, baseline=False) -> list[dict]:
    rows = []
    for be in [backend] + (["torch"] if baseline and backend != "torch" else []):
        for T in Ts:
            if be == "torch" and be != backend and T > 16:
                continue  # stock SpikingJelly keeps a graph per step: ~10 GB at T=32, batch 64
            spec = json.dumps({"T": T, "batch": batch, "threads": threads, "backend": be})
            cmd = [sys.executable, "-W", "ignore", "-c", f"from spkrobust.tools.bench_memory import _mem_child; _mem_child({spec!r})"]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
            line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("{")), None)
            if r.returncode != 0 or line is None:
                err = (r.stderr.strip().splitlines() or ["?"])[-1]
                rows.append({"T": T, "backend": be, "peak_delta_mib": None, "error": err[:300]})
                log(f"  T={T:3d} {be}: failed ({err[:120]})")
                continue
            d = json.loads(line)
            mib = d["peak_delta_bytes"] / 2 ** 20
            rows.append({"T": T, "backend": d["backend"], "peak_delta_mib": mib, "batch": batch,
                         "method": d["method"]})
            log(f"  SNN train step T={T:3d} ({d['backend']}): peak RSS +{mib:8.1f} MiB")
    return rows
