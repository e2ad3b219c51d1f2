"""domino-sglang: Domino speculative decoding (parallel block drafter + GRU logit-correction
head) as an SGLang plugin, with a Transformers backend and a trainer.

This module imports no SGLang, Transformers or Triton.
"""

__version__ = "0.1.0"

from .config import ConfigError, DrafterConfig  # noqa: E402
from .core.drafter import DominoDrafter, HeadWeights  # noqa: E402

__all__ = ["ConfigError", "DominoDrafter", "DrafterConfig", "HeadWeights", "__version__"]
