"""What decides a job's numbers beyond the config: package versions and the numerical environment.

Every training metrics file and clean record carries :func:`environment` (with the package
versions of :func:`package_versions`), and the report's header lists the distinct environments its
jobs ran in. On one machine the same command gives identical numbers; across machines bit-identity
also needs the same torch build, CPU instruction set (torch's dispatch capability, e.g. AVX2 vs
AVX512, picks other kernels and summation orders), oneDNN on or off, thread count (parallel
reductions split differently) and device (CPU vs a GPU model and its CUDA/cuDNN).
"""
from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("torch", "torchvision", "spikingjelly", "torchattacks", "snakemake", "numpy", "spkrobust")
# the keys of environment() that decide bit-identity across machines, in the report's order
IDENTITY_KEYS = ("torch", "cpu_capability", "onednn", "mkl_cbwr", "threads", "device", "device_name", "cuda", "cudnn")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict:
    """The numerical environment of this process on ``device`` (see the module doc)."""
    import torch

    dev = torch.device(device)
    on_gpu = dev.type == "cuda"
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
            "mkl_cbwr": os.environ.get("MKL_CBWR"),  # MKL's reproducibility mode (spkrobust/__init__.py)
            "threads": torch.get_num_threads(), "device": dev.type,
            "device_name": torch.cuda.get_device_name(dev) if on_gpu else _cpu_name(),
            "cuda": torch.version.cuda if on_gpu else None,
            "cudnn": torch.backends.cudnn.version() if on_gpu else None,
            "machine": platform.machine(), "python": platform.python_version()}


def describe(env: dict) -> str:
    """One line: the identity keys of an :func:`environment` record."""
    parts = [f"torch {env.get('torch')}", f"CPU {env.get('cpu_capability')}",
             f"oneDNN {'on' if env.get('onednn') else 'off'}", f"MKL CBWR {env.get('mkl_cbwr') or 'off'}",
             f"{env.get('threads')} thread(s)",
             f"{env.get('device')} ({env.get('device_name')})"]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}, cuDNN {env.get('cudnn')}")
    return ", ".join(parts)
