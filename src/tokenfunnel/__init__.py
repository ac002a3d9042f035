"""tokenfunnel: progressive, training-free visual-token compression for vision-language models."""

from __future__ import annotations

from tokenfunnel.methods.luvc import LUVCConfig
from tokenfunnel.methods.registry import compress

__version__ = "0.1.0"
__all__ = ["compress", "LUVCConfig", "load_bundled", "__version__"]


def load_bundled(trained: bool = True, quiet: bool = False):
    """`model, processor = tokenfunnel.load_bundled()`: the bundled DINOv2-S + SmolLM2-135M LLaVA (fp32, CPU)."""
    from tokenfunnel.models.bundled import load_bundled as _load

    return _load(trained=trained, quiet=quiet)
