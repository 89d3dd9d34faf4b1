"""Freezing and discriminative learning rates: which parameters a fine-tune may change, how fast.

Freezing sets ``requires_grad = False`` on every parameter of the modules whose dotted name
matches a pattern (shell-style, ``fnmatch``: ``"tok_emb"``, ``"blocks.[0-1]"``,
``"blocks.*.attn"``). A frozen parameter gets no gradient from ``backward`` (the engine only
accumulates into leaves that require one), is left out of ``param_groups`` and so gets no
optimizer state: with AdamW that saves 2 of the 4 numbers per parameter held during training,
plus its gradient.

Discriminative fine-tuning (Howard & Ruder, *ULMFiT*, 2018) gives lower layers, which hold
more general features, smaller steps: block l of L trains at lr · decayᴸ⁻¹⁻ˡ, the embeddings
at lr · decayᴸ, the final norm and head at lr (ULMFiT used decay = 1/2.6). The groups keep
``param_groups``'s weight-decay rule (no decay on biases, norm gains and embeddings).
Chapter: stage 15 (fine-tuning).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from spiral.nn.layers import Embedding
from spiral.nn.module import Module, Parameter


def _matched_params(model: Module, patterns: str | Sequence[str]) -> list[tuple[str, Parameter]]:
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    hit: dict[int, tuple[str, Parameter]] = {}
    used: set[str] = set()
    for mname, m in model.named_modules():
        for pat in pats:
            if mname and fnmatchcase(mname, pat):
                used.add(pat)
                for pname, p in m.named_parameters(prefix=mname):
                    hit.setdefault(id(p), (pname, p))
    unused = [p for p in pats if p not in used]
    if unused:
        raise ValueError(f"no module name matches pattern(s) {unused}")
    return list(hit.values())


def freeze(model: Module, patterns: str | Sequence[str]) -> list[str]:
    """Freeze every parameter under the modules matching ``patterns``; returns their names."""
    matched = _matched_params(model, patterns)
    for _, p in matched:
        p.requires_grad_(False)
        p.grad = None
    return [n for n, _ in matched]


def unfreeze(model: Module, patterns: str | Sequence[str]) -> list[str]:
    """Make the parameters under the matching modules trainable again; returns their names."""
    matched = _matched_params(model, patterns)
    for _, p in matched:
        p.requires_grad_(True)
    return [n for n, _ in matched]


def frozen_parameters(model: Module) -> list[str]:
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def layerwise_lr(n_layers: int, lr: float, decay: float = 1 / 2.6
                 ) -> Callable[[str], float]:
    """name -> learning rate for GPT-style names (``blocks.<l>.…``, embeddings, head)."""
    if not 0 < decay <= 1:
        raise ValueError(f"decay must lie in (0, 1], got {decay}")

    def rate(name: str) -> float:
        m = re.match(r"blocks\.(\d+)\.", name)
        if m:
            return lr * decay ** (n_layers - 1 - int(m.group(1)))
        if name.startswith(("tok_emb", "pos_emb")):
            return lr * decay ** n_layers
        return lr

    return rate


def discriminative_param_groups(model: Module, lr_of: Callable[[str], float],
                                weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups keyed by (learning rate, decayed or not), frozen parameters left out.

    >>> from spiral.nn.layers import Linear
    >>> groups = discriminative_param_groups(Linear(2, 2), lambda n: 0.1, 0.01)
    >>> [(g["lr"], g["weight_decay"], len(g["params"])) for g in groups]
    [(0.1, 0.01, 1), (0.1, 0.0, 1)]
    """
    embedding = {id(p) for m in model.modules() if isinstance(m, Embedding)
                 for p in m._parameters.values() if p is not None}
    groups: dict[tuple[float, bool], list[Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decayed = p.ndim >= 2 and id(p) not in embedding
        groups.setdefault((float(lr_of(name)), decayed), []).append(p)
    if not groups:
        raise ValueError("every parameter is frozen: nothing to optimize")
    return [{"params": ps, "lr": lr, "weight_decay": weight_decay if d else 0.0}
            for (lr, d), ps in groups.items()]
