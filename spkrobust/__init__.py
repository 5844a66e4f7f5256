"""spkrobust: adversarial robustness of spiking vs. ordinary neural networks.

The public entry point is :func:`load_model`; everything heavy (torch, SpikingJelly) is imported
lazily so that the workflow can import :mod:`spkrobust.config.expand` cheaply.
"""
import os
import warnings

__version__ = "0.1.0"

# MKL's sgemm (torch's linear layers on x86) picks its kernels, and so its rounding, by the number of
# rows on AVX-512 CPUs: a row of a 15-row call and the same row of a 40-row call differed by 3.6e-7,
# so the logits of a time-chunked or micro-batched SNN pass were not those of one call (issue 20's
# cut invariance; tests/unit/nets/test_chunking.py). Conditional Numerical Reproducibility in strict
# mode on the AVX2 code path gives every row the same floats at any row count (measured: 0.0). Read
# by MKL at its first call, so set before any; a user's own MKL_CBWR is kept.
os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")

# SpikingJelly 0.0.0.0.14 decorates its kernels with torch.jit.script, which torch 2.14 deprecates:
# one FutureWarning per import that would otherwise precede every one-line error of every stage.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)


def load_model(path, device="cpu"):
    """Load any saved spkrobust ANN or SNN; see :func:`spkrobust.nets.models.load_model`."""
    from spkrobust.nets.models import load_model as _load

    return _load(path, device=device)


__all__ = ["load_model", "__version__"]
