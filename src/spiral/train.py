"""The training loop every model of the book shares.

One optimizer step on a batch of B windows of T tokens, with gradient accumulation over
``grad_accum`` micro-batches:

    L = (1/A) Σ_{a=1}^{A} CE(model(x_a), y_a)        (each micro-loss divided by A, so the
                                                     accumulated gradient is the mean's)
    g ← clip(∇L, max_norm);  lr ← base_lr · schedule(step);  θ ← optimizer(θ, g)

Every ``eval_interval`` steps the loop scores the model with the shared evaluator
(:func:`spiral.evaluate.evaluate`) on a fixed prefix of the validation stream
(``eval_tokens`` tokens: a cheap, deterministic estimate) and appends one JSON object
``{"step", "train_loss", "val_loss", "lr", "tokens_per_s"}`` to ``metrics.jsonl``;
``train_loss`` is the mean training loss of the steps since the previous evaluation. The
final evaluation, on the whole validation split, is the number to report.

BLAS runs single-threaded by default (``threads=1``): these matrices are small, and on a
shared machine a second BLAS thread that has to wait for a busy core made each matmul ~40×
slower (measured; see the lab notes). All randomness (batches, dropout) comes from ONE
``np.random.Generator``; checkpoints save its state, so a resumed run continues
bit-identically (tested); a float16 run's loss scaler (scale and growth tracker) is saved
and restored with them (stage 12).
Chapter: stage 4 (the training toolkit).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spiral.amp import PRECISIONS, GradScaler, autocast
from spiral.data import sample_batch
from spiral.evaluate import evaluate
from spiral.nn import functional as F
from spiral.nn.module import Module
from spiral.optim import clip_grad_norm_


@dataclass(frozen=True)
class TrainConfig:
    """How long and how to train (model sizes live in the model's own config)."""

    max_steps: int = 2000
    batch_size: int = 32          # windows per micro-batch
    seq_len: int = 64             # tokens per training window
    grad_accum: int = 1           # micro-batches per optimizer step
    lr: float = 5e-3
    min_lr_ratio: float = 0.1     # cosine schedule decays to lr · min_lr_ratio
    warmup_steps: int = 50
    schedule: str = "cosine"      # cosine | constant
    weight_decay: float = 0.1
    grad_clip: float = 1.0        # max global gradient norm (0 = off)
    eval_interval: int = 250
    eval_tokens: int = 20_000     # validation tokens scored at each periodic evaluation
    checkpoint_interval: int = 0  # 0 = only at the end (when an out dir is given)
    seed: int = 0
    progress: bool = True
    threads: int | None = 1       # BLAS threads while training (None = leave as is)
    precision: str = "float32"    # stage 12: float32 | bfloat16 | float16 (+ loss scaling)

    def __post_init__(self) -> None:
        at_least = {"max_steps": 1, "batch_size": 1, "seq_len": 1, "grad_accum": 1,
                    "warmup_steps": 0, "eval_interval": 1, "eval_tokens": 1,
                    "checkpoint_interval": 0}
        for name, low in at_least.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise ValueError(f"TrainConfig.{name} must be a whole number >= {low}, "
                                 f"got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, "
                                 f"got {value!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], "
                             f"got {self.min_lr_ratio!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig.schedule must be 'cosine' or 'constant', "
                             f"got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, "
                             f"got {self.precision!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"TrainConfig.threads must be >= 1 or None, got {self.threads!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["precision"] == "float32":  # stage 12's field: recorded only when set
            del d["precision"]
        return d


def lr_multiplier(config: TrainConfig) -> Callable[[int], float]:
    """Linear warmup then cosine decay to ``min_lr_ratio`` (or constant): step -> factor."""

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        if config.schedule != "cosine":
            raise ValueError(f"unknown schedule {config.schedule!r}")
        span = max(1, config.max_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        cos = 0.5 * (1.0 + math.cos(math.pi * progress))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cos

    return factor


@dataclass
class TrainState:
    """What changes during training (and what a checkpoint restores)."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    scaler: dict[str, Any] | None = None  # float16: GradScaler.state_dict() (stage 12)
    # step losses since the last evaluation (which averages them into ``train_loss``): a run
    # resumed between evaluations must average the steps before the interruption too
    pending_losses: list[float] = field(default_factory=list)


def loss_on_batch(model: Module, x: np.ndarray, y: np.ndarray) -> Any:
    """Mean next-token cross-entropy of a (B, T) batch: model(x) (B, T, V) against y (B, T)."""
    return F.cross_entropy(model(x), y)


def train(
    model: Module,
    optimizer: Any,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    config: TrainConfig,
    rng: np.random.Generator,
    *,
    out_dir: str | Path | None = None,
    state: TrainState | None = None,
    schedule: Callable[[int], float] | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    until: int | None = None,
) -> TrainState:
    """Train ``model`` for ``config.max_steps`` optimizer steps (continuing from ``state``).

    ``schedule(step)`` multiplies each group's base lr (default: :func:`lr_multiplier`).
    With ``out_dir``, metrics go to ``out_dir/metrics.jsonl`` and checkpoints to
    ``out_dir/checkpoint.safetensors`` (model, optimizer, step, rng, ``checkpoint_meta``).
    ``until`` stops early after that step (as an interruption would); the schedule still
    follows ``config.max_steps``.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=config.threads, user_api="blas"):
        return _train(model, optimizer, train_ids, val_ids, config, rng, out_dir, state,
                      schedule, checkpoint_meta, until)


def _train(model: Module, optimizer: Any, train_ids: np.ndarray, val_ids: np.ndarray,
           config: TrainConfig, rng: np.random.Generator, out_dir: str | Path | None,
           state: TrainState | None, schedule: Callable[[int], float] | None,
           checkpoint_meta: dict[str, Any] | None, until: int | None) -> TrainState:
    from tqdm import tqdm

    from spiral import checkpoint

    state = state or TrainState()
    schedule = schedule or lr_multiplier(config)
    ckpt_path = Path(out_dir) / "checkpoint.safetensors" if out_dir is not None else None
    if state.step and checkpoint_meta is not None and ckpt_path and ckpt_path.is_file():
        check_resume(checkpoint.read_header(ckpt_path).get("meta", {}), checkpoint_meta,
                     str(ckpt_path))  # a resumed run continues the same run
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        metrics = out / "metrics.jsonl"
        if state.step and metrics.is_file():  # resumed: drop records of the steps re-run
            kept = [ln for ln in metrics.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= state.step]
            metrics.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
    params = list(model.parameters())
    scaler = GradScaler(enabled=config.precision == "float16")  # stage 12: loss scaling
    if state.step or state.scaler:  # continuing a run: its scale and growth tracker too
        checkpoint.load_scaler(scaler, state.scaler, f"the run at step {state.step}")
    tokens_per_step = config.batch_size * config.seq_len * config.grad_accum
    losses = state.pending_losses  # appended to in place, so checkpoints see it
    t_last = time.perf_counter()
    steps_since = 0
    bar = tqdm(total=config.max_steps, initial=state.step, disable=not config.progress,
               desc="train", unit="step", dynamic_ncols=True)
    model.train()
    stop = config.max_steps if until is None else min(until, config.max_steps)
    while state.step < stop:
        factor = schedule(state.step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        total = 0.0
        for _ in range(config.grad_accum):
            x, y = sample_batch(train_ids, config.batch_size, config.seq_len, rng)
            with autocast(config.precision):  # stage 12: matmuls in low precision
                loss = loss_on_batch(model, x, y)
            scaler.scale(loss / config.grad_accum).backward()  # mean over micro-batches
            total += float(loss.item()) / config.grad_accum
        scaler.unscale_(optimizer)  # float16: clip the true gradients, skip inf/NaN steps
        if config.grad_clip > 0:
            clip_grad_norm_(params, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        state.scaler = scaler.state_dict() or None
        optimizer.zero_grad()
        state.step += 1
        steps_since += 1
        losses.append(total)
        bar.update()
        last = state.step == config.max_steps
        if state.step % config.eval_interval == 0 or last:
            val_tokens = val_ids if last else val_ids[: config.eval_tokens]
            val = evaluate(model, val_tokens).nats  # type: ignore[arg-type]
            elapsed = time.perf_counter() - t_last
            record = {
                "step": state.step,
                "train_loss": float(np.mean(losses)),
                "val_loss": float(val),
                "lr": float(optimizer.param_groups[0]["lr"]),
                "tokens_per_s": tokens_per_step * steps_since / max(elapsed, 1e-9),
            }
            if last:
                record["val_full"] = True
            state.history.append(record)
            bar.set_postfix(train=f"{record['train_loss']:.3f}", val=f"{val:.3f}")
            if out is not None:
                with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            losses.clear()
            steps_since = 0
            model.train()
            t_last = time.perf_counter()
        every = config.checkpoint_interval  # its own schedule, not only at evaluation steps
        if out is not None and (last or (every and state.step % every == 0)):
            t_save = time.perf_counter()
            checkpoint.save(out / "checkpoint.safetensors", model, optimizer,
                            step=state.step, rng=rng, meta=checkpoint_meta or {},
                            history=state.history, scaler=scaler, pending_losses=losses)
            t_last += time.perf_counter() - t_save  # saving is not training throughput
    bar.close()
    return state


# Settings that change nothing a resumed run computes (only what it prints or records).
_RESUME_FREE = {"progress", "threads", "eval_interval", "eval_tokens", "checkpoint_interval"}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_resume(saved_meta: dict[str, Any], meta: dict[str, Any], where: str = "") -> None:
    """Refuse to resume a run under settings other than those it was trained with.

    A resumed run must continue the SAME run (bit-identically): the checkpoint restores the
    optimizer's learning rates and the schedule follows ``max_steps``, so a changed lr or
    length would silently not apply (or reshape the schedule) while ``config.json`` recorded
    it. Settings in ``_RESUME_FREE`` (progress bar, evaluation cadence) may change.
    """
    old = _flat(json.loads(json.dumps(saved_meta, default=str)))
    new = _flat(json.loads(json.dumps(meta, default=str)))
    changed = [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}"
               for k in sorted(old.keys() | new.keys())
               if old.get(k) != new.get(k) and k.rsplit(".", 1)[-1] not in _RESUME_FREE]
    if changed:
        raise ValueError(f"cannot resume {where or 'this run'} with other settings than it was "
                         f"trained with ({'; '.join(changed)}); resume with the original "
                         "settings, or start a new run in a fresh directory")


def resume(path: str | Path, model: Module, optimizer: Any, rng: np.random.Generator,
           meta: dict[str, Any] | None = None) -> TrainState:
    """Load a checkpoint to continue its run; with ``meta`` (the new run's config, as passed
    to :func:`train` as ``checkpoint_meta``) a changed setting is refused *before* anything
    is loaded or written (call it before writing the new ``config.json``)."""
    from spiral import checkpoint

    if meta is not None:
        check_resume(checkpoint.read_header(path).get("meta", {}), meta, str(path))
    header = checkpoint.load(path, model, optimizer, rng)
    return TrainState(step=header["step"], history=header["history"],
                      scaler=header.get("scaler"),
                      pending_losses=header.get("pending_losses", []))
