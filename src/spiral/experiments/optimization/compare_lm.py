"""Optimizers compared on the stage-4 MLP language model: loss vs steps, vs time, memory.

The stage-4 ``MLPLanguageModel`` on names, trained by the shared loop (``spiral.train``,
its default warmup + cosine schedule, no clipping so only the optimizer differs) with SGD,
SGD + momentum 0.9, RMSprop, Adam and AdamW (weight decay 0.1 on matrices). Each
optimizer's learning rate is first chosen on a 4-point grid by the loss on the *tune* split
(the last 10 % of the training names); then every optimizer trains from the same
initialisations and batches (3 seeds) and is scored once on validation. We record the
validation curve against steps and against wall-clock seconds, the time per step, and the
optimizer's state in floats per parameter (what ``Optimizer.state`` actually holds).
Chapter: stage 5, "Optimizers on a real language model".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.optim import SGD, Adam, AdamW, RMSprop

OPTIMIZERS: dict[str, Callable[..., Any]] = {
    "SGD": lambda groups, lr: SGD(groups, lr=lr),
    "momentum": lambda groups, lr: SGD(groups, lr=lr, momentum=0.9),
    "RMSprop": lambda groups, lr: RMSprop(groups, lr=lr),
    "Adam": lambda groups, lr: Adam(groups, lr=lr),
    "AdamW": lambda groups, lr: AdamW(groups, lr=lr),
}


@dataclass(frozen=True)
class Config:
    optimizers: tuple[str, ...] = ("SGD", "momentum", "RMSprop", "Adam", "AdamW")
    lr_grids: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("SGD", (0.3, 1.0, 3.0, 10.0)), ("momentum", (0.1, 0.3, 1.0, 3.0)),
        ("RMSprop", (3e-3, 1e-2, 3e-2, 1e-1)), ("Adam", (3e-3, 1e-2, 3e-2, 1e-1)),
        ("AdamW", (3e-3, 1e-2, 3e-2, 1e-1)),
    )
    steps: int = 1500
    tune_steps: int = 500
    batch_size: int = 32
    seq_len: int = 32
    eval_interval: int = 100
    eval_tokens: int = 4000
    d_hidden: int = 128
    seeds: tuple[int, ...] = (0, 1, 2)


@lru_cache(maxsize=1)
def _names_ids() -> dict[str, Any]:
    from spiral import data
    from spiral.tokenizers.char import CharTokenizer

    s = data.get_splits("names")
    fit, tune = s.tune_split()
    tok = CharTokenizer.from_text(s.train)
    return {"vocab_size": tok.vocab_size, "train": tok.encode_array(s.train),
            "fit": tok.encode_array(fit), "tune": tok.encode_array(tune),
            "val": tok.encode_array(s.val)}


def _fit(config: Config, name: str, lr: float, seed: int, steps: int, train_key: str,
         val_key: str) -> dict[str, Any]:
    from spiral import train as T
    from spiral.models.mlp import MLPConfig, MLPLanguageModel
    from spiral.nn.module import param_groups

    d = _names_ids()
    model = MLPLanguageModel(MLPConfig(vocab_size=d["vocab_size"], n_context=3, d_embed=10,
                                       d_hidden=config.d_hidden, n_layers=1),
                             rng=np.random.default_rng(seed))
    wd = 0.1 if name == "AdamW" else 0.0
    opt = OPTIMIZERS[name](param_groups(model, wd), lr)
    tc = T.TrainConfig(max_steps=steps, batch_size=config.batch_size, seq_len=config.seq_len,
                       eval_interval=config.eval_interval, eval_tokens=config.eval_tokens,
                       grad_clip=0.0, progress=False, seed=seed)
    step_time = [0.0]
    inner_step = opt.step

    def timed_step(closure: Any = None) -> Any:        # time the optimizer's share alone
        t = time.perf_counter()
        out = inner_step(closure)
        step_time[0] += time.perf_counter() - t
        return out

    opt.step = timed_step
    t0 = time.perf_counter()
    state = T.train(model, opt, d[train_key], d[val_key], tc, np.random.default_rng(seed + 100))
    wall = time.perf_counter() - t0
    n_params = sum(p.data.size for p in model.parameters())
    n_state = sum(v.size for s in opt.state.values() for v in s.values()
                  if isinstance(v, np.ndarray))
    hist = state.history
    return {"steps": [h["step"] for h in hist], "val": [h["val_loss"] for h in hist],
            "train": [h["train_loss"] for h in hist], "final": float(hist[-1]["val_loss"]),
            "wall": wall, "opt_seconds": step_time[0], "state_per_param": n_state / n_params,
            "n_params": n_params}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.experiments.stability.common import single_thread

    grids = dict(config.lr_grids)
    out: dict[str, Any] = {"tuning": {}, "chosen_lr": {}, "by_optimizer": {}}
    rows = []
    with single_thread():                               # fair timings: one BLAS thread each
        for name in config.optimizers:
            tune = {lr: _fit(config, name, lr, config.seeds[0], config.tune_steps, "fit",
                             "tune")["final"] for lr in grids[name]}
            finite = {k: v for k, v in tune.items() if np.isfinite(v)}
            lr = min(finite, key=finite.__getitem__)
            out["tuning"][name] = {f"{k:g}": v for k, v in tune.items()}
            out["chosen_lr"][name] = lr
            out.setdefault("lr_at_grid_top", {})[name] = lr == max(grids[name])
            runs = [_fit(config, name, lr, s, config.steps, "train", "val")
                    for s in config.seeds]
            per_step = [r["wall"] / config.steps for r in runs]
            entry = {
                "lr": lr, "final_val": mean_sd([r["final"] for r in runs]),
                "ms_per_step": mean_sd([1e3 * t for t in per_step]),
                "optimizer_ms_per_step": mean_sd([1e3 * r["opt_seconds"] / config.steps
                                                  for r in runs]),
                "state_per_param": runs[0]["state_per_param"], "n_params": runs[0]["n_params"],
                "steps": runs[0]["steps"],
                "val_curve": np.mean([r["val"] for r in runs], axis=0).tolist(),
                "seconds": (np.asarray(runs[0]["steps"]) * float(np.mean(per_step))).tolist(),
            }
            out["by_optimizer"][name] = entry
            # floats held per parameter: the parameter, its gradient, the optimizer's state
            floats = 2 + entry["state_per_param"]
            rows.append([name, f"{lr:g}",
                         f"{entry['final_val']['mean']:.3f} ± {entry['final_val']['sd']:.3f}",
                         f"{entry['ms_per_step']['mean']:.2f}",
                         f"{entry['optimizer_ms_per_step']['mean']:.3f}",
                         f"{entry['state_per_param']:g}", f"{floats:g} ({4 * floats:g} B fp32)",
                         f"{(1 + entry['state_per_param']) / 1:g}×"])
    out["table"] = {"columns": ["optimizer", "lr (tuned)", "val loss (nats)", "ms per step",
                                "of which optimizer (ms)",
                                "state floats / param", "floats / param incl. θ and grad",
                                "memory vs SGD (θ + state)"], "rows": rows}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    fig, (a1, a2) = new_figure(1, 2, width=9.5, height=3.6, sharey=True)
    finals = {name: e["val_curve"][-2] for name, e in results["by_optimizer"].items()}
    rank = {name: r for r, name in enumerate(sorted(finals, key=finals.__getitem__))}
    for i, (name, e) in enumerate(results["by_optimizer"].items()):
        color = PALETTE[i % len(PALETTE)]
        # the last record scores the whole validation split, the others a fixed prefix:
        # plot the prefix estimates only, so the curve is one quantity
        steps, secs, val = e["steps"][:-1], e["seconds"][:-1], e["val_curve"][:-1]
        a1.plot(steps, val, color=color)
        a2.plot(secs, val, color=color)
        dy = 9 * rank[name]   # labels stacked upwards in final order, lowest at its line
        direct_label(a1, steps, val, name, color=color, dy=dy)
        direct_label(a2, secs, val, name, color=color, dy=dy)
    a2.margins(x=0.02)
    a2.set_xlim(right=a2.get_xlim()[1] * 1.12)   # room for the labels at the curves' ends
    a1.set_xlabel("optimizer step")
    a1.set_ylabel("validation loss (nats, 4000-token prefix)")
    a2.set_xlabel("wall-clock seconds (1 thread)")
    a1.set_title("loss vs steps (mean of 3 seeds)")
    a2.set_title("loss vs time")
    return {"compare": fig}


def check(results: dict[str, Any]) -> None:
    by = results["by_optimizer"]
    # what the optimizer stores, per parameter: SGD 0, momentum 1, RMSprop 1, Adam(W) 2
    expected = {"SGD": 0, "momentum": 1, "RMSprop": 1, "Adam": 2, "AdamW": 2}
    for name, e in by.items():
        assert e["state_per_param"] == expected[name], (name, e["state_per_param"])
    # every optimizer learns: well under the uniform-guess loss log(vocab) ≈ 3.3
    assert all(e["final_val"]["mean"] < 3.0 for e in by.values())
    # Adam beats plain SGD at the same step budget on this model
    assert by["Adam"]["final_val"]["mean"] < by["SGD"]["final_val"]["mean"]


EXPERIMENT = Experiment(
    name="optim_compare_lm", stage=5, title="Optimizers on the MLP language model",
    quick=Config(optimizers=("SGD", "Adam"), steps=200, tune_steps=100, eval_interval=100,
                 eval_tokens=2000, d_hidden=64, seeds=(0,),
                 lr_grids=(("SGD", (0.3,)), ("Adam", (3e-3,)))),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"val {v['final_val']['mean']:.3f}, {v['ms_per_step']['mean']:.1f} ms")
                       for k, v in r["by_optimizer"].items()],
    description="SGD, momentum, RMSprop, Adam, AdamW on the stage-4 MLP: loss, time, memory",
)
