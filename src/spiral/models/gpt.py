"""GPT: a decoder-only transformer language model (token + position embeddings, blocks, head).

    x⁰_t = E[tok_t] + P[t]                                (B, T, d_model)
    xˡ   = Block_l(xˡ⁻¹),  l = 1..n_layers                  pre-LN blocks (stage 8)
    logits = LN_f(xᴸ) Eᵀ                                   (B, T, vocab_size), tied head

With ``tie_weights`` the output layer reuses the token embedding matrix E (Press & Wolf,
2017): only that ONE (vocab_size, d_model) matrix is shared, so tying saves
vocab_size·d_model parameters, not half the model. The parameter count in closed form
(b = 1 with biases, else 0; e = FFN expansion; L = n_layers, C = d_model):

    N = V·C + T·C + L·[(4 + 2e)·C² + (2 + 2b)·C + b·(3C + C + eC + C)] + (1 + b)·C
        + (0 if tied else V·C)

Stage 14 makes the same class the Llama family's model (Touvron et al., 2023) by switches:
``norm_type="rmsnorm"`` (ν = C per norm, no bias), ``ffn_type="swiglu"`` (3·C·h per layer,
h from :func:`spiral.nn.ffn.swiglu_hidden`), ``positional="rope_halves"`` (no T·C table;
the split-halves pairing of Llama / Hugging Face code, ``rope_theta`` its base) and
``n_kv_heads`` = Hkv (the K and V projections shrink to Hkv·hd rows each, so attention has
2C² + 2·C·Hkv·hd weights). :func:`count_parameters` covers every combination; the presets
``gpt2-baby`` (= ``baby``, stage 8's model) and ``llama-baby`` (its Llama-style twin, its
SwiGLU width set so the two counts differ by less than 3·C·L/2) are the chapter's pair.

Initialization follows GPT-2 / nanoGPT: every weight ~ N(0, 0.02), biases 0, and the two
projections that write into the residual stream (attention output, FFN second layer) ~
N(0, 0.02/√(2·n_layers)), so the stream's variance does not grow with depth.
Papers: Radford et al. (2018, 2019); Vaswani et al. (2017). Chapter: stage 8.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from spiral.autograd import Tensor, no_grad
from spiral.models.base import CausalLM
from spiral.nn import functional as F
from spiral.nn import init
from spiral.nn.attention_kernels import KERNELS, attention_function
from spiral.nn.checkpoint import CHECKPOINT_MODES, run_segments, segment_sizes
from spiral.nn.ffn import FFN_TYPES, swiglu_hidden
from spiral.nn.layers import Dropout, Embedding, Linear
from spiral.nn.lean import SAVED_POLICIES, lean_embed
from spiral.nn.module import Module, ModuleList, Parameter
from spiral.nn.positional import ENCODINGS, LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from spiral.nn.transformer import NORM_TYPES, Block, make_block_norm

__all__ = ["GPTConfig", "GPT", "PRESETS", "count_parameters"]

# fields added by stage 14 (written by to_dict only when not at their defaults)
STAGE14_FIELDS = ("norm_type", "norm_eps", "ffn_type", "gelu_approximate", "ffn_hidden",
                  "ffn_multiple_of", "n_kv_heads", "rope_theta", "rope_scaling")

# fields added by stage 12 (memory optimization; also omitted by to_dict at their defaults)
STAGE12_FIELDS = ("checkpoint", "attention", "saved")

# the projections that write into the residual stream (GELU MLP: proj; SwiGLU: w2 = down)
RESIDUAL_PROJECTIONS = ("out_proj.weight", "ffn.proj.weight", "ffn.w2.weight")


@dataclass(frozen=True)
class GPTConfig:
    """Sizes and switches of the GPT; ``GPTConfig.preset(name, vocab_size)`` gives a recipe."""

    vocab_size: int
    context_length: int = 64
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    expansion: float = 4.0
    dropout: float = 0.0
    bias: bool = False
    tie_weights: bool = True
    placement: str = "pre"      # pre-LN (GPT-2) or post-LN (Vaswani et al.)
    residual: bool = True       # ablation switches (stage 8 experiments)
    norm: bool = True
    ffn: bool = True
    init_std: float = 0.02
    positional: str = "learned"  # stage 9: learned|sinusoidal|rope|rope_halves|alibi|none
    # stage 14: the Llama family's switches (defaults = GPT-2 as in stage 8)
    norm_type: str = "layernorm"    # layernorm | rmsnorm
    norm_eps: float = 1e-5
    ffn_type: str = "gelu"          # gelu | swiglu
    gelu_approximate: str = "none"  # none (exact erf) | tanh (GPT-2's checkpoints)
    ffn_hidden: int | None = None   # explicit FFN width; None: e·C (gelu), swiglu_hidden (swiglu)
    ffn_multiple_of: int = 8        # SwiGLU width rounded to the nearest multiple of this
    n_kv_heads: int | None = None   # None = n_heads (MHA); 1 = MQA; in between = GQA
    rope_theta: float = 10000.0     # RoPE base θ
    rope_scaling: dict[str, Any] | None = None  # Llama 3's {"rope_type": "llama3", ...} or None
    # stage 12: activation checkpointing and the attention kernel (defaults = stage 8's model)
    checkpoint: str = "none"        # none | blocks | sqrt | selective
    attention: str = "naive"        # naive | tiled | online | flash
    saved: str = "all"              # all | lean: what backward keeps (spiral.nn.lean)

    def __post_init__(self) -> None:
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {self.norm_type!r}")
        if self.ffn_type not in FFN_TYPES:
            raise ValueError(f"ffn_type must be one of {FFN_TYPES}, got {self.ffn_type!r}")
        if self.checkpoint not in CHECKPOINT_MODES:
            raise ValueError(f"checkpoint must be one of {CHECKPOINT_MODES}, "
                             f"got {self.checkpoint!r}")
        if self.attention not in KERNELS:
            raise ValueError(f"attention must be one of {KERNELS}, got {self.attention!r}")
        if self.saved not in SAVED_POLICIES:
            raise ValueError(f"saved must be one of {SAVED_POLICIES}, got {self.saved!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by "
                             f"n_heads={self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of "
                             f"n_kv_heads={self.n_kv_heads}")

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> GPTConfig:
        """A named recipe (see ``PRESETS``) for a vocabulary, with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return replace(cls(vocab_size=vocab_size, **PRESETS[name]), **overrides)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads (n_kv_heads, or n_heads when unset)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    def kv_cache_bytes_per_token(self, itemsize: int = 4) -> int:
        """What a KV cache stores per token: K and V, Hkv heads of head_dim, every layer:
        2·L·Hkv·hd·itemsize bytes (H/Hkv times less than multi-head attention's)."""
        return 2 * self.n_layers * self.kv_heads * self.head_dim * itemsize

    @property
    def hidden(self) -> int:
        """The FFN's hidden width."""
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        if self.ffn_type == "swiglu":
            return swiglu_hidden(self.d_model, self.expansion, self.ffn_multiple_of)
        return max(1, int(round(self.expansion * self.d_model)))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; stage 14's fields only where they differ from their defaults,
        so a GPT-2 config records (and resumes) exactly as it did before they existed."""
        d = asdict(self)
        for f in fields(self):
            if f.name in STAGE14_FIELDS + STAGE12_FIELDS and d[f.name] == f.default:
                del d[f.name]
        return d


def _matched_swiglu_hidden(context_length: int, n_layers: int, d_model: int,
                           expansion: float = 4.0) -> int:
    """The SwiGLU width whose 3·C·h·L weights best replace the GELU MLPs' 2·e·C²·L AND the
    learned position table's T·C that RoPE drops: h = round((2·e·C²·L + T·C) / (3·C·L))."""
    C, L, T = d_model, n_layers, context_length
    return int(round((2 * expansion * C * C * L + T * C) / (3 * C * L)))


