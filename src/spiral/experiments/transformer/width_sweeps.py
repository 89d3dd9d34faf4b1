"""Two width trade-offs of the block: the number of heads at fixed d_model, the FFN ratio.

* Heads: d_model = 64 split into n_heads ∈ {1, 2, 4, 8, 16} heads of head_dim = 64/n_heads.
  Parameters and matmul FLOPs are identical for every n_heads; what changes is how many
  attention distributions each position gets (n_heads) and how many dimensions each
  distribution's query·key similarity is computed in (head_dim).
* FFN expansion e ∈ {1, 2, 4, 8}: the hidden width e·d_model, 2·e·d_model² parameters per
  layer, the same share of the FLOPs.

Same recipe, seed and batches for every variant (see ``transformer_common``); the seed-to-
seed spread of the same model is measured in ``transformer_ablations``.
Chapter: stage 8, "The head-dimension trade-off" and "The feed-forward network".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.transformer.common import SmallRecipe, small_gpt, train_small
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    heads: tuple[int, ...] = (1, 2, 4, 8, 16)
    expansions: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    seed: int = 0
    recipe: SmallRecipe = SmallRecipe()


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    r = config.recipe
    heads, ffn = [], []
    for h in config.heads:
        res = train_small(small_gpt(r, config.seed, n_heads=h), r, config.seed)
        heads.append({"n_heads": h, "head_dim": r.d_model // h, **res})
    for e in config.expansions:
        same = e == r.expansion and r.n_heads in config.heads  # already trained above
        res = next(x for x in heads if x["n_heads"] == r.n_heads) if same else \
            train_small(small_gpt(r, config.seed, expansion=e), r, config.seed)
        ffn.append({"expansion": e, **{k: res[k] for k in ("val_nats", "train_loss",
                                                           "seconds", "n_params")}})
    best_h = min(heads, key=lambda x: x["val_nats"])
    return {
        "heads": heads, "ffn": ffn, "d_model": r.d_model, "n_layers": r.n_layers,
        "best_n_heads": best_h["n_heads"],
        "one_head_minus_best": next(x["val_nats"] for x in heads if x["n_heads"] == 1)
        - best_h["val_nats"],
        "heads_table": {"columns": ["heads", "head_dim", "parameters", "validation nats/char",
                                    "train s"],
                        "rows": [[x["n_heads"], x["head_dim"], f"{x['n_params']:,}",
                                  f"{x['val_nats']:.3f}", f"{x['seconds']:.0f}"]
                                 for x in heads]},
        "ffn_table": {"columns": ["FFN ratio", "parameters", "validation nats/char",
                                  "train s"],
                      "rows": [[f"{x['expansion']:g}×", f"{x['n_params']:,}",
                                f"{x['val_nats']:.3f}", f"{x['seconds']:.0f}"] for x in ffn]},
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, (a, b) = new_figure(1, 2, width=7.2, height=3.0)
    h = results["heads"]
    xs, ys = [x["n_heads"] for x in h], [x["val_nats"] for x in h]
    a.plot(xs, ys, "o-", color=PALETTE[0])
    a.set_xscale("log", base=2)
    a.set_xticks(xs, [f"{x}\n({results['d_model'] // x})" for x in xs])
    a.set_xlabel(f"heads (head_dim) at d_model = {results['d_model']}")
    a.set_ylabel("validation nats/char")
    f = results["ffn"]
    xs2, ys2 = [x["expansion"] for x in f], [x["val_nats"] for x in f]
    b.plot(xs2, ys2, "o-", color=PALETTE[1])
    b.set_xscale("log", base=2)
    b.set_xticks(xs2, [f"{x:g}×" for x in xs2])
    b.set_xlabel("FFN expansion ratio")
    for x, y, p in zip(xs2, ys2, [x["n_params"] for x in f], strict=True):
        b.annotate(f"{p / 1e3:.0f}k", (x, y), textcoords="offset points", xytext=(0, 6),
                   ha="center", fontsize=7)
    direct_label(b, xs2, ys2, "params", color=PALETTE[1])
    return {"width_sweeps": fig}


def check(results: dict[str, Any]) -> None:
    """Heads cost nothing extra; the FFN's parameters grow as 2·e·d_model² per layer."""
    h, f = results["heads"], results["ffn"]
    assert len({x["n_params"] for x in h}) == 1
    d, L = results["d_model"], results["n_layers"]
    for x, y in zip(f, f[1:]):
        assert y["n_params"] - x["n_params"] == round(2 * (y["expansion"] - x["expansion"])
                                                      * d * d * L)
    assert all(np.isfinite(x["val_nats"]) and x["val_nats"] < np.log(65) for x in h + f)


EXPERIMENT = Experiment(
    name="transformer_width_sweeps", stage=8, title="Heads and FFN ratio at fixed width",
    quick=Config(heads=(1, 4), expansions=(1.0, 4.0),
                 recipe=SmallRecipe(n_layers=2, d_model=32, context_length=16, max_steps=40,
                                    warmup_steps=10, lr=1e-2, val_tokens=3_000)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("best heads", r["best_n_heads"])],
)
