"""Baby GPT, crossed design: is the gap between PyTorch- and spiral-initialised runs the init?

Run from the repository root (one BLAS thread; minutes per run)::

    PYTHONPATH=src python -m benchmarks.bench_gpt_init 0 1 2                      # paired stream
    PYTHONPATH=src python -m benchmarks.bench_gpt_init --unpaired-stream 0 1 2    # unpaired

``benchmarks/bench_gpt.py --paired`` trains OUR initial weights on both engines (same
batches) and finds the engines equal to ~1e-7 nats. Its unpaired runs, though, put the three
PyTorch-initialised models below all six of ours. Two explanations remain: PyTorch's initial
weights differ in distribution from ours, or the ordering is chance. The crossed cell settles
it: PyTorch's initial weights (``torch.manual_seed(seed)``, :class:`benchmarks.torch_gpt.TorchGPT`)
trained by OUR engine on the paired run's batch stream (``default_rng(seed + 100)``). The
other cell (our weights, same stream) is the paired run's; it is retrained only for seeds the
paired result lacks. Every run records its loss curve and a 300-character sample, which
stage 8 shows as the baby GPT's training curve and text.
Writes ``docs/results/benchmarks/gpt_init_crossed/results.json`` after every run.
Chapter: stage 8, "Training the baby GPT".
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import RESULTS, save

NAME = "gpt_init_crossed"


def _initial(cfg: Any, source: str, seed: int) -> Any:
    """Our GPT holding the initial weights drawn by ``source`` ('ours' or 'torch') for seed."""
    from spiral.models.gpt import GPT

    model = GPT(cfg, rng=np.random.default_rng(seed))
    if source == "torch":
        import torch

        from benchmarks.torch_gpt import TorchGPT, copy_to_spiral

        torch.manual_seed(seed)
        copy_to_spiral(TorchGPT(cfg), model)
    return model


def run_one(source: str, seed: int, stream: int) -> dict[str, Any]:
    """The baby recipe on our engine from ``source``'s initial weights for ``seed``, on the
    batch stream ``default_rng(stream)``."""
    from spiral import data
    from spiral.generate import sample_text
    from spiral.models.gpt import GPTConfig
    from spiral.optim import AdamW
    from spiral.recipes.gpt import BETAS, RECIPES
    from spiral.tokenizers.char import CharTokenizer
    from spiral.train import TrainConfig, train

    splits = data.get_splits("shakespeare")
    tok = CharTokenizer.from_text(splits.train)
    train_ids, val_ids = tok.encode_array(splits.train), tok.encode_array(splits.val)
    cfg = GPTConfig.preset("baby", tok.vocab_size)
    model = _initial(cfg, source, seed)
    tcfg = TrainConfig(seed=seed, progress=False, **{**RECIPES["baby"], "eval_interval": 100})
    opt = AdamW(model.param_groups(tcfg.weight_decay), lr=tcfg.lr, betas=BETAS)
    state = train(model, opt, train_ids, val_ids, tcfg, np.random.default_rng(stream))
    text = sample_text(model, tok, np.random.default_rng(seed), prompt="\n", names=False,
                       max_new_tokens=300)
    return {"init": source, "seed": seed, "stream": stream, "val_nats": state.history[-1]["val_loss"],
            "curve": [{k: h[k] for k in ("step", "train_loss", "val_loss")}
                      for h in state.history],
            "sample": text, "load_avg": os.getloadavg()[0]}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-init mean ± sd, the difference of means, and the book's table."""
    from spiral.experiments.framework import mean_sd

    by = {s: [r for r in runs if r["init"] == s] for s in ("ours", "torch")}
    stats = {s: mean_sd([r["val_nats"] for r in v]) for s, v in by.items() if v}
    out: dict[str, Any] = {"runs": runs, "val_nats": stats}
    if len(stats) == 2:
        out["torch_minus_ours"] = stats["torch"]["mean"] - stats["ours"]["mean"]
        allv = [r["val_nats"] for r in runs]
        out["range"] = {"min": min(allv), "max": max(allv)}
    sampled = [r for r in runs if "sample" in r]
    if sampled:  # the book shows the first trained run's text, one row per line
        r0 = sampled[0]
        out["sample_table"] = {
            "columns": [f"sampled from the baby GPT (init {r0['init']}, seed {r0['seed']}, "
                        "temperature 1)"],
            "rows": [[line] for line in r0["sample"].strip("\n").splitlines()]}
    seeds = sorted({r["seed"] for r in runs})
    cell = {(r["init"], r["seed"]): r["val_nats"] for r in runs}
    both = [s for s in seeds if ("ours", s) in cell and ("torch", s) in cell]
    if both:  # same seed = same batches: the init's effect, seed by seed
        diffs = [cell[("torch", s)] - cell[("ours", s)] for s in both]
        out["init_difference"] = {**mean_sd(diffs), "seeds": both}
        out["max_abs_init_difference"] = max(abs(d) for d in diffs)
    out["table"] = {"columns": ["seed", "our initial weights", "PyTorch's initial weights",
                                "PyTorch's − ours"],
                    "rows": [[s] + [f"{cell[(i, s)]:.4f}" if (i, s) in cell else "—"
                                    for i in ("ours", "torch")]
                             + [f"{cell[('torch', s)] - cell[('ours', s)]:+.1e}" if s in both
                                else "—"] for s in (both or seeds)]}
    return out


