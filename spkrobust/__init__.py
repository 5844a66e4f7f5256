"""spkrobust: adversarial robustness of spiking vs. ordinary neural networks.

The public entry point is :func:`load_model`; everything heavy (torch, SpikingJelly) is imported
lazily so that the workflow can import :mod:`spkrobust.config.expand` cheaply.
"""
import warnings

__version__ = "0.1.0"

# SpikingJelly 0.0.0.0.14 decorates its kernels with torch.jit.script, which torch 2.14 deprecates:
# one FutureWarning per import that would otherwise precede every one-line error of every stage.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)


def load_model(path, device="cpu"):
    """Load any saved spkrobust ANN or SNN; see :func:`spkrobust.nets.models.load_model`."""
    from spkrobust.nets.models import load_model as _load

    return _load(path, device=device)


__all__ = ["load_model", "__version__"]
