"""spkrobust: adversarial robustness of spiking vs. ordinary neural networks.

The public entry point is :func:`load_model`; everything heavy (torch, SpikingJelly) is imported
lazily so that the workflow can import :mod:`spkrobust.config` cheaply.
"""
__version__ = "0.1.0"


def load_model(path, device="cpu"):
    """Load any saved spkrobust ANN or SNN; see :func:`spkrobust.models.load_model`."""
    from spkrobust.models import load_model as _load

    return _load(path, device=device)


__all__ = ["load_model", "__version__"]
