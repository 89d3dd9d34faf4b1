"""Pre-LN vs post-LN residual stacks at growing depth: gradients per layer and training (stage 6).

    post-LN: x_{l+1} = LN(x_l + F(x_l))
    pre-LN:  x_{l+1} = x_l + F(LN(x_l)), and LN(x_L) at the end

In pre-LN, ∂L/∂x_l = ∂L/∂x_L · Π_{k≥l}(I + J_k) carries the top gradient unchanged down the
identity path; in post-LN every layer multiplies the gradient by a LayerNorm Jacobian, which
divides by the standard deviation of x + F(x). Xiong et al. (2020) show that at
initialization post-LN's gradients are largest near the output, and that post-LN therefore
needs learning-rate warm-up while pre-LN does not.

The network: 3 characters of context → embedding (3 × 16) → Linear to d_model → n_layers
residual MLP blocks (``spiral.nn.ResidualMLP``, GELU, 4·d_model hidden) → readout, trained on
the names split with Adam at a constant learning rate and **no warm-up**. We record
‖∂L/∂W‖ of every block's first weight at initialization, and the training loss at each
depth; a run "fails" when its final loss is more than ``fail_margin`` nats above the best
run of either placement at the same depth, or is not finite.
Chapter: stage 6 (training stability), "Pre-LN versus post-LN".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.stability.common import single_thread, spread_labels
from spiral.nn import (
    Embedding,
    FeedForward,
    Linear,
    Module,
    PostLNBlock,
    PreLNBlock,
    ResidualMLP,
)
from spiral.nn import functional as F

PLACEMENTS = ("pre", "post")


@dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (2, 8, 24)
    grad_depth: int = 24
    d_model: int = 64
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-2
    fail_margin: float = 0.15
    # a second, gentler recipe at the deepest depth: smaller lr and a linear warm-up
    gentle_lr: float = 1e-3
    warmup_steps: int = 100
    gentle: bool = True
    # separate the gentle recipe's two ingredients for post-LN at the deepest depth:
    # the large lr with warm-up, and the small lr without
    separate: bool = True
    seeds: tuple[int, ...] = (0, 1, 2)


class ResidualClassifier(Module):
    """(B, 3) context ids -> (B, V) logits through a pre- or post-LN residual MLP stack."""

    def __init__(self, vocab_size: int, n_layers: int, placement: str, d_model: int,
                 rng: np.random.Generator) -> None:
        super().__init__()
        self.emb = Embedding(vocab_size, 16, rng=rng)
        self.inp = Linear(3 * 16, d_model, rng=rng)
        self.body = ResidualMLP(d_model, n_layers, placement, 4 * d_model, rng=rng)
        self.head = Linear(d_model, vocab_size, rng=rng)

    def forward(self, x: np.ndarray) -> Tensor:
        h = self.emb(x).reshape(x.shape[0], -1)  # (B, 3, 16) -> (B, 48)
        return self.head(self.body(self.inp(h)))


def _grad_profile(placement: str, config: Config, seed: int, d: dict[str, Any]) -> list[float]:
    rng = np.random.default_rng([seed, 11])
    net = ResidualClassifier(d["vocab_size"], config.grad_depth, placement, config.d_model, rng)
    idx = rng.integers(0, len(d["x"]), 256)
    F.cross_entropy(net(d["x"][idx]), d["y"][idx]).backward()
    grads = []
    for blk in net.body.blocks:
        assert isinstance(blk, (PreLNBlock, PostLNBlock)) and isinstance(blk.sublayer, FeedForward)
        grads.append(float(np.linalg.norm(blk.sublayer.fc.weight.grad)))
    return grads


def _train(placement: str, depth: int, config: Config, seed: int, d: dict[str, Any],
           lr: float | None = None, warmup: int = 0) -> list[float]:
    from spiral.optim import Adam

    rng = np.random.default_rng([seed, depth])
    net = ResidualClassifier(d["vocab_size"], depth, placement, config.d_model, rng)
    base_lr = config.lr if lr is None else lr
    opt = Adam(net.parameters(), lr=base_lr)
    losses = []
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(config.steps):
            if warmup:  # linear warm-up from base_lr/warmup to base_lr
                opt.param_groups[0]["lr"] = base_lr * min(1.0, (step + 1) / warmup)
            idx = rng.integers(0, len(d["x"]), config.batch_size)
            loss = F.cross_entropy(net(d["x"][idx]), d["y"][idx])
            value = float(loss.item())
            losses.append(value)
            if not math.isfinite(value):
                break
            loss.backward()
            opt.step()
            opt.zero_grad()
    return losses + [float("nan")] * (config.steps - len(losses))


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.experiments.stability.models import names_data

    d = names_data(3)
    out: dict[str, Any] = {"grad": {}, "final": {}, "curves": {}, "log_v": math.log(
        d["vocab_size"])}
    with single_thread():
        for pl in PLACEMENTS:
            profiles = [_grad_profile(pl, config, s, d) for s in config.seeds]
            out["grad"][pl] = np.mean(profiles, 0).tolist()
            out["grad"][f"{pl}_top_over_bottom"] = mean_sd([p[-1] / p[0] for p in profiles])
        for depth in config.depths:
            for pl in PLACEMENTS:
                runs = [_train(pl, depth, config, s, d) for s in config.seeds]
                tail = [float(np.mean(r[-50:])) for r in runs]
                out["final"][f"{pl}_{depth}"] = mean_sd(tail)
                k = max(1, config.steps // 40)
                out["curves"][f"{pl}_{depth}"] = np.mean(
                    [np.convolve(r, np.ones(k) / k, "valid")[::k] for r in runs], 0).tolist()
        if config.gentle:
            deepest_depth = max(config.depths)
            for pl in PLACEMENTS:
                runs = [_train(pl, deepest_depth, config, s, d, config.gentle_lr,
                               config.warmup_steps) for s in config.seeds]
                out["gentle"] = out.get("gentle", {"depth": deepest_depth,
                                                   "lr": config.gentle_lr,
                                                   "warmup": config.warmup_steps})
                out["gentle"][pl] = mean_sd([float(np.mean(r[-50:])) for r in runs])
        if config.separate:
            deepest_depth = max(config.depths)
            recipes = {"warmup_only": (config.lr, config.warmup_steps),
                       "small_lr_only": (config.gentle_lr, 0)}
            out["separate"] = {"depth": deepest_depth}
            for name, (lr, warm) in recipes.items():
                runs = [_train("post", deepest_depth, config, s, d, lr, warm)
                        for s in config.seeds]
                out["separate"][name] = {"lr": lr, "warmup": warm, "post": mean_sd(
                    [float(np.mean(r[-50:])) for r in runs])}
    rows, deepest = [], {pl: 0 for pl in PLACEMENTS}
    for depth in config.depths:
        best = min(float(np.nanmin(out["final"][f"{pl}_{depth}"]["values"]))
                   for pl in PLACEMENTS)
        row = [str(depth)]
        for pl in PLACEMENTS:
            f = out["final"][f"{pl}_{depth}"]
            ok = math.isfinite(f["mean"]) and f["mean"] <= best + config.fail_margin
            if ok and deepest[pl] == depth_before(config.depths, depth):
                deepest[pl] = depth
            row.append(f"{f['mean']:.3f} ± {f['sd']:.3f}" + ("" if ok else " (fails)"))
        rows.append(row)
    out["deepest_ok"] = deepest
    out["table"] = {"columns": ["blocks", f"pre-LN loss, last 50 of {config.steps} steps",
                                "post-LN"], "rows": rows}
    out["steps"], out["lr"], out["grad_depth"] = config.steps, config.lr, config.grad_depth
    return out


def depth_before(depths: tuple[int, ...], depth: int) -> int:
    """The previous depth in the sweep (0 for the first): 'deepest' counts an unbroken run."""
    i = depths.index(depth)
    return depths[i - 1] if i else 0


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    figs = {}
    fig, ax = new_figure(width=6.4, height=3.4)
    for i, pl in enumerate(PLACEMENTS):
        y = results["grad"][pl]
        x = list(range(1, len(y) + 1))
        ax.semilogy(x, y, color=PALETTE[i], marker="o", ms=2.5)
        direct_label(ax, x, y, f"{pl}-LN", color=PALETTE[i])
    ax.set_xlabel(f"block (1 = nearest the input) of {results['grad_depth']}")
    ax.set_ylabel("‖∂L/∂W_fc‖ at initialization")
    figs["grad_per_layer"] = fig
    depths = sorted({int(k.split("_")[1]) for k in results["curves"]})
    fig, axes = new_figure(1, len(depths), width=3.2 * len(depths), height=3.2, sharey=True)
    for ax, depth in zip(np.atleast_1d(axes), depths):
        ends = []
        for i, pl in enumerate(PLACEMENTS):
            y = results["curves"][f"{pl}_{depth}"]
            x = np.linspace(0, results["steps"], len(y)).tolist()
            ax.plot(x, y, color=PALETTE[i])
            ends.append((x[-1], y[-1], f"{pl}-LN", PALETTE[i]))
        spread_labels(ax, ends)
        ax.set_title(f"{depth} blocks, lr {results['lr']:g}, no warm-up")
        ax.set_xlabel("step")
    np.atleast_1d(axes)[0].set_ylabel("training loss (nats)")
    figs["training_by_depth"] = fig
    return figs


def check(results: dict[str, Any]) -> None:
    g = results["grad"]
    # post-LN: the gradient grows towards the output (Xiong et al.'s picture at init)
    assert g["post_top_over_bottom"]["mean"] > 1.2, g["post_top_over_bottom"]
    assert g["post_top_over_bottom"]["mean"] > g["pre_top_over_bottom"]["mean"]
    # pre-LN: the identity path spreads the same gradient over every block (within 2x)
    assert 0.5 < g["pre_top_over_bottom"]["mean"] < 2, g["pre_top_over_bottom"]
    deepest = max(int(k.split("_")[1]) for k in results["final"])
    assert results["final"][f"pre_{deepest}"]["mean"] < results["final"][f"post_{deepest}"]["mean"]
    if "gentle" in results:  # warm-up and a smaller lr rescue post-LN at the same depth
        gentle = results["gentle"]
        assert gentle["post"]["mean"] < results["final"][f"post_{deepest}"]["mean"] - 0.15
        assert gentle["post"]["mean"] < gentle["pre"]["mean"] + 0.15
    if "separate" in results:  # the smaller lr does the rescuing; warm-up alone does not
        sep = results["separate"]
        assert sep["small_lr_only"]["post"]["mean"] < sep["warmup_only"]["post"]["mean"] - 0.15
        assert sep["warmup_only"]["post"]["mean"] > results["gentle"]["post"]["mean"] + 0.15


EXPERIMENT = Experiment(
    name="stability_residual_placement", stage=6, title="Pre-LN vs post-LN at growing depth",
    quick=Config(depths=(8,), grad_depth=16, steps=120, gentle=False, separate=False,
                 seeds=(0,)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"{v['mean']:.3f}") for k, v in r["final"].items()],
    description="per-block gradient norms at init and training loss by depth, pre vs post LN",
)
