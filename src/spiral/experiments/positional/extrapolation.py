"""The length-extrapolation study: train at one context length, score at 1×, 2×, 4×, 8×.

The same small GPT (same sizes, data, batches and recipe; one seed per run) is trained on
tiny Shakespeare's training region with each positional encoding, then scored by the
shared evaluator (:func:`spiral.evaluate.evaluate`) on a fixed prefix of the validation
split with windows of k · T_train tokens. The evaluation length is a parameter of the
scorer (``model.context_length``); the weights never change. Learned positions have no
row beyond T_train, so they are reported as not applicable there, never clamped.

What a longer window changes: each token is scored with a longer prefix on average (the
first token of every window has none), so a model that *uses* the extra context gets a
lower loss, and one whose attention breaks on positions it never saw gets a higher one.
The per-position curve at 8× separates the two: the mean NLL at each position inside the
window. Chapter: stage 9 ("The extrapolation study").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.stability.common import spread_labels
from spiral.plotting import PALETTE, new_figure

ORDER = ("learned", "sinusoidal", "rope", "alibi", "none")


@dataclass(frozen=True)
class Config:
    encodings: tuple[str, ...] = ORDER
    seeds: tuple[int, ...] = (0, 1, 2)
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    context_length: int = 64
    factors: tuple[int, ...] = (1, 2, 4, 8)
    max_steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 40
    val_tokens: int = 32_768   # scored validation prefix (a multiple of 8 · 64)
    profile_windows: int = 48  # windows of 8 · T for the per-position curve


def _data() -> tuple[Any, np.ndarray, np.ndarray]:
    from spiral.experiments.attention.common import shakespeare

    return shakespeare()


def train_one(config: Config, positional: str, seed: int,
              sinusoidal_amplitude: float | None = None) -> tuple[Any, dict[str, Any]]:
    """One GPT with ``positional`` trained with the shared loop; returns (model, info).

    ``sinusoidal_amplitude`` rescales the fixed sinusoid table (the paper's is 1).
    """
    from spiral.models.gpt import GPT, GPTConfig
    from spiral.optim import AdamW
    from spiral.train import TrainConfig, train

    tok, train_ids, val_ids = _data()
    mcfg = GPTConfig(vocab_size=tok.vocab_size, context_length=config.context_length,
                     n_layers=config.n_layers, n_heads=config.n_heads,
                     d_model=config.d_model, positional=positional)
    model = GPT(mcfg, rng=np.random.default_rng(seed))
    if sinusoidal_amplitude is not None and model.pos_enc is not None:
        model.pos_enc.amplitude = sinusoidal_amplitude
    tcfg = TrainConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                       seq_len=config.context_length, lr=config.lr,
                       warmup_steps=config.warmup_steps, eval_interval=config.max_steps,
                       eval_tokens=2048, seed=seed, progress=False, threads=1)
    opt = AdamW(model.param_groups(tcfg.weight_decay), lr=config.lr, betas=(0.9, 0.99))
    t0 = time.perf_counter()
    state = train(model, opt, train_ids, val_ids[:2048], tcfg,
                  np.random.default_rng(seed + 1000))  # same batches for every encoding
    return model, {"train_s": time.perf_counter() - t0,
                   "train_loss": state.history[-1]["train_loss"],
                   "n_params": model.num_parameters()}


def score_at(model: Any, tokens: np.ndarray, length: int) -> float | None:
    """Mean NLL (nats) with windows of ``length``; None where the encoding cannot go there."""
    from spiral.evaluate import evaluate

    trained = model.config.context_length
    if length > trained and model.config.positional == "learned":
        return None  # no trained row for those positions: not applicable, never clamped
    model.context_length = length
    try:
        return float(evaluate(model, tokens).nats)
    finally:
        model.context_length = trained


def position_profile(model: Any, tokens: np.ndarray, length: int, n_windows: int) -> list[float]:
    """Mean NLL at each position 1..length-1 inside windows of ``length`` + 1 tokens."""
    from threadpoolctl import threadpool_limits

    starts = np.arange(n_windows) * length
    win = tokens[starts[:, None] + np.arange(length + 1)[None, :]]  # (n, L + 1)
    model.context_length = length
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            nll = np.concatenate([model.window_nll(win[i:i + 8]) for i in range(0, n_windows, 8)])
    finally:
        model.context_length = model.config.context_length
    return nll.mean(0).tolist()  # (L,)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    _, _, val_ids = _data()
    val = val_ids[: config.val_tokens]
    T = config.context_length
    lengths = [f * T for f in config.factors]
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in config.encodings}
    for enc in config.encodings:
        for seed in config.seeds:
            model, info = train_one(config, enc, seed)
            info["nats"] = [score_at(model, val, L) for L in lengths]
            longest = lengths[-1] if enc != "learned" else T
            info["profile"] = position_profile(model, val, longest, config.profile_windows)
            runs[enc].append(info)
    nats: dict[str, dict[str, Any]] = {}
    rows = []
    for enc in config.encodings:
        nats[enc] = {}
        row: list[Any] = [enc]
        for j, f in enumerate(config.factors):
            vals = [r["nats"][j] for r in runs[enc]]
            if any(v is None for v in vals):
                nats[enc][f"x{f}"] = None
                row.append("n/a")
            else:
                ms = mean_sd(vals)
                nats[enc][f"x{f}"] = ms
                row.append(f"{ms['mean']:.3f} ± {ms['sd']:.3f}")
        rows.append(row)
    change = {e: (None if nats[e][f"x{config.factors[-1]}"] is None else
                  mean_sd([r["nats"][-1] - r["nats"][0] for r in runs[e]]))
              for e in config.encodings}
    profiles = {e: np.mean([r["profile"] for r in runs[e]], axis=0).tolist()
                for e in config.encodings}
    # mean NLL of positions < T vs positions ≥ T inside the longest windows
    inside_beyond = {e: {"inside": float(np.mean(p[:T])),
                         "beyond": (float(np.mean(p[T:])) if len(p) > T else None)}
                     for e, p in profiles.items()}
    return {"lengths": lengths, "factors": list(config.factors), "context_length": T,
            "nats": nats, "change_at_longest": change, "profiles": profiles,
            "inside_beyond": inside_beyond,
            "n_params": {e: runs[e][0]["n_params"] for e in config.encodings},
            "train_s": {e: mean_sd([r["train_s"] for r in runs[e]]) for e in config.encodings},
            "train_loss": {e: mean_sd([r["train_loss"] for r in runs[e]])
                           for e in config.encodings},
            "uniform_nats": float(np.log(65)),
            "table": {"columns": ["encoding"] + [f"{f}× ({f * T} tokens)"
                                                 for f in config.factors], "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=6.4, height=3.6)
    lengths = results["lengths"]
    ends = []
    for i, (enc, by_f) in enumerate(results["nats"].items()):
        pts = [(L, v["mean"], v["sd"]) for L, v in zip(lengths, by_f.values()) if v]
        xs, ms, sds = zip(*pts)
        ax.errorbar(xs, ms, yerr=sds, color=PALETTE[i], marker="o", ms=3, lw=1.2, capsize=2)
        ends.append((xs[-1], ms[-1], enc if len(xs) > 1 else f"{enc} (n/a beyond 1×)",
                     PALETTE[i]))
    ax.axvline(results["context_length"], color="#999999", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(L) for L in lengths])
    ax.set_xlim(lengths[0] * 0.8, lengths[-1] * 2.5)
    ax.set_xlabel("evaluation window (tokens); trained at the dotted line")
    ax.set_ylabel("validation NLL (nats/char)")
    spread_labels(ax, ends)
    fig2, ax2 = new_figure(width=6.4, height=3.6)
    T = results["context_length"]
    width = max(1, T // 8)  # bins of T/8 positions: single positions are too noisy
    ends2: list[tuple[float, float, str, str]] = []
    for i, (enc, prof) in enumerate(results["profiles"].items()):
        n = len(prof) // width
        binned = np.asarray(prof[: n * width]).reshape(n, width).mean(1)
        x = (np.arange(n) + 0.5) * width + 1
        ax2.plot(x, binned, color=PALETTE[i], lw=1.2, marker="o", ms=2)
        ends2.append((x[-1], binned[-1], enc, PALETTE[i]))
    ax2.axvline(T, color="#999999", lw=0.8, ls=":")
    ax2.set_xlabel(f"position inside the window (bins of {width}; trained up to the dotted line)")
    ax2.set_ylabel("mean NLL at those positions (nats)")
    spread_labels(ax2, ends2)
    return {"loss_vs_length": fig, "loss_by_position": fig2}


def check(results: dict[str, Any]) -> None:
    nats = results["nats"]
    # learned positions are never scored beyond the trained length
    assert all(nats["learned"][f"x{f}"] is None for f in results["factors"] if f > 1)
    assert nats["learned"]["x1"] is not None
    for enc, by_f in nats.items():
        for f, v in by_f.items():
            if v is not None:
                assert np.isfinite(v["mean"]), (enc, f)
    # every trained model beats the uniform guess at its trained length
    for enc, by_f in nats.items():
        assert by_f["x1"]["mean"] < results["uniform_nats"], enc
    # ALiBi's per-position loss does not blow up beyond the trained length
    ib = results["inside_beyond"]["alibi"]
    assert ib["beyond"] is not None and ib["beyond"] < ib["inside"] + 0.1


EXPERIMENT = Experiment(
    name="positional_extrapolation", stage=9, title="Length extrapolation by encoding",
    quick=Config(seeds=(0,), n_layers=1, d_model=32, context_length=16, factors=(1, 2),
                 max_steps=40, batch_size=8, val_tokens=2048, profile_windows=8,
                 encodings=("learned", "alibi", "sinusoidal")),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"{e} {k}", "n/a" if v is None else round(v["mean"], 3))
                       for e, by in r["nats"].items() for k, v in by.items()],
)
