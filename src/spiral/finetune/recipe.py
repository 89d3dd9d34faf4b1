"""The fine-tuning recipe: a pretrained base, a method, a corpus -> a run folder.

Four methods, one loop (:func:`spiral.train.train`, the loop every model in the book trains
with):

    full     every parameter trains                       P_train = P
    freeze   the embeddings and the first k blocks frozen   P_train = P − frozen
    lora     W + (α/r)·B A on the target matrices          P_train = Σ r·(in + out)
    qlora    lora on a base stored in NF4 (4 bits)          P_train = Σ r·(in + out)

with AdamW over the trainable parameters only, optionally with discriminative learning rates
(block l of L at lr·decayᴸ⁻¹⁻ˡ; ULMFiT). The run folder holds what ``spiral train`` writes
(``config.json``, ``metrics.jsonl``, ``checkpoint.safetensors``, ``samples.txt``) plus, for
LoRA and QLoRA, ``adapter_model.safetensors`` — the adapters alone, with peft's key names.
Chapter: stage 15 (fine-tuning).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spiral.finetune.adapters import save_adapter
from spiral.finetune.freeze import discriminative_param_groups, freeze, layerwise_lr
from spiral.finetune.lora import DEFAULT_TARGETS, inject_lora, trainable_parameters
from spiral.finetune.memory import METHODS
from spiral.finetune.nf4 import inject_qlora


class FinetuneError(ValueError):
    """A base, corpus or option that cannot be fine-tuned as asked."""


@dataclass
class FinetuneConfig:
    method: str = "lora"          # full | freeze | lora | qlora
    r: int = 8                    # LoRA rank
    lora_alpha: float = 16.0      # LoRA scale α (the update is (α/r)·B A)
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    lora_dropout: float = 0.0
    freeze_blocks: int = 0        # freeze: the embeddings and blocks 0 … k−1 stay fixed
    lr_decay: float = 1.0         # discriminative rates: block l at lr·decay^(L−1−l); 1 = off
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FinetuneError(f"unknown method {self.method!r}; choose one of "
                                f"{', '.join(METHODS)}")
        if self.r < 1:
            raise FinetuneError(f"LoRA rank r must be at least 1, got {self.r}")
        if not 0 < self.lr_decay <= 1:
            raise FinetuneError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")


@dataclass
class Base:
    """A base model ready to fine-tune, with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    source: str


def load_base(base: str | Path) -> Base:
    """A pretrained model (a name or its folder) or a ``spiral train gpt`` run folder."""
    from spiral.models.pretrained import PretrainedError, load_pretrained
    from spiral.runs import RunError, load_run

    path = Path(base)
    if (path / "config.json").is_file() and not (path / "SHA256SUMS").is_file():
        try:
            model, tok, config = load_run(path)
        except RunError as err:
            raise FinetuneError(str(err)) from None
        if config.get("model") != "gpt":
            raise FinetuneError(f"{path} holds a {config.get('model')!r} run; fine-tuning "
                                "needs a GPT (`spiral train gpt`) or a pretrained model")
        return Base(model, tok, str(path))
    try:
        pre = load_pretrained(base)
    except PretrainedError as err:
        raise FinetuneError(str(err)) from None
    return Base(pre.model, pre.tokenizer, str(pre.path))


def encode(tok: Any, text: str, what: str) -> np.ndarray:
    """Token ids of ``text`` as int64; a character the base cannot encode is one clear line."""
    try:
        return np.asarray(tok.encode(text), dtype=np.int64)
    except ValueError as err:
        raise FinetuneError(f"the base's tokenizer cannot encode the {what}: {err}") from None


def apply_method(model: Any, cfg: FinetuneConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Freeze or adapt ``model`` in place for ``cfg.method``; returns the parameter counts
    (``total``: the base's parameters, so QLoRA's 4-bit matrices count as what they hold)."""
    adapted: list[str] = []
    _, base_total = trainable_parameters(model)
    n_layers = model.config.n_layers
    if cfg.method == "freeze":
        if not 0 <= cfg.freeze_blocks <= n_layers:
            raise FinetuneError(f"--freeze-blocks must lie in [0, {n_layers}], "
                                f"got {cfg.freeze_blocks}")
        names = {n for n, _ in model.named_modules()}
        freeze(model, [n for n in ("tok_emb", "pos_emb") if n in names]
               + [f"blocks.{i}" for i in range(cfg.freeze_blocks)])
    elif cfg.method in ("lora", "qlora"):
        try:
            if cfg.method == "lora":
                adapted = inject_lora(model, cfg.r, cfg.lora_alpha, list(cfg.target_modules),
                                      cfg.lora_dropout, rng=rng)
            else:
                adapted = inject_qlora(model, cfg.r, cfg.lora_alpha, list(cfg.target_modules),
                                       cfg.lora_dropout, rng=rng)
        except ValueError as err:
            raise FinetuneError(str(err)) from None
    trainable, _ = trainable_parameters(model)
    return {"trainable": trainable, "total": base_total, "adapted": adapted,
            "trainable_fraction": trainable / base_total}


def make_optimizer(model: Any, cfg: FinetuneConfig, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.99)) -> Any:
    """AdamW over the trainable parameters (per-block rates when ``lr_decay`` < 1)."""
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW

    if cfg.lr_decay < 1:
        groups = discriminative_param_groups(
            model, layerwise_lr(model.config.n_layers, lr, cfg.lr_decay), weight_decay)
    else:
        groups = param_groups(model, weight_decay)
    return AdamW(groups, lr=lr, betas=betas)


def finetune(base: Base, splits: Any, cfg: FinetuneConfig, train_config: Any,
             out_dir: str | Path | None = None) -> dict[str, Any]:
    """Adapt ``base.model`` to ``splits`` (train/val text) in place; returns the record."""
    from spiral.generate import sample_text
    from spiral.records import atomic_write_text
    from spiral.train import train

    rng = np.random.default_rng(train_config.seed)
    train_ids = encode(base.tokenizer, splits.train, "training split")
    val_ids = encode(base.tokenizer, splits.val, "validation split")
    info = apply_method(base.model, cfg, rng)
    optimizer = make_optimizer(base.model, cfg, train_config.lr, train_config.weight_decay)
    config = {"kind": "finetune", "base": base.source, "corpus": splits.name,
              "finetune": {k: v for k, v in asdict(cfg).items() if k != "extra"},
              "train": asdict(train_config), "model_config": base.model.config.to_dict(),
              **{k: v for k, v in info.items() if k != "adapted"}, "adapted": info["adapted"]}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        atomic_write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
    state = train(base.model, optimizer, train_ids, val_ids, train_config, rng, out_dir=out,
                  checkpoint_meta={"kind": "finetune", "method": cfg.method})
    if out is not None:
        if cfg.method in ("lora", "qlora"):
            save_adapter(base.model, out / "adapter_model.safetensors")
        names = splits.name == "names"
        text = sample_text(base.model, base.tokenizer, np.random.default_rng(train_config.seed),
                           n=20, prompt="\n" if names else splits.train[:1], names=names)
        atomic_write_text(out / "samples.txt", text.rstrip("\n") + "\n")
    return {"config": config, "val_nats": state.history[-1]["val_loss"],
            "history": state.history, "model": base.model, **info}
