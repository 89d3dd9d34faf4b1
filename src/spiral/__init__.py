"""spiral: building language models from first principles, on NumPy.

The package is the library that every chapter of the book builds and reuses: counting
models (stage 1), our own autograd engine (stage 2), fused hand-derived ops (stage 3),
the neural language models that train on them, and the tokenizers.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

# --- public names re-exported by stages (keep one line per stage) ---
from spiral.autograd import Tensor, no_grad  # noqa: E402, F401  (stage 2)
from spiral.models import MLPConfig, MLPLanguageModel  # noqa: E402, F401  (stage 4)
from spiral.models.gpt import GPT, GPTConfig  # noqa: E402, F401  (stage 8)
from spiral.ngram import NGramLM  # noqa: E402, F401  (stage 1)
from spiral.optim import SGD, Adam, AdamW  # noqa: E402, F401  (stage 5)
