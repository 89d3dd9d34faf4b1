"""spiral.nn: neural-network building blocks.

- ``functional`` (stage 3): fused ops with hand-derived backward passes, named as in
  ``torch.nn.functional``, plus their composed-primitive references.
- ``kernels`` (stage 3): the raw NumPy forward/backward pairs behind them.

Later stages add modules and layers here.
"""

from __future__ import annotations

from spiral.nn import functional

__all__ = ["functional"]

# --- stage 4: modules and layers ---
from spiral.nn.activations import GELU, ReLU, SiLU, SwiGLU, Swish, Tanh  # noqa: E402
from spiral.nn.layers import Dropout, Embedding, Linear  # noqa: E402
from spiral.nn.module import Module, ModuleList, Parameter, Sequential, param_groups  # noqa: E402

__all__ += ["GELU", "ReLU", "SiLU", "SwiGLU", "Swish", "Tanh", "Dropout", "Embedding", "Linear",
            "Module", "ModuleList", "Parameter", "Sequential", "param_groups"]

# --- stage 6: initialization, normalization, residual blocks ---
from spiral.nn import init  # noqa: E402
from spiral.nn.norm import BatchNorm1d, LayerNorm, RMSNorm  # noqa: E402
from spiral.nn.residual import FeedForward, PostLNBlock, PreLNBlock, ResidualMLP  # noqa: E402

__all__ += ["init", "BatchNorm1d", "LayerNorm", "RMSNorm", "FeedForward", "PostLNBlock",
            "PreLNBlock", "ResidualMLP"]

# --- stage 7: attention ---
from spiral.nn.attention import SelfAttention  # noqa: E402

__all__ += ["SelfAttention"]

# --- stage 8: multi-head attention and the transformer block ---
from spiral.nn.transformer import Block, MultiHeadAttention  # noqa: E402

__all__ += ["Block", "MultiHeadAttention"]