def plot_curves(names: tuple[str, ...] = (NAME, NAME.replace("crossed", "stream"))) -> Path:
    """The baby GPT's loss curves (every run these benchmarks trained) into
    ``gpt_init_crossed/baby_curve.png``; reads the committed results, trains nothing."""
    from spiral.plotting import PALETTE, new_figure, save_figure

    fig, ax = new_figure(width=6.4, height=3.4)
    n = 0
    for name in names:
        path = RESULTS / name / "results.json"
        if not path.is_file():
            continue
        for r in json.loads(path.read_text())["results"]["runs"]:
            if "curve" not in r:
                continue
            steps = [c["step"] for c in r["curve"]]
            label = "train (mean of the last 100 steps)" if n == 0 else None
            ax.plot(steps, [c["train_loss"] for c in r["curve"]], color=PALETTE[0], lw=1,
                    alpha=0.7, label=label)
            ax.plot(steps[:-1], [c["val_loss"] for c in r["curve"]][:-1], color=PALETTE[1],
                    lw=1, alpha=0.7, label="validation (first 20,000 characters)" if n == 0 else None)
            ax.plot(steps[-1], r["val_nats"], "o", color=PALETTE[1], ms=4,
                    label="validation, whole split" if n == 0 else None)
            n += 1
    kn = json.loads((RESULTS.parent / "ngram_order_sweep" / "results.json").read_text())
    kn6 = kn["results"]["shakespeare"]["kneser_ney"]["val_nats_by_order"][5]
    ax.axhline(kn6, color="#888888", lw=0.8, ls=":")
    ax.text(60, kn6 - 0.06, f"Kneser–Ney, order 6 (stage 1): {kn6:.3f}", fontsize=8,
            color="#666666")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_ylim(1.4, 3.0)
    ax.legend(fontsize=8)
    ax.set_title(f"Baby GPT on tiny Shakespeare, our engine ({n} run(s))", fontsize=9)
    return save_figure(fig, RESULTS / NAME / "baby_curve.png")


def main(seeds: list[int], unpaired_stream: bool = False) -> None:
    """Both initial weights per seed on one batch stream; a cell already trained by an
    earlier benchmark on the same stream is reused. ``unpaired_stream``: the stream of the
    unpaired PyTorch runs (``default_rng(seed)``, bench_gpt --quality) instead of the
    paired one (``default_rng(seed + 100)``); results go to ``gpt_init_stream``."""
    from benchmarks.bench_fused_ops import tune_malloc

    tune_malloc()
    if unpaired_stream:
        name, other, offset = NAME.replace("crossed", "stream"), "torch", 0
        q = json.loads((RESULTS / "gpt_quality" / "results.json").read_text())["results"]
        reuse = {r["seed"]: (r["val_nats"], "benchmarks/gpt_quality (PyTorch engine)")
                 for r in q["runs"]["torch"]}
    else:
        name, other, offset = NAME, "ours", 100
        q = json.loads((RESULTS / "gpt_quality_paired" / "results.json").read_text())["results"]
        reuse = {r["seed"]: (r["spiral"], "benchmarks/gpt_quality_paired") for r in q["runs"]}
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for source in ("torch", "ours"):
            if source == other and seed in reuse:
                runs.append({"init": source, "seed": seed, "stream": seed + offset,
                             "val_nats": reuse[seed][0], "from": reuse[seed][1]})
            else:
                runs.append(run_one(source, seed, seed + offset))
            print({k: v for k, v in runs[-1].items() if k not in ("curve", "sample")},
                  flush=True)
            save(name, {"config": {"preset": "baby", "engine": "spiral", "seeds": seeds,
                                   "batches": f"default_rng(seed + {offset})",
                                   "evaluated": "whole validation split"},
                        **summarise(runs)})


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--plot"]:
        print(plot_curves())
        sys.exit(0)
    if args and args[0] == "--resummarise":  # recompute the summary of saved runs
        for name in args[1:]:
            rec = json.loads((RESULTS / name / "results.json").read_text())["results"]
            save(name, {"config": rec["config"], **summarise(rec["runs"])})
        sys.exit(0)
    unpaired = "--unpaired-stream" in args
    main([int(a) for a in args if a != "--unpaired-stream"] or [0, 1, 2], unpaired)
