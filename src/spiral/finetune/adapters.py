"""Saving and loading LoRA adapters alone: a few kilobytes instead of the whole model.

The file is safetensors (a JSON header plus raw bytes; loading runs no code) with Hugging Face
``peft``'s key names, ``base_model.model.<module>.lora_A.weight`` (r × in) and
``...lora_B.weight`` (out × r), and one metadata entry ``"spiral_lora"`` holding the JSON
config: r, lora_alpha and, for every adapted module, the (out, in) shape of the base weight it
was trained on. Loading checks that shape and name against the model and fails with one clear
line when the adapter belongs to a different base — silently adding an update trained for
other weights would produce a plausible-looking but wrong model.
Chapter: stage 15 (fine-tuning).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from spiral.finetune.lora import LoRALinear, inject_lora, lora_modules
from spiral.nn.module import Module

PREFIX = "base_model.model."
META_KEY = "spiral_lora"


class AdapterMismatchError(ValueError):
    """An adapter file that does not fit the model it is loaded onto."""


def adapter_state_dict(model: Module) -> dict[str, np.ndarray]:
    """{peft key: array} of every adapter factor in the model (copies)."""
    out: dict[str, np.ndarray] = {}
    for name, m in lora_modules(model):
        out[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(m.lora_A.weight.data.copy())
        out[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(m.lora_B.weight.data.copy())
    return out


def save_adapter(model: Module, path: str | Path) -> Path:
    """Write the model's adapters (not the base) to ``path``; returns the path."""
    from safetensors.numpy import save_file

    mods = lora_modules(model)
    if not mods:
        raise ValueError("save_adapter: the model has no LoRA modules (call inject_lora first)")
    if any(m.merged for _, m in mods):
        raise ValueError("save_adapter: unmerge the adapters first (a merged base is not saved)")
    config = {
        "r": mods[0][1].r, "lora_alpha": mods[0][1].lora_alpha,
        "modules": {n: {"r": m.r, "lora_alpha": m.lora_alpha,
                        "base_shape": [m.out_features, m.in_features]} for n, m in mods},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model), str(path), metadata={META_KEY: json.dumps(config)})
    return path


def read_adapter(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(tensors, config) of an adapter file; raises if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}")
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        if META_KEY not in meta:
            raise AdapterMismatchError(f"{path} is not a spiral LoRA adapter (no {META_KEY!r} "
                                       "metadata)")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, json.loads(meta[META_KEY])


def load_adapter(model: Module, path: str | Path, *,
                 rng: np.random.Generator | None = None) -> list[str]:
    """Load adapters saved by ``save_adapter``; returns the adapted module names.

    A model without LoRA modules gets them injected first (at the saved modules, rank and
    alpha), as ``peft.PeftModel.from_pretrained`` does. A module the base lacks, a base weight
    of another shape, or a different rank raises ``AdapterMismatchError``.
    """
    tensors, config = read_adapter(path)
    saved: dict[str, Any] = config["modules"]
    present = dict(model.named_modules())
    for name, info in saved.items():
        m = present.get(name)
        if m is None:
            raise AdapterMismatchError(f"adapter targets module {name!r}, which this base model "
                                       "does not have: it was trained on a different base")
        base = m.base_layer if isinstance(m, LoRALinear) else m
        shape = [getattr(base, "out_features", None), getattr(base, "in_features", None)]
        if shape != info["base_shape"]:
            raise AdapterMismatchError(
                f"adapter for {name!r} was trained on a base weight of shape "
                f"{tuple(info['base_shape'])}, this base has {tuple(shape)}: a different base")
    if not lora_modules(model):
        names = list(saved)
        inject_lora(model, int(config["r"]), float(config["lora_alpha"]),
                    "|".join(re.escape(n) for n in names), rng=rng)
    mods = dict(lora_modules(model))
    if set(mods) != set(saved):
        raise AdapterMismatchError(f"adapter covers modules {sorted(saved)}, the model's LoRA "
                                   f"modules are {sorted(mods)}")
    for name, m in mods.items():
        if m.merged:
            raise AdapterMismatchError(f"module {name!r} has a merged adapter; unmerge it first")
        for part in ("lora_A", "lora_B"):
            arr = tensors[f"{PREFIX}{name}.{part}.weight"]
            w = getattr(m, part).weight
            if arr.shape != w.shape:
                raise AdapterMismatchError(f"{name}.{part}: the file holds shape {arr.shape}, "
                                           f"the model {w.shape} (a different rank?)")
            w.data[...] = arr
        m.lora_alpha = float(saved[name]["lora_alpha"])
        m.scaling = m.lora_alpha / m.r
    return sorted(mods)
