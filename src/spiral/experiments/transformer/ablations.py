"""Ablations of the transformer block: what each component is worth, measured.

A 4-layer GPT (d_model 64, 4 heads, context 32) is trained with the same recipe, seeds and
batches in six variants, and scored on the same validation prefix:

* ``full``         pre-LN blocks, residuals, LayerNorm, 4× FFN, 4 heads (the reference);
* ``no residual``  x ← F(LN x): every layer must re-encode everything;
* ``no norm``      x ← x + F(x), no LayerNorm anywhere (nor the final one);
* ``no FFN``       attention-only blocks (the FFN's 2·4·d² parameters per layer removed);
* ``one head``     one 64-wide head instead of four 16-wide ones (same parameters);
* ``post-LN``      LN(x + F(x)), the 2017 placement, same warm-up.

Reports mean ± sd over seeds and the gap to ``full``. Chapter: stage 8, "Ablations".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.transformer.common import SmallRecipe, small_gpt, train_small
from spiral.plotting import PALETTE, new_figure

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no residual": {"residual": False},
    "no norm": {"norm": False},
    "no FFN": {"ffn": False},
    "one head": {"n_heads": 1},
    "post-LN": {"placement": "post"},
}


@dataclass(frozen=True)
class Config:
    variants: tuple[str, ...] = tuple(VARIANTS)
    seeds: tuple[int, ...] = (0, 1, 2)
    recipe: SmallRecipe = SmallRecipe()


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"variants": list(config.variants), "by_variant": {}}
    for name in config.variants:
        vals: list[float] = []
        secs: list[float] = []
        params = 0
        for seed in config.seeds:
            model = small_gpt(config.recipe, seed, **VARIANTS[name])
            r = train_small(model, config.recipe, seed)
            vals.append(r["val_nats"])
            params = r["n_params"]
            secs.append(r["seconds"])
        out["by_variant"][name] = {"val_nats": mean_sd(vals), "n_params": params,
                                   "seconds": float(np.median(secs))}
    ref = out["by_variant"]["full"]["val_nats"]["mean"]
    rows = []
    for name in config.variants:
        v = out["by_variant"][name]
        v["gap"] = v["val_nats"]["mean"] - ref
        rows.append([name, f"{v['n_params']:,}",
                     f"{v['val_nats']['mean']:.3f} ± {v['val_nats']['sd']:.3f}",
                     "—" if name == "full" else f"{v['gap']:+.3f}"])
    out["table"] = {"columns": ["variant", "parameters", "validation nats/char",
                                "vs full"], "rows": rows}
    out["n_seeds"] = len(config.seeds)
    out["uniform_nats"] = float(np.log(65))
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    names = results["variants"]
    means = [results["by_variant"][n]["val_nats"]["mean"] for n in names]
    sds = [results["by_variant"][n]["val_nats"]["sd"] for n in names]
    order = np.argsort(means)
    fig, ax = new_figure(width=6.4, height=3.0)
    y = np.arange(len(names))
    ax.barh(y, [means[i] for i in order], xerr=[sds[i] for i in order], color=PALETTE[0],
            height=0.6, error_kw={"lw": 1})
    ax.set_yticks(y, [names[i] for i in order])
    ax.invert_yaxis()
    lo = min(means) - 0.15
    ax.set_xlim(lo, max(means) + 0.15)
    for yi, i in enumerate(order):
        ax.text(means[i] + sds[i] + 0.01, yi, f"{means[i]:.3f}", va="center", fontsize=8)
    ax.set_xlabel("validation loss (nats/char; lower is better)")
    ax.set_title(f"Ablations of a 4-layer GPT, mean ± sd over {results['n_seeds']} seed(s)",
                 fontsize=9)
    return {"ablations": fig}


def check(results: dict[str, Any]) -> None:
    """The residual path is the component the deep stack cannot do without."""
    by = results["by_variant"]
    full = by["full"]["val_nats"]["mean"]
    assert by["no residual"]["val_nats"]["mean"] > full + 0.1, by
    if "one head" in by:  # same parameter count, by construction
        assert by["one head"]["n_params"] == by["full"]["n_params"]
    if "no FFN" in by:
        assert by["no FFN"]["n_params"] < by["full"]["n_params"]


EXPERIMENT = Experiment(
    name="transformer_ablations", stage=8, title="Ablations of the transformer block",
    quick=Config(variants=("full", "no residual", "one head"), seeds=(0,),
                 recipe=SmallRecipe(n_layers=4, d_model=32, context_length=16, max_steps=80,
                                    warmup_steps=10, lr=1e-2,
                                    batch_size=16, val_tokens=3_000)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(n, f"{v['val_nats']['mean']:.3f}") for n, v in r["by_variant"].items()],
)
