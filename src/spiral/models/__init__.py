"""spiral.models: the language models the book trains, each scored by the shared evaluator.

- ``mlp.py`` (stage 4): the Bengio-style MLP language model.
"""

from __future__ import annotations

from spiral.models.mlp import MLPConfig, MLPLanguageModel

__all__ = ["MLPConfig", "MLPLanguageModel"]

# --- stage 7: the attention language model ---
from spiral.models.attention_lm import AttentionLanguageModel, AttentionLMConfig  # noqa: E402

__all__ += ["AttentionLanguageModel", "AttentionLMConfig"]

# --- stage 8: the GPT ---
from spiral.models.gpt import GPT, GPTConfig  # noqa: E402

__all__ += ["GPT", "GPTConfig"]
