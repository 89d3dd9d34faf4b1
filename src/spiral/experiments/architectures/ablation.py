"""GPT-2-style vs Llama-style at equal parameters and tokens, and each change on its own.

Starting from stage 8's baby GPT (``gpt2-baby``: LayerNorm, GELU MLP, learned positions,
no biases, as nanoGPT's CPU recipe), one switch is flipped at a time:

* ``+bias``     biases on every Linear and norm (GPT-2's original block)
* ``rmsnorm``   RMSNorm instead of LayerNorm (Zhang & Sennrich 2019)
* ``swiglu``    SwiGLU FFN at the parameter-matched width h = 8·C/3 (Shazeer 2020)
* ``rope``      rotary positions instead of the learned table (Su et al. 2021)
* ``llama``     all of RMSNorm, SwiGLU and RoPE (``llama-baby``, width matched to the
                GELU model plus the position table RoPE drops)
* ``llama-gqa`` ``llama`` with 2 key/value heads for 4 query heads

Each setting trains with stage 8's recipe (2,000 steps × 12 × 64 tokens) on tiny
Shakespeare and on names, for every seed; the whole validation split is scored by the
shared evaluator. Differences are taken seed by seed with their spread (one generator
draws the weights, then the batches, so only a setting whose initialisation draws as many
numbers as the baseline's also shares its batches), and the chapter reads them whichever
way they fall. Each finished run is cached as JSON in ``cache_dir`` so an interrupted sweep
resumes where it stopped.
Chapter: stage 14, "Which changes matter here?".
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure

SETTINGS: dict[str, dict[str, Any]] = {
    "gpt2-baby": {},
    "+bias": {"bias": True},
    "rmsnorm": {"norm_type": "rmsnorm"},
    "swiglu": {"ffn_type": "swiglu", "ffn_hidden": 341},
    "rope": {"positional": "rope_halves"},
    "llama": {"preset": "llama-baby"},
    "llama-gqa": {"preset": "llama-baby", "n_kv_heads": 2},
}


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    corpora: tuple[str, ...] = ("shakespeare", "names")
    settings: tuple[str, ...] = tuple(SETTINGS)
    max_steps: int = 2000
    d_model: int = 128
    workers: int = 2
    # per-run records, committed: a sweep longer than a session resumes in the next checkout
    cache_dir: str = "docs/results/architectures_ablation/runs"   # "" = no cache


def _job(job: dict[str, Any]) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from spiral.recipes.gpt import train_gpt

    cache = Path(job["cache"]) if job["cache"] else None
    if cache is not None and cache.is_file():
        return dict(json.loads(cache.read_text(encoding="utf-8")))
    from spiral.models.gpt import PRESETS, _matched_swiglu_hidden

    over = dict(SETTINGS[job["setting"]])
    preset = over.pop("preset", "gpt2-baby")
    over = {**{k: v for k, v in PRESETS[preset].items()
               if PRESETS["gpt2-baby"].get(k) != v}, **over}
    if job["d_model"] != 128:  # the quick variant's tiny model
        over.update(d_model=job["d_model"], n_layers=1)
        if "ffn_hidden" in over:
            over["ffn_hidden"] = int(round(8 * job["d_model"] / 3))
        if preset == "llama-baby":
            over["ffn_hidden"] = _matched_swiglu_hidden(64, 1, job["d_model"])
    train = {"max_steps": job["max_steps"], "eval_interval": job["max_steps"],
             "warmup_steps": min(100, job["max_steps"] // 4)}
    with threadpool_limits(limits=1, user_api="blas"):
        r = train_gpt(job["corpus"], preset="baby", seed=job["seed"], progress=False,
                      model_overrides=over, train_overrides=train)
    out = {"corpus": job["corpus"], "setting": job["setting"], "seed": job["seed"],
           "val": r["val_nats"], "n_params": r["config"]["n_parameters"],
           "train_s": r["train_s"]}
    if cache is not None:
        from spiral.records import atomic_write_text

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(out) + "\n")
    return out


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    jobs = [{"corpus": c, "setting": s, "seed": seed, "max_steps": config.max_steps,
             "d_model": config.d_model,
             "cache": (f"{config.cache_dir}/{c}-{s}-{seed}.json" if config.cache_dir
                       else "")}
            for seed in config.seeds for c in config.corpora for s in config.settings]
    if config.workers <= 1:
        runs = [_job(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=config.workers) as pool:
            runs = list(pool.map(_job, jobs))

    def val(c: str, s: str, seed: int) -> float:
        return next(r["val"] for r in runs
                    if r["corpus"] == c and r["setting"] == s and r["seed"] == seed)

    base = config.settings[0]
    table: dict[str, Any] = {}
    rows = []
    for s in config.settings:
        n_params = {c: next(r["n_params"] for r in runs if r["corpus"] == c
                            and r["setting"] == s) for c in config.corpora}
        entry: dict[str, Any] = {"n_params": n_params}
        cells = [s, f"{n_params[config.corpora[0]]:,}"]
        for c in config.corpora:
            v = mean_sd([val(c, s, seed) for seed in config.seeds])
            d = mean_sd([val(c, s, seed) - val(c, base, seed) for seed in config.seeds])
            entry[c] = {"val": v, "diff": d}
            cells += [f"{v['mean']:.3f} ± {v['sd']:.3f}",
                      "—" if s == base else f"{d['mean']:+.3f} ± {d['sd']:.3f}"]
        table[s] = entry
        rows.append(cells)
    columns = ["setting", "parameters"]
    for c in config.corpora:
        columns += [f"{c} validation", f"{c} − {base} (paired)"]
    out: dict[str, Any] = {"settings": table, "runs": runs, "base": base,
                           "table": {"columns": columns, "rows": rows}}
    # Is the whole the sum of its parts? llama flips rmsnorm, swiglu and rope together (its
    # FFN a little wider, to spend the parameters the position table no longer holds):
    # the paired interaction, seed by seed, is llama's change minus the three single ones.
    parts = [s for s in ("rmsnorm", "swiglu", "rope") if s in config.settings]
    if "llama" in config.settings and len(parts) == 3:
        out["interaction"] = {c: mean_sd([
            (val(c, "llama", seed) - val(c, base, seed))
            - sum(val(c, s, seed) - val(c, base, seed) for s in parts)
            for seed in config.seeds]) for c in config.corpora}
        out["sum_of_parts"] = {c: mean_sd([
            sum(val(c, s, seed) - val(c, base, seed) for s in parts)
            for seed in config.seeds]) for c in config.corpora}
    if {"llama", "llama-gqa"} <= set(config.settings):  # what halving the KV heads costs
        out["gqa_cost"] = {c: mean_sd([val(c, "llama-gqa", seed) - val(c, "llama", seed)
                                       for seed in config.seeds]) for c in config.corpora}
    from spiral.recipes.gpt import RECIPES

    r = RECIPES["baby"]
    out["budget"] = {"steps": config.max_steps, "batch_size": r["batch_size"],
                     "context": r["seq_len"],
                     "tokens": config.max_steps * r["batch_size"] * r["seq_len"],
                     "seeds": len(config.seeds)}
    # the baseline's seed-to-seed spread: the yardstick each paired difference is read against
    out["base_sd"] = {c: table[base][c]["val"]["sd"] for c in config.corpora}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    settings = [s for s in results["settings"] if s != results["base"]]
    corpora = [c for c in results["settings"][results["base"]] if c != "n_params"]
    fig, ax = new_figure(width=5.6, height=3.2)
    y = np.arange(len(settings))
    for k, c in enumerate(corpora):
        d = [results["settings"][s][c]["diff"] for s in settings]
        ax.errorbar([x["mean"] for x in d], y + 0.15 * (2 * k - 1),
                    xerr=[x["sd"] for x in d], fmt="o", color=PALETTE[k], capsize=3,
                    label=c)
    ax.axvline(0.0, color="0.5", lw=0.8)
    ax.set_yticks(y, settings)
    ax.invert_yaxis()
    ax.set_xlabel(f"validation loss − {results['base']} (nats, paired by seed; mean ± sd)")
    ax.legend(fontsize=7)
    return {"ablation": fig}


def check(results: dict[str, Any]) -> None:
    """Every run finished with a finite loss; the Llama-style and GPT-2-style models have
    parameter counts within 3 % of each other (the comparison is at equal size)."""
    assert all(np.isfinite(r["val"]) for r in results["runs"])
    s = results["settings"]
    for c, n in s[results["base"]]["n_params"].items():
        assert abs(s["llama"]["n_params"][c] - n) / n < 0.03, (c, n, s["llama"]["n_params"])


EXPERIMENT = Experiment(
    name="architectures_ablation", stage=14,
    title="GPT-2-style vs Llama-style, one change at a time",
    quick=Config(seeds=(0,), corpora=("names",), settings=("gpt2-baby", "llama", "rope"),
                 max_steps=40, d_model=32, workers=1, cache_dir=""),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"{s} ({c})", f"{e[c]['diff']['mean']:+.3f}")
                       for s, e in r["settings"].items() if s != r["base"]
                       for c in e if c != "n_params"],
)
