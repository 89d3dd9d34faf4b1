"""Copy two tokens at once: a task one attention head cannot do and two heads can.

Sequences of uniform random tokens from V symbols; at every position t ≥ 3 the model makes
two predictions, the token at t − 1 and the token at t − 3 (two softmax outputs of V classes
each). A one-layer GPT with H heads at the same d_model is trained in three settings:

* ``attention only``   no norms, no FFN: the logits are a linear map of x_t + MHA(x)_t;
* ``attention + norms`` the pre-LN norms and the final norm, no FFN;
* ``full block``       norms and the 4× FFN.

Key fact (derived in stage 8, "A task one head cannot do"): if one head puts weights a and b
on the two positions, its output is a·u(x_{t−1}) + b·u(x_{t−3}) + c; summing the four
conditions "predict right on (i,i), (j,j), (i,j), (j,i)" gives (b − a)·D > 0 and
(a + b)·D > 0 for the second output and the mirror image for the first, so a linear readout
gets both right only if a > b and b > a at once. Two heads each copy one token into their
own subspace. An FFN can un-mix a blend with a ≠ b, so the full block escapes the theorem.
Chapter: stage 8, "A task one head cannot do".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure

SETTINGS: dict[str, dict[str, bool]] = {
    "attention only": {"norm": False, "ffn": False},
    "attention + norms": {"norm": True, "ffn": False},
    "full block": {"norm": True, "ffn": True},
}
OFFSETS = (1, 3)


@dataclass(frozen=True)
class Config:
    settings: tuple[str, ...] = tuple(SETTINGS)
    heads: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0, 1, 2)
    vocab: int = 8
    context_length: int = 8
    d_model: int = 16
    steps: int = 400
    batch_size: int = 32
    lr: float = 0.02
    test_sequences: int = 512


def batch(rng: np.random.Generator, n: int, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (n, T) and targets (len(OFFSETS), n, T); -100 where t < max offset."""
    x = rng.integers(0, cfg.vocab, (n, cfg.context_length))
    y = np.full((len(OFFSETS), n, cfg.context_length), -100)
    m = max(OFFSETS)
    for i, k in enumerate(OFFSETS):
        y[i, :, m:] = x[:, m - k: cfg.context_length - k]
    return x, y


def train_one(cfg: Config, setting: str, heads: int, seed: int) -> dict[str, Any]:
    """Train one model; accuracy of each output on fresh test sequences."""
    from spiral.models.gpt import GPT, GPTConfig
    from spiral.nn import functional as F
    from spiral.optim import AdamW

    V = cfg.vocab
    switches = SETTINGS[setting]
    mcfg = GPTConfig(vocab_size=len(OFFSETS) * V, context_length=cfg.context_length,
                     n_layers=1, n_heads=heads, d_model=cfg.d_model, tie_weights=False,
                     norm=switches["norm"], ffn=switches["ffn"])
    model = GPT(mcfg, rng=np.random.default_rng(seed))
    opt = AdamW(model.param_groups(0.0), lr=cfg.lr)
    rng = np.random.default_rng(seed + 1000)
    for _ in range(cfg.steps):
        x, y = batch(rng, cfg.batch_size, cfg)
        logits = model(x)
        loss = sum(F.cross_entropy(logits[..., i * V:(i + 1) * V], y[i])
                   for i in range(len(OFFSETS)))
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        opt.zero_grad()
    x, y = batch(np.random.default_rng(10_000 + seed), cfg.test_sequences, cfg)
    logits = model(x).data
    m = max(OFFSETS)
    acc = [float((logits[:, m:, i * V:(i + 1) * V].argmax(-1) == y[i][:, m:]).mean())
           for i in range(len(OFFSETS))]
    return {"accuracy": acc, "worse": min(acc), "n_params": model.num_parameters()}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"by": {}, "chance": 1.0 / config.vocab,
                           "bound_one_head": 1.0 - (config.vocab - 1) / config.vocab ** 2}
    rows = []
    for s in config.settings:
        for h in config.heads:
            runs = [train_one(config, s, h, seed) for seed in config.seeds]
            rec = {f"offset_{k}": mean_sd([r["accuracy"][i] for r in runs])
                   for i, k in enumerate(OFFSETS)}
            rec["worse"] = mean_sd([r["worse"] for r in runs])
            rec["n_params"] = runs[0]["n_params"]
            out["by"][f"{s}, {h}"] = rec
            rows.append([s, h, f"{rec['n_params']:,}"]
                        + [f"{rec[f'offset_{k}']['mean']:.3f} ± {rec[f'offset_{k}']['sd']:.3f}"
                           for k in OFFSETS])
    out["table"] = {"columns": ["block", "heads", "parameters", "copies x(t−1)",
                                "copies x(t−3)"], "rows": rows}
    out["n_seeds"] = len(config.seeds)
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    keys = list(results["by"])
    fig, ax = new_figure(width=6.4, height=3.2)
    y = np.arange(len(keys))
    means = [results["by"][k]["worse"]["mean"] for k in keys]
    for yi, k in zip(y, keys):
        vals = results["by"][k]["worse"]["values"]
        ax.plot(vals, [yi] * len(vals), "o", color=PALETTE[1], ms=4, alpha=0.7)
    ax.plot(means, y, "|", color=PALETTE[0], ms=14, mew=2)
    ax.axvline(results["chance"], color="#888888", lw=0.8, ls=":")
    ax.text(results["chance"], -0.75, " chance (1/V)", fontsize=8, color="#666666")
    ax.set_ylim(len(keys) - 0.5, -1.0)
    ax.set_yticks(y, [k.replace(", ", ", H = ") for k in keys])
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("test accuracy of the worse of the two copies (dots: seeds; bar: mean)")
    ax.set_title("Copy the tokens at t−1 and t−3 at once (V = 8, d_model = 16)", fontsize=9)
    return {"two_offset_copy": fig}


def check(results: dict[str, Any]) -> None:
    """One head fails the theorem's setting in every seed; two heads solve it in every seed."""
    one = results["by"]["attention only, 1"]["worse"]["values"]
    two = results["by"]["attention only, 2"]["worse"]["values"]
    assert max(one) <= results["bound_one_head"], one
    assert max(one) < 0.5, one
    assert min(two) > 0.99, two


EXPERIMENT = Experiment(
    name="transformer_two_offset_copy", stage=8,
    title="Copying two tokens at once: one head against several",
    quick=Config(settings=("attention only",), heads=(1, 2), steps=200, test_sequences=256),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"{v['worse']['mean']:.3f}") for k, v in r["by"].items()],
)
