"""spiral.models: the language models the book trains, each scored by the shared evaluator.

- ``mlp.py`` (stage 4): the Bengio-style MLP language model.
"""

from __future__ import annotations

from spiral.models.mlp import MLPConfig, MLPLanguageModel

__all__ = ["MLPConfig", "MLPLanguageModel"]
