"""Our own scaling sweep: model sizes × token budgets on tiny Shakespeare, fitted and tested.

Each run is a Llama-style character model (RMSNorm, SwiGLU, RoPE, no biases) trained with
AdamW on a cosine schedule that ends at its own token budget — one schedule per budget, not
a long run's curve read at earlier points (Hoffmann et al. 2022 show that truncated curves
overstate the loss at the smaller budgets). The whole validation split is scored by the
shared evaluator. N is the non-embedding parameter count (Kaplan et al. 2020's convention;
the embedding of 65 characters is a rounding error at all but the smallest sizes), D the
training tokens (budgets above one epoch repeat data, and the chapter says so).

The fit L(N, D) = E + A/N^α + B/D^β (:func:`spiral.scaling.fit_scaling_law`, Huber on
log-loss, L-BFGS from a grid, bootstrap) is made WITHOUT the held-out run — one larger
model at the largest budget — whose loss is then compared with the prediction and its
interval. From the fit: the compute-optimal N*(C), D*(C) (C = 6ND) and the compute at which
the optimal model reaches Kneser–Ney's validation loss. Every run is cached as JSON in
``cache_dir``, so a sweep interrupted by the end of a session resumes where it stopped.
Chapter: stage 14, "Our own scaling sweep".
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    # (d_model, n_layers, n_heads)
    sizes: tuple[tuple[int, int, int], ...] = ((16, 1, 2), (24, 2, 2), (32, 2, 4), (48, 2, 4),
                                               (64, 3, 4), (96, 3, 4), (128, 4, 4),
                                               (160, 5, 5))
    budgets: tuple[int, ...] = (500_000, 1_500_000, 4_500_000)   # training tokens
    held_out: tuple[int, int, int] = (192, 6, 6)
    context_length: int = 64
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    n_bootstrap: int = 200
    kn_order: int = 6           # the Kneser–Ney baseline (stage 1's best order on validation)
    val_tokens: int = 0         # 0 = score the whole validation split
    workers: int = 2
    # per-run records, committed: a sweep longer than a session resumes in the next checkout
    cache_dir: str = "docs/results/architectures_scaling/runs"   # "" = no cache


def _model_config(size: tuple[int, int, int], c: Config, vocab: int) -> Any:
    from spiral.models.gpt import GPTConfig

    d, L, H = size
    return GPTConfig(vocab_size=vocab, context_length=c.context_length, n_layers=L,
                     n_heads=H, d_model=d, norm_type="rmsnorm", ffn_type="swiglu",
                     positional="rope_halves", bias=False)


def _job(job: dict[str, Any]) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from spiral import data
    from spiral.evaluate import evaluate
    from spiral.models.gpt import GPT
    from spiral.optim import AdamW
    from spiral.scaling.flops import non_embedding_parameters, training_flops
    from spiral.tokenizers.char import CharTokenizer
    from spiral.train import TrainConfig, train

    cache = Path(job["cache"]) if job["cache"] else None
    if cache is not None and cache.is_file():
        return dict(json.loads(cache.read_text(encoding="utf-8")))
    c = Config(context_length=job["context_length"], batch_size=job["batch_size"],
               lr=job["lr"], seed=job["seed"])
    splits = data.get_splits("shakespeare")
    tok = CharTokenizer.from_text(splits.train)
    tr, va = tok.encode_array(splits.train), tok.encode_array(splits.val)
    d, L, H = job["size"]
    mcfg = _model_config((d, L, H), c, tok.vocab_size)
    model = GPT(mcfg, rng=np.random.default_rng(c.seed))
    steps = max(1, job["tokens"] // (c.batch_size * c.context_length))
    tcfg = TrainConfig(max_steps=steps, batch_size=c.batch_size, seq_len=c.context_length,
                       lr=c.lr, warmup_steps=min(100, steps // 10), eval_interval=steps,
                       eval_tokens=20_000, seed=c.seed, progress=False)
    opt = AdamW(model.param_groups(0.1), lr=c.lr, betas=(0.9, 0.99))
    with threadpool_limits(limits=1, user_api="blas"):
        train(model, opt, tr, va, tcfg, np.random.default_rng(c.seed + 1000))
        val = evaluate(model, va[:job["val_tokens"]] if job["val_tokens"] else va).nats
    tokens = steps * c.batch_size * c.context_length
    out = {"size": list(job["size"]), "tokens": tokens, "val": val,
           "n": non_embedding_parameters(mcfg), "n_total": model.num_parameters(),
           "flops": training_flops(mcfg, tokens), "epochs": tokens / len(tr)}
    if cache is not None:
        from spiral.records import atomic_write_text

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(out) + "\n")
    return out


def _optimal_loss(law: dict[str, float], compute: np.ndarray) -> np.ndarray:
    from spiral.scaling import compute_optimal

    return np.array([compute_optimal(float(C), law).loss for C in compute])


def _kn_val(config: Config) -> float:
    from spiral import data
    from spiral.evaluate import evaluate
    from spiral.ngram import NGramLM

    s = data.get_splits("shakespeare")
    lm = NGramLM(config.kn_order, smoothing="kneser_ney").fit(s.train)
    ids = lm.encode(s.val)
    return float(evaluate(lm, ids[:config.val_tokens] if config.val_tokens else ids).nats)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.scaling import allocation_exponents, compute_optimal, fit_scaling_law

    cfg = {"context_length": config.context_length, "batch_size": config.batch_size,
           "lr": config.lr, "seed": config.seed, "val_tokens": config.val_tokens}
    cache = config.cache_dir

    def job(size: tuple[int, int, int], tokens: int) -> dict[str, Any]:
        d, L, H = size
        return {**cfg, "size": list(size), "tokens": tokens,
                "cache": f"{cache}/d{d}-L{L}-H{H}-D{tokens}.json" if cache else ""}

    jobs = [job(s, t) for t in config.budgets for s in config.sizes]
    jobs.append(job(config.held_out, max(config.budgets)))
    if config.workers <= 1:
        runs = [_job(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=config.workers) as pool:
            runs = list(pool.map(_job, sorted(jobs, key=lambda j: -j["tokens"]
                                              * j["size"][0] ** 2 * j["size"][1])))
    held = next(r for r in runs if tuple(r["size"]) == config.held_out)
    sweep = [r for r in runs if r is not held]
    n = np.array([r["n"] for r in sweep], dtype=np.float64)
    d = np.array([r["tokens"] for r in sweep], dtype=np.float64)
    loss = np.array([r["val"] for r in sweep])
    fit = fit_scaling_law(n, loss, d, n_bootstrap=config.n_bootstrap, seed=config.seed)
    pred = float(fit.predict(held["n"], held["tokens"]))
    lo, hi = fit.predict_interval(held["n"], held["tokens"])
    law = fit.params
    a, b = allocation_exponents(law)
    intervals = {k: fit.interval(k) for k in law}
    # the compute at which the compute-optimal model reaches Kneser–Ney's validation loss
    grid = np.logspace(10, 22, 241)
    frontier = _optimal_loss(law, grid)
    kn_val = _kn_val(config)
    below = np.nonzero(frontier <= kn_val)[0]
    kn_compute = float(grid[below[0]]) if len(below) else None
    kn_plan = compute_optimal(kn_compute, law) if kn_compute is not None else None
    return {"runs": runs, "held_out": held, "law": law, "intervals": intervals,
            "allocation": {"a": a, "b": b}, "residual_rms": float(np.sqrt(np.mean(
                fit.residuals ** 2))),
            "held_out_pred": pred, "held_out_interval": [lo, hi],
            "held_out_inside": bool(lo <= held["val"] <= hi),
            "kn_val": kn_val, "kn_order": config.kn_order, "kn_compute": kn_compute,
            "kn_plan": None if kn_plan is None else {
                "n": kn_plan.n_params, "tokens": kn_plan.tokens,
                "tokens_per_parameter": kn_plan.tokens_per_parameter},
            "frontier": {"compute": grid.tolist(), "loss": frontier.tolist()},
            "published": {"kaplan_alpha_n": 0.076, "kaplan_alpha_d": 0.095,
                          "chinchilla_alpha": 0.34, "chinchilla_beta": 0.28}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.scaling import ScalingFit

    law = results["law"]
    fit = ScalingFit(law, np.zeros(5), np.zeros(1))
    fig, ax = new_figure(width=5.6, height=3.4)
    budgets = sorted({r["tokens"] for r in results["runs"] if r is not results["held_out"]})
    held = results["held_out"]
    for k, D in enumerate(budgets):
        pts = sorted((r["n"], r["val"]) for r in results["runs"]
                     if r["tokens"] == D and r["size"] != held["size"])
        ns = np.array([p[0] for p in pts])
        color = PALETTE[k % len(PALETTE)]
        ax.plot(ns, [p[1] for p in pts], "o", color=color, label=f"D = {D / 1e6:g} M tokens")
        grid = np.logspace(np.log10(ns.min()), np.log10(held["n"] * 1.2), 50)
        ax.plot(grid, fit.predict(grid, D), "-", color=color, lw=1)
    lo, hi = results["held_out_interval"]
    ax.vlines([held["n"]], lo, hi, color="k", lw=1, label="held-out: 95 % prediction interval")
    ax.plot([held["n"]], [results["held_out_pred"]], "s", mfc="none", color="k",
            label="held-out: predicted")
    ax.plot([held["n"]], [held["val"]], "*", color="k", ms=9, label="held-out: measured")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("validation nats/char")
    ax.legend(fontsize=7)

    fig2, ax2 = new_figure(width=5.6, height=3.0)
    C = np.array(results["frontier"]["compute"])
    ax2.plot(C, results["frontier"]["loss"], "-", color=PALETTE[0],
             label="compute-optimal L*(C) from the fit")
    ax2.plot([r["flops"] for r in results["runs"]], [r["val"] for r in results["runs"]],
             "o", ms=3, color=PALETTE[1], label="sweep runs")
    ax2.axhline(results["kn_val"], color=PALETTE[2], ls="--", lw=1,
                label=f"KN-{results['kn_order']} validation {results['kn_val']:.3f}")
    if results["kn_compute"] is not None:
        ax2.axvline(results["kn_compute"], color="0.5", lw=0.8, ls=":")
    ax2.set_xscale("log")
    ax2.set_xlim(1e11, 1e19)
    ax2.set_ylim(1.2, 3.0)
    ax2.set_xlabel("training compute C (FLOPs)")
    ax2.set_ylabel("validation nats/char")
    ax2.legend(fontsize=7)
    return {"scaling_fit": fig, "scaling_frontier": fig2}


def check(results: dict[str, Any]) -> None:
    """The fitted exponents are positive and the loss falls with N at every budget's fit."""
    assert results["law"]["alpha"] > 0 and results["law"]["beta"] > 0, results["law"]
    assert np.isfinite(results["held_out_pred"]), results["held_out_pred"]


EXPERIMENT = Experiment(
    name="architectures_scaling", stage=14, title="Our own scaling sweep",
    quick=Config(sizes=((8, 1, 2), (12, 1, 2), (16, 1, 2)),
                 budgets=(4_096, 8_192), held_out=(24, 1, 2), context_length=32, kn_order=2,
                 n_bootstrap=5, workers=1, cache_dir="", val_tokens=2048),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("alpha", f"{r['law']['alpha']:.3f}"),
                       ("beta", f"{r['law']['beta']:.3f}"),
                       ("held-out measured / predicted",
                        f"{r['held_out']['val']:.3f} / {r['held_out_pred']:.3f}")],
)
