"""float32 against bfloat16, float16 with loss scaling, and float16 without, on a small GPT.

Each run trains the same model from the same initialisation and batches (per seed) with
:func:`spiral.amp.training.amp_train_step`: matmuls in the low format (inputs, weights and
outputs rounded; float32 accumulation), softmax / norms / the loss in float32, float32
master weights, AdamW. float16 uses a :class:`~spiral.amp.GradScaler` with torch's defaults
except a growth interval of 100 steps — runs this short would otherwise never grow the
scale (the chapter says so). Validation loss is scored in each run's own precision on a
fixed slice of the validation split. The gap to float32 is mean ± sd over seeds.
The recipe is smaller than the baby GPT's (2 layers, d_model 64) so that 4 precisions ×
3 seeds fit in minutes on one shared CPU core. Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.amp.autocast import autocast
from spiral.amp.training import TRAINING_PRECISIONS, amp_train_step, make_scaler
from spiral.data import get_splits, sample_batch
from spiral.experiments.framework import Experiment, mean_sd
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.plotting import PALETTE, new_figure
from spiral.tokenizers.char import CharTokenizer


@dataclass(frozen=True)
class Config:
    corpus: str = "shakespeare"
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    context: int = 64
    batch: int = 16
    steps: int = 400
    lr: float = 3e-3
    eval_every: int = 50
    eval_windows: int = 64
    growth_interval: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)
    base: str = "spiral-book"  # unused here: the runs train their own small model
    workers: int = 4  # independent runs in parallel processes (results do not depend on it)


def _val_loss(model: GPT, val: np.ndarray, T: int, windows: int, precision: str) -> float:
    starts = np.linspace(0, len(val) - T - 2, windows).astype(int)
    x = np.stack([val[s:s + T] for s in starts])
    y = np.stack([val[s + 1:s + T + 1] for s in starts])
    from spiral.autograd import no_grad

    with no_grad(), autocast(precision.split("-")[0]):
        return float(F.cross_entropy(model(x), y).item())


def _run_one(config: Config, precision: str, seed: int, train: np.ndarray, val: np.ndarray,
             vocab: int) -> dict[str, Any]:
    c = GPTConfig(vocab_size=vocab, context_length=config.context, n_layers=config.n_layers,
                  n_heads=config.n_heads, d_model=config.d_model)
    model = GPT(c, rng=np.random.default_rng(seed))
    opt = model.configure_optimizer(lr=config.lr)
    scaler = make_scaler(precision, growth_interval=config.growth_interval)
    rng = np.random.default_rng(seed + 1000)
    curve, skipped, zero_frac, scales = [], 0, [], []
    for step in range(1, config.steps + 1):
        x, y = sample_batch(train, config.batch, config.context, rng)
        info = amp_train_step(model, opt, x, y, precision, scaler)
        skipped += info["skipped"]
        zero_frac.append(info["zero_grad_fraction"])
        scales.append(info["scale"])
        if step % config.eval_every == 0:
            model.eval()
            curve.append({"step": step, "val_loss": _val_loss(model, val, config.context,
                                                              config.eval_windows, precision)})
            model.train()
    return {"precision": precision, "seed": seed, "curve": curve, "skipped": skipped,
            "final": curve[-1]["val_loss"], "zero_grad_fraction": float(np.mean(zero_frac)),
            "final_scale": scales[-1]}


def _job(args: tuple[Config, str, int]) -> dict[str, Any]:
    config, precision, seed = args
    splits = get_splits(config.corpus)
    tok = CharTokenizer.from_text(splits.train)
    train = np.array(tok.encode(splits.train), dtype=np.int64)
    val = np.array(tok.encode(splits.val), dtype=np.int64)
    return _run_one(config, precision, seed, train, val, tok.vocab_size)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    jobs = [(config, p, s) for s in config.seeds for p in TRAINING_PRECISIONS]
    if config.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=config.workers) as ex:
            runs = list(ex.map(_job, jobs))
    else:
        runs = [_job(j) for j in jobs]
    ref = {r["seed"]: r["final"] for r in runs if r["precision"] == "float32"}
    summary = {}
    for p in TRAINING_PRECISIONS:
        mine = [r for r in runs if r["precision"] == p]
        summary[p] = {"final": mean_sd([r["final"] for r in mine]),
                      "gap": mean_sd([r["final"] - ref[r["seed"]] for r in mine]),
                      "zero_grad_fraction": mean_sd([r["zero_grad_fraction"] for r in mine]),
                      "skipped": sum(r["skipped"] for r in mine)}
    return {"runs": runs, "summary": summary, "steps": config.steps,
            "loadavg": list(os.getloadavg())}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(1, 1, width=6.4, height=3.4)
    for i, p in enumerate(TRAINING_PRECISIONS):
        mine = [r for r in results["runs"] if r["precision"] == p]
        steps = [c["step"] for c in mine[0]["curve"]]
        vals = np.array([[c["val_loss"] for c in r["curve"]] for r in mine])
        ax.plot(steps, vals.mean(0), color=PALETTE[i], label=p,
                ls="--" if p == "float16-noscale" else "-")
        if len(mine) > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), color=PALETTE[i], alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/char)")
    ax.legend(frameon=False, fontsize=8)
    return {"precision_curves": fig}


def check(results: dict[str, Any]) -> None:
    s = results["summary"]
    for p in ("bfloat16", "float16"):
        assert abs(s[p]["gap"]["mean"]) <= 0.02, (p, s[p]["gap"])
    # without scaling float16 flushes gradient entries to zero that float32 keeps
    assert s["float16-noscale"]["zero_grad_fraction"]["mean"] > \
        2 * s["float32"]["zero_grad_fraction"]["mean"]


EXPERIMENT = Experiment(
    name="memopt_precision", stage=12, title="float32, bfloat16 and float16 training",
    quick=Config(n_layers=1, d_model=32, n_heads=2, context=32, batch=8, steps=40,
                 eval_every=20, eval_windows=16, seeds=(0,), workers=1),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"{p} gap to float32", r["summary"][p]["gap"])
                       for p in TRAINING_PRECISIONS],
)
