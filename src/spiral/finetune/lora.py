"""LoRA: a frozen Linear plus a trainable low-rank update, y = x Wᵀ + b + (α/r)·(x Aᵀ) Bᵀ.

Low-Rank Adaptation (Hu et al., 2021) keeps the pretrained W (out × in) frozen and learns
ΔW = (α/r)·B A with A (r × in), the down-projection, and B (out × r), the up-projection:
r·(in + out) trainable numbers instead of in·out. A starts as torch's Linear does
(Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in)) and B starts at zero, so at step 0 the
adapted model *is* the base model; the first gradient reaches B only (∂L/∂B = (α/r)·Gᵀ(XAᵀ)
is nonzero while ∂L/∂A = (α/r)·(GB)ᵀX = 0 as long as B = 0). The α/r factor keeps the
update's scale roughly fixed when r changes, so a learning rate tuned at one rank carries over.

``merge`` folds the update into the weight for inference (W ← W + (α/r)·BA, no extra cost);
``unmerge`` takes it back out. Module names follow Hugging Face ``peft``: the wrapped layer is
``base_layer``, the factors are ``lora_A`` and ``lora_B`` (Linear layers without bias), so a
state dict holds ``...q_proj.lora_A.weight`` where a learner who knows peft would look.
Chapter: stage 15 (fine-tuning).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from spiral.autograd import Function, Tensor
from spiral.nn.layers import Dropout, Linear
from spiral.nn.module import Module


def dense(weight: Any) -> np.ndarray:
    """The weight as an array: itself, or a quantized weight (QLoRA's NF4) dequantized."""
    return weight if isinstance(weight, np.ndarray) else weight.dequantize()


class FrozenLinearFn(Function):
    """y = x Wᵀ + b that computes only the gradients asked for (a frozen W costs no dW).

    W may be an array or a quantized weight with ``dequantize()``; a quantized one is
    dequantized again in backward rather than kept, so it costs no activation memory.
    """

    @staticmethod
    def forward(ctx: Any, x: np.ndarray, weight: Any, bias: np.ndarray | None = None
                ) -> np.ndarray:
        ctx.save_for_backward(x)
        ctx.weight = weight
        y = x @ dense(weight).T  # (..., in) @ (in, out) -> (..., out)
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx = grad @ dense(ctx.weight) if need[0] else None  # (..., out) @ (out, in)
        dw = db = None
        if len(need) > 1 and need[1]:
            dw = grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        if len(need) > 2 and need[2]:
            db = grad.reshape(-1, grad.shape[-1]).sum(axis=0)
        return (dx, dw, db)[:len(need)]


class LoRAFn(Function):
    """The fused adapted layer: y = x Wᵀ + b + s·(x_a Aᵀ) Bᵀ with x_a = dropout(x) (or x).

    One node instead of four (two matmuls, a scaling, a sum): it keeps only h = x_a Aᵀ
    (N·r numbers) for backward, where the unfused graph would keep three N·out arrays.
    Backward, with G = ∂L/∂y and GB = G B (N × r):
    ∂L/∂B = s·Gᵀ h,  ∂L/∂A = s·(GB)ᵀ x_a,  ∂L/∂x_a = s·GB A,  ∂L/∂x = G W (+ ∂L/∂x_a).
    """

    @staticmethod
    def forward(ctx: Any, x: np.ndarray, x_a: np.ndarray | None, weight: Any,
                bias: np.ndarray | None, A: np.ndarray, B: np.ndarray, scaling: float
                ) -> np.ndarray:
        xa = x if x_a is None else x_a
        h = xa @ A.T                       # (..., in) @ (in, r) -> (..., r)
        y = x @ dense(weight).T            # (..., in) @ (in, out) -> (..., out)
        up = h @ B.T                       # (..., r) @ (r, out) -> (..., out)
        up *= scaling
        y += up
        if bias is not None:
            y += bias
        ctx.save_for_backward(x, xa, h)
        ctx.weight, ctx.A, ctx.B, ctx.s = weight, A, B, scaling
        return y

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        x, xa, h = ctx.saved_tensors
        need, s = ctx.needs_input_grad, ctx.s
        g2 = grad.reshape(-1, grad.shape[-1])  # (N, out)
        gB = g2 @ ctx.B                         # (N, out) @ (out, r) -> (N, r)
        dxa = (s * gB) @ ctx.A if need[0] or need[1] else None  # (N, r) @ (r, in)
        dx = dx_a = dw = db = dA = dB = None
        if need[0]:
            dx = g2 @ dense(ctx.weight)
            if xa is x:
                dx += dxa
            dx = dx.reshape(x.shape)
        if need[1]:
            dx_a = dxa.reshape(xa.shape)  # type: ignore[union-attr]
        if need[2]:
            dw = g2.T @ x.reshape(-1, x.shape[-1])
        if need[3]:
            db = g2.sum(axis=0)
        if need[4]:
            dA = s * (gB.T @ xa.reshape(-1, xa.shape[-1]))  # (r, N) @ (N, in)
        if need[5]:
            dB = s * (g2.T @ h.reshape(-1, h.shape[-1]))    # (out, N) @ (N, r)
        return dx, dx_a, dw, db, dA, dB, None


def frozen_linear(x: Tensor, weight: Any, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` that skips the weight gradient when the weight does not require one."""
    if bias is None:
        return FrozenLinearFn.apply(x, weight)
    return FrozenLinearFn.apply(x, weight, bias)


class LoRALinear(Module):
    """A frozen ``Linear`` with a rank-``r`` adapter; ``merge()``/``unmerge()`` for inference.

    >>> lin = Linear(6, 4, rng=np.random.default_rng(0))
    >>> lora = LoRALinear(lin, r=2, lora_alpha=4, rng=np.random.default_rng(1))
    >>> bool(np.allclose(lora(Tensor(np.ones((3, 6)))).data, lin(Tensor(np.ones((3, 6)))).data))
    True
    """

    def __init__(self, base_layer: Linear, r: int = 8, lora_alpha: float = 8.0,
                 lora_dropout: float = 0.0, *, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(base_layer, Linear):
            raise TypeError(f"LoRALinear wraps a spiral Linear, got {type(base_layer).__name__}")
        if r < 1:
            raise ValueError(f"LoRA rank r must be a positive integer, got {r}")
        self.r, self.lora_alpha = int(r), float(lora_alpha)
        self.scaling = self.lora_alpha / self.r
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        dtype = base_layer.weight.dtype
        self.base_layer = base_layer
        base_layer.requires_grad_(False)
        # A: (r, in), the down-projection, U(-1/sqrt(in), 1/sqrt(in)) = kaiming_uniform_(a=sqrt 5)
        self.lora_A = Linear(self.in_features, self.r, bias=False, rng=rng, dtype=dtype)
        # B: (out, r), the up-projection, zero so that the adapted model starts as the base
        self.lora_B = Linear(self.r, self.out_features, bias=False, rng=rng, dtype=dtype)
        self.lora_B.weight.data[...] = 0
        self.lora_dropout = Dropout(lora_dropout, rng=rng)
        self.merged = False

    def delta_weight(self) -> np.ndarray:
        """(α/r)·B A as an (out, in) array, computed in float64, in the weight's dtype."""
        delta = self.lora_B.weight.data.astype(np.float64) @ self.lora_A.weight.data.astype(
            np.float64)  # (out, r) @ (r, in) -> (out, in)
        return (self.scaling * delta).astype(self.base_layer.weight.dtype)

    def merge(self) -> None:
        """W ← W + (α/r)·B A; the forward pass then costs what the base layer costs."""
        if self.merged:
            raise RuntimeError("LoRA adapter is already merged; unmerge() it first")
        self.base_layer.weight.data += self.delta_weight()
        self.merged = True

    def unmerge(self) -> None:
        """W ← W − (α/r)·B A: the exact inverse of ``merge`` up to float rounding."""
        if not self.merged:
            raise RuntimeError("LoRA adapter is not merged; nothing to unmerge")
        self.base_layer.weight.data -= self.delta_weight()
        self.merged = False

    def base_weight(self) -> Any:
        """What ``LoRAFn`` multiplies by: the base's weight Tensor (NF4: its packed form)."""
        return self.base_layer.weight

    def base_forward(self, x: Tensor) -> Tensor:
        return frozen_linear(x, self.base_weight(), self.base_layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return self.base_forward(x)  # (..., out)
        x_a = self.lora_dropout(x) if self.training and self.lora_dropout.p > 0 else None
        return LoRAFn.apply(x, x_a, self.base_weight(), self.base_layer.bias,
                            self.lora_A.weight, self.lora_B.weight, self.scaling)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"r={self.r}, lora_alpha={self.lora_alpha}, merged={self.merged}"


# the attention and FFN projections of our GPTs (GELU: fc, proj; SwiGLU: w1, w3, w2)
DEFAULT_TARGETS = ("qkv_proj", "out_proj", "fc", "proj", "w1", "w3", "w2")


def matches(name: str, target_modules: str | Sequence[str]) -> bool:
    """peft's rule: a string is a regular expression matched against the whole dotted name;
    a list matches a module whose name equals an entry or ends with ``"." + entry``."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def _set_submodule(model: Module, name: str, new: Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model
    for part in parent_name.split(".") if parent_name else []:
        parent = parent._modules[part]
    setattr(parent, child, new)


def inject_lora(model: Module, r: int = 8, lora_alpha: float = 8.0,
                target_modules: str | Sequence[str] = DEFAULT_TARGETS,
                lora_dropout: float = 0.0, *, rng: np.random.Generator | None = None,
                freeze_base: bool = True) -> list[str]:
    """Replace every ``Linear`` whose name matches by a ``LoRALinear``; returns their names.

    With ``freeze_base`` (the default, as peft) every other parameter of the model is frozen
    too, so only the adapters train. Raises if no module matches.
    """
    inside = {id(c) for m in model.modules() if isinstance(m, LoRALinear) for c in m.modules()}
    names = [n for n, m in model.named_modules()  # never adapt an adapter or a wrapped base
             if isinstance(m, Linear) and n and id(m) not in inside and matches(n, target_modules)]
    if not names:
        raise ValueError(f"inject_lora: no Linear module matches target_modules={target_modules!r}")
    if freeze_base:
        model.requires_grad_(False)
    g = rng if rng is not None else np.random.default_rng()
    for n in names:
        base = dict(model.named_modules())[n]
        assert isinstance(base, Linear)
        _set_submodule(model, n, LoRALinear(base, r, lora_alpha, lora_dropout, rng=g))
    return names


def lora_modules(model: Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def merge_lora(model: Module) -> None:
    for _, m in lora_modules(model):
        m.merge()


def unmerge_lora(model: Module) -> None:
    for _, m in lora_modules(model):
        m.unmerge()


def trainable_parameters(model: Module) -> tuple[int, int]:
    """(trainable, total) numbers of scalars; peft's ``print_trainable_parameters`` counts."""
    trainable = total = 0
    for _, p in model.named_parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
