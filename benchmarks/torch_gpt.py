"""The reference: the same GPT as :class:`spiral.models.gpt.GPT`, in PyTorch (benchmarks only).

Same module names (so ``state_dict`` keys match and weights copy one-to-one), fused QKV,
``F.scaled_dot_product_attention``, pre-LN blocks without biases, tied head, nanoGPT init.
Used by the parity tests (logits, gradients, a 20-step golden loss curve), by
``benchmarks/bench_gpt.py`` (speed) and by the stage-8 quality comparison (the nanoGPT
recipe trained in torch, scored by OUR evaluator after copying the weights over).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, bias: bool = False) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv_proj(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, bias: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, hidden: int, bias: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = MultiHeadAttention(d_model, n_heads, bias)
        self.ln2 = nn.LayerNorm(d_model, bias=bias)
        self.ffn = FeedForward(d_model, hidden, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class TorchGPT(nn.Module):
    """Pre-LN GPT; takes a :class:`spiral.models.gpt.GPTConfig` (pre-LN, all switches on)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        c = config
        assert c.placement == "pre" and c.residual and c.norm and c.ffn and c.dropout == 0.0
        self.config = c
        hidden = max(1, int(round(c.expansion * c.d_model)))
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb = nn.Embedding(c.context_length, c.d_model)
        self.blocks = nn.ModuleList(Block(c.d_model, c.n_heads, hidden, c.bias)
                                    for _ in range(c.n_layers))
        self.final_norm = nn.LayerNorm(c.d_model, bias=c.bias)
        self.lm_head = None if c.tie_weights else nn.Linear(c.d_model, c.vocab_size, bias=False)
        resid_std = c.init_std / math.sqrt(2 * c.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = resid_std if name.endswith(("out_proj.weight", "ffn.proj.weight")) \
                    else c.init_std
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        x = self.final_norm(x)
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, w)

    def configure_optimizer(self, lr: float = 1e-3, weight_decay: float = 0.1,
                            betas: tuple[float, float] = (0.9, 0.99)) -> torch.optim.AdamW:
        params = list(self.parameters())
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def copy_from_spiral(model: TorchGPT, ours: Any) -> None:
    """Load our GPT's weights into the torch model (identical names and shapes)."""
    state = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    model.load_state_dict(state, strict=True)


def copy_to_spiral(model: TorchGPT, ours: Any) -> None:
    """Load the torch model's weights into our GPT (for scoring with our evaluator)."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    ours.load_state_dict(state, strict=True)


def nanogpt_lr(step: int, lr: float = 1e-3, min_lr: float = 1e-4, warmup: int = 100,
               max_steps: int = 2000) -> float:
    """Linear warm-up then cosine decay to ``min_lr``: the schedule of spiral's train loop."""
    from spiral.train import TrainConfig, lr_multiplier

    cfg = TrainConfig(max_steps=max_steps, warmup_steps=warmup, lr=lr,
                      min_lr_ratio=min_lr / lr)
    return lr * lr_multiplier(cfg)(step)


def train_torch(config: Any, train_ids: np.ndarray, rng: np.random.Generator, *,
                max_steps: int = 2000, batch_size: int = 12, lr: float = 1e-3,
                min_lr: float = 1e-4, warmup: int = 100, grad_clip: float = 1.0,
                seed: int = 0, dtype: torch.dtype = torch.float32,
                init_from: Any = None) -> tuple[TorchGPT, list[float]]:
    """The nanoGPT baby recipe in torch; batches come from ``rng`` with spiral's sampler."""
    from spiral.data import sample_batch

    torch.manual_seed(seed)
    model = TorchGPT(config).to(dtype)
    if init_from is not None:
        copy_from_spiral(model, init_from)
    opt = model.configure_optimizer(lr=lr)
    losses = []
    for step in range(max_steps):
        for g in opt.param_groups:
            g["lr"] = nanogpt_lr(step, lr, min_lr, warmup, max_steps)
        x, y = sample_batch(train_ids, batch_size, config.context_length, rng)
        logits = model(torch.from_numpy(x))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).view(-1))
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
    return model, losses