_BABY: dict[str, Any] = dict(context_length=64, n_layers=4, n_heads=4, d_model=128, dropout=0.0)
_LLAMA: dict[str, Any] = dict(norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves",
                              bias=False)

# nanoGPT's CPU example ("baby" = "gpt2-baby") and its shakespeare-char config ("small");
# stage 14: their Llama-style twins at (nearly) equal parameter counts
PRESETS: dict[str, dict[str, Any]] = {
    "baby": dict(_BABY),
    "small": dict(context_length=256, n_layers=6, n_heads=6, d_model=384, dropout=0.2),
    "gpt2-baby": dict(_BABY),
    "llama-baby": dict(_BABY, **_LLAMA, ffn_hidden=_matched_swiglu_hidden(64, 4, 128)),
    "llama-small": dict(context_length=256, n_layers=6, n_heads=6, d_model=384, dropout=0.2,
                        **_LLAMA, ffn_hidden=_matched_swiglu_hidden(256, 6, 384)),
}


def count_parameters(c: GPTConfig) -> int:
    """The closed-form parameter count of :class:`GPT` (see the module docstring)."""
    C, V, T, L, b = c.d_model, c.vocab_size, c.context_length, c.n_layers, int(c.bias)
    hidden = c.hidden
    norm = ((1 + b) * C if c.norm_type == "layernorm" else C) if c.norm else 0
    qkv = (c.n_heads + 2 * c.kv_heads) * c.head_dim  # = 3C for MHA
    attn = C * qkv + C * C + b * (qkv + C)
    mlp = 3 * C * hidden if c.ffn_type == "swiglu" else 2 * C * hidden + b * (hidden + C)
    ffn = mlp + norm if c.ffn else 0
    block = norm + attn + ffn
    final = norm if c.placement == "pre" else 0
    T = T if c.positional == "learned" else 0  # stage 9: only learned positions are trained
    return V * C + T * C + L * block + final + (0 if c.tie_weights else V * C)


