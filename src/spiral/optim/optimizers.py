"""Optimizers: SGD (momentum, Nesterov), RMSprop, Adam (amsgrad) and AdamW, in NumPy.

Every optimizer updates the ``.data`` array of each parameter in place from its ``.grad``,
with PyTorch's constructor arguments, defaults, parameter groups and update rules. With
gradient gₜ = ∇f(θₜ₋₁), learning rate γ and (coupled) weight decay λ (gₜ ← gₜ + λθₜ₋₁):

    SGD       bₜ = μ bₜ₋₁ + (1 − τ) gₜ  (b₁ = g₁);   θₜ = θₜ₋₁ − γ (gₜ + μ bₜ  if Nesterov else bₜ)
    RMSprop   vₜ = α vₜ₋₁ + (1 − α) gₜ²;             θₜ = θₜ₋₁ − γ gₜ / (√vₜ + ε)
    Adam      mₜ = β₁ mₜ₋₁ + (1 − β₁) gₜ,  vₜ = β₂ vₜ₋₁ + (1 − β₂) gₜ²
              θₜ = θₜ₋₁ − γ m̂ₜ / (√v̂ₜ + ε),  m̂ₜ = mₜ / (1 − β₁ᵗ),  v̂ₜ = vₜ / (1 − β₂ᵗ)
    AdamW     θₜ₋₁ ← (1 − γλ) θₜ₋₁ first (decoupled decay), then Adam without the λθ term.

The Nesterov form is PyTorch's (Sutskever et al. 2013, rewritten so that the stored
parameters are the look-ahead point): the step uses gₜ + μ bₜ, not bₜ.

State lives in ``optimizer.state`` (one dict of arrays and scalars per parameter, keyed by
``id(param)``); ``state_dict()`` returns only arrays, numbers, bools and strings, indexed by
the parameter's position across groups, as in PyTorch — JSON- and safetensors-friendly.

References: Polyak (1964); Sutskever, Martens, Dahl & Hinton (2013); Tieleman & Hinton
(2012, RMSprop); Kingma & Ba, *Adam* (2015); Reddi, Kale & Kumar (2018, AMSGrad);
Loshchilov & Hutter, *Decoupled Weight Decay Regularization* (2019).
Chapter: stage 5 (optimization theory and our optimizers).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

ParamsT = Iterable[Any] | Iterable[dict[str, Any]]


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer(ABC):
    """Base class: parameter groups, per-parameter state, ``zero_grad`` and state dicts.

    ``params`` is an iterable of tensors (anything with ``.data`` and ``.grad``) or of dicts
    ``{"params": [...], "lr": ..., ...}``; a key missing from a group takes its value from
    ``defaults``. Subclasses implement ``_update_group(group)``.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        if hasattr(params, "data") and hasattr(params, "grad"):
            raise TypeError("params must be an iterable of tensors or dicts, not a tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (a dict with ``"params"``); unset hyperparameters take the defaults."""
        group = dict(param_group)
        params = group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        for p in params:
            if not getattr(p, "requires_grad", True):
                raise ValueError("optimizer can only optimize tensors that require gradients")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or seen & {id(p) for p in params}:
            raise ValueError("some parameters appear in more than one parameter group")
        group["params"] = params
        for key, default in self.defaults.items():
            if default is required and key not in group:
                raise ValueError(f"parameter group didn't specify a value of required {key}")
            group.setdefault(key, default)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: ``grad = None`` (default, as PyTorch) or fill with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.fill(0)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            from spiral.autograd import enable_grad

            with enable_grad():                         # as torch: the closure may backprop
                loss = closure()
        for group in self.param_groups:
            self._update_group(group)
        return loss

    @abstractmethod
    def _update_group(self, group: dict[str, Any]) -> None:
        """Update every parameter of ``group`` that has a gradient (the algorithm)."""

    def _state(self, p: Any) -> dict[str, Any]:
        return self.state.setdefault(id(p), {})

    # --- serialisation -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {name: array | number}}, "param_groups": [...]}``.

        Parameters are numbered in order across groups (PyTorch's convention); arrays are
        copies, so the dict is a snapshot.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: (list(v) if isinstance(v, tuple) else v)
                      for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {
            index[pid]: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
            for pid, s in self.state.items() if pid in index
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by ``state_dict`` (int or str indices)."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't "
                             "match the size of optimizer's group")
        by_index = {int(k): v for k, v in state_dict["state"].items()}
        self.state = {}
        for s, group in zip(saved, self.param_groups):
            for key, value in s.items():
                if key == "params":
                    continue
                group[key] = tuple(value) if isinstance(group.get(key), tuple) else value
            for i, p in zip(s["params"], group["params"]):
                if int(i) not in by_index:
                    continue
                self.state[id(p)] = {
                    k: (np.array(v, dtype=p.data.dtype) if isinstance(v, np.ndarray) and
                        np.issubdtype(v.dtype, np.floating) else v)
                    for k, v in by_index[int(i)].items()
                }


def _grad(p: Any, group: dict[str, Any]) -> np.ndarray:
    """The gradient with the sign (``maximize``) and coupled L2 weight decay applied."""
    g = -p.grad if group["maximize"] else p.grad
    wd = group["weight_decay"]
    if wd != 0:
        g = g + wd * p.data                             # new array: never edit p.grad
    return g


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``."""

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, maximize: bool = False) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = _grad(p, group)
            if mu != 0:
                state = self._state(p)
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(g, copy=True)   # b₁ = g₁
                else:
                    buf *= mu
                    buf += (1 - tau) * g if tau != 0 else g
                g = g + mu * buf if group["nesterov"] else buf
            p.data -= lr * g


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton 2012), optionally centered and with momentum."""

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False) -> None:
        if lr < 0.0 or eps < 0.0 or momentum < 0.0 or weight_decay < 0.0 or alpha < 0.0:
            raise ValueError("lr, alpha, eps, momentum and weight_decay must be >= 0")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, alpha, eps, mu = group["lr"], group["alpha"], group["eps"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = _grad(p, group)
            state = self._state(p)
            if not state:
                state["step"] = 0
                state["square_avg"] = np.zeros_like(p.data)
                if mu > 0:
                    state["momentum_buffer"] = np.zeros_like(p.data)
                if group["centered"]:
                    state["grad_avg"] = np.zeros_like(p.data)
            state["step"] += 1
            v = state["square_avg"]
            v *= alpha
            v += (1 - alpha) * (g * g)                  # vₜ = α vₜ₋₁ + (1 − α) gₜ²
            if group["centered"]:
                ga = state["grad_avg"]
                ga += (1 - alpha) * (g - ga)            # running mean of g
                denom = np.sqrt(v - ga * ga)
            else:
                denom = np.sqrt(v)
            denom += eps
            if mu > 0:
                buf = state["momentum_buffer"]
                buf *= mu
                buf += g / denom
                p.data -= lr * buf
            else:
                p.data -= lr * (g / denom)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; ``amsgrad`` keeps the running max of v.

    ``weight_decay`` is L2 regularisation added to the gradient (coupled), as in PyTorch's
    ``Adam``; ``decoupled_weight_decay=True`` turns it into AdamW.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        if lr < 0.0 or eps < 0.0 or weight_decay < 0.0:
            raise ValueError("lr, eps and weight_decay must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        decoupled = group["decoupled_weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            if decoupled:
                g = -p.grad if group["maximize"] else p.grad
                if wd != 0:
                    p.data *= 1 - lr * wd               # θ ← (1 − γλ) θ   (AdamW)
            else:
                g = _grad(p, group)
            state = self._state(p)
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            tmp = np.empty_like(m)                      # one scratch array; all else in place
            np.subtract(g, m, out=tmp)
            tmp *= 1 - beta1
            m += tmp                                    # mₜ = β₁ mₜ₋₁ + (1 − β₁) gₜ
            np.multiply(g, g, out=tmp)
            tmp *= 1 - beta2
            v *= beta2
            v += tmp                                    # vₜ = β₂ vₜ₋₁ + (1 − β₂) gₜ²
            if group["amsgrad"]:
                vmax = state["max_exp_avg_sq"]
                np.maximum(vmax, v, out=vmax)
                v = vmax
            step_size = lr / (1 - beta1**t)             # folds m̂ = m / (1 − β₁ᵗ) into γ
            np.sqrt(v, out=tmp)
            tmp /= math.sqrt(1 - beta2**t)              # √v̂ = √v / √(1 − β₂ᵗ)
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p.data -= tmp                               # θ −= γ m̂ / (√v̂ + ε)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): θ ← (1 − γλ)θ, then Adam."""

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)