class GPT(CausalLM):
    """idx (B, T) token ids, T <= context_length -> logits (B, T, vocab_size).

    >>> m = GPT(GPTConfig(vocab_size=10, context_length=8, n_layers=1, n_heads=2, d_model=8),
    ...         rng=np.random.default_rng(0))
    >>> m(np.zeros((2, 5), dtype=np.int64)).shape
    (2, 5, 10)
    """

    def __init__(self, config: GPTConfig, *, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.config = c = config
        self.context_length = c.context_length
        rng = rng if rng is not None else np.random.default_rng()
        self.tok_emb = Embedding(c.vocab_size, c.d_model, rng=rng, dtype=dtype)
        # stage 9: the positional encoding (learned table by default, or none of it)
        if c.positional not in ENCODINGS:
            raise ValueError(f"positional must be one of {ENCODINGS}, got {c.positional!r}")
        self.pos_emb: Embedding | None = None
        self.pos_enc: SinusoidalPositionalEncoding | None = None
        if c.positional == "learned":
            self.pos_emb = LearnedPositionalEmbedding(c.context_length, c.d_model, rng=rng,
                                                      dtype=dtype)
        elif c.positional == "sinusoidal":
            self.pos_enc = SinusoidalPositionalEncoding(c.d_model, dtype=dtype)
        self.drop = Dropout(c.dropout, rng=rng)
        self.blocks = ModuleList(
            Block(c.d_model, c.n_heads, expansion=c.expansion, placement=c.placement,
                  bias=c.bias, dropout=c.dropout, residual=c.residual, norm=c.norm, ffn=c.ffn,
                  rng=rng, dtype=dtype, positional=c.positional, norm_type=c.norm_type,
                  norm_eps=c.norm_eps, ffn_type=c.ffn_type, gelu_approximate=c.gelu_approximate,
                  ffn_hidden=c.ffn_hidden, ffn_multiple_of=c.ffn_multiple_of,
                  n_kv_heads=c.n_kv_heads, rope_theta=c.rope_theta,
                  rope_scaling=c.rope_scaling, saved=c.saved)
            for _ in range(c.n_layers))
        lean = c.saved == "lean"
        if c.attention != "naive" or c.checkpoint == "selective":  # stage 12
            for blk in self.blocks:
                assert isinstance(blk, Block)
                blk.attn.sdpa = attention_function(  # lean: the head merge becomes a view
                    c.attention, selective=c.checkpoint == "selective",
                    seq_major=lean and c.attention != "naive")
        # pre-LN leaves the residual stream un-normalized: one more norm before the head
        self.final_norm: Module | None = None
        if c.placement == "pre" and c.norm:
            self.final_norm = make_block_norm(c.norm_type, c.d_model, bias=c.bias,
                                              eps=c.norm_eps, dtype=dtype, lean=lean)
        self.lm_head: Linear | None = None
        if not c.tie_weights:
            self.lm_head = Linear(c.d_model, c.vocab_size, bias=False, rng=rng, dtype=dtype)
        self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases, residual projections / √(2·n_layers)."""
        std = self.config.init_std
        resid_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                init.zeros_(p)
            elif p.ndim >= 2:
                s = resid_std if name.endswith(RESIDUAL_PROJECTIONS) else std
                init.normal_(p, 0.0, s, generator=rng)

    @property
    def head_weight(self) -> Parameter:
        """The (vocab_size, d_model) output matrix: the token embedding when tied."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    def hidden(self, idx: np.ndarray | Tensor, need_weights: bool = False
               ) -> tuple[Tensor, list[np.ndarray]]:
        """(B, T) ids -> final hidden states (B, T, d_model) and per-layer (B, H, T, T) maps."""
        ids = np.asarray(idx.data if isinstance(idx, Tensor) else idx, dtype=np.int64)
        T = ids.shape[-1]
        if T > self.context_length:
            raise ValueError(f"sequence of {T} tokens is longer than context_length "
                             f"{self.context_length}")
        if self.config.saved == "lean" and self.pos_enc is None:  # stage 12: one node
            x = lean_embed(self.tok_emb, self.pos_emb, ids, self.drop)
        else:
            x = self.drop(self._embed(ids))  # (B, T, C)
        maps: list[np.ndarray] = []
        segments = segment_sizes(len(self.blocks), self.config.checkpoint)
        if segments and not need_weights:  # stage 12: store segment inputs, recompute the rest
            x = run_segments(list(self.blocks), segments, x)
        else:
            for blk in self.blocks:
                assert isinstance(blk, Block)
                if need_weights:
                    x, w = blk.attention_weights(x)
                    maps.append(w)
                else:
                    x = blk(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, maps

    def _embed(self, ids: np.ndarray) -> Tensor:
        """Stage 9: token embeddings plus the additive positional encoding, if any."""
        T = ids.shape[-1]
        if self.pos_emb is not None:
            return self.tok_emb(ids) + self.pos_emb(np.arange(T))  # (B, T, C) + (T, C)
        if self.pos_enc is not None:
            return self.tok_emb(ids) + self.pos_enc(T)  # fixed sinusoids (T, C)
        return self.tok_emb(ids)  # RoPE / ALiBi act inside attention; none adds nothing

    def forward(self, idx: np.ndarray | Tensor) -> Tensor:
        x, _ = self.hidden(idx)
        return F.linear(x, self.head_weight)  # (B, T, C) @ (C, V) -> (B, T, V)

    def attention_maps(self, idx: np.ndarray) -> list[np.ndarray]:
        """Per layer, the attention weights (B, n_heads, T, T) on ``idx`` (no gradients)."""
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                return self.hidden(idx, need_weights=True)[1]
        finally:
            self.train(was_training)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """nanoGPT's optimizer groups: decay every ≥ 2-D tensor (matrices AND embeddings),
        never biases or norm gains."""
        params = list(self.parameters())
        return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]

    def configure_optimizer(self, lr: float = 1e-3, weight_decay: float = 0.1,
                            betas: tuple[float, float] = (0.9, 0.99)) -> Any:
        """AdamW over :meth:`param_groups` with nanoGPT's defaults for the baby recipe."""
        from spiral.optim import AdamW

        return AdamW(self.param_groups(weight_decay), lr=lr, betas=betas)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_layers={c.n_layers}, n_heads={c.n_heads}, d_model={c.d_model}, "
                f"context_length={c.context_length}, tie_weights={c.tie_weights}")
