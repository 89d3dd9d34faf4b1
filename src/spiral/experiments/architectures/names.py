"""The modern block on names: below 1.95 nats/char on the deduplicated test split?

Stage 8's GPT-2-style model (4 layers × 128, context 64, 16,000 steps, dropout 0.2) reached
1.968 ± 0.004 on the test names. Here the same recipe runs with the Llama-style switches
(RMSNorm, SwiGLU at the width that matches stage 8's parameters, RoPE, no biases). The
context length is chosen on validation, by one seed per candidate (trials never score the
test split); then three seeds train at the chosen context and the test split is scored
once per seed by the shared evaluator. Every finished run is cached as JSON in ``cache_dir``
and every run checkpoints to ``ckpt_dir`` each 500 steps, so a sweep stopped part-way (even
mid-run) resumes where it stopped, bit-identically. Chapter: stage 14, "Names".
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.transformer.names import Config as NamesConfig
from spiral.experiments.transformer.names import _train_seed, model_config
from spiral.plotting import PALETTE, new_figure

LLAMA = {"norm_type": "rmsnorm", "ffn_type": "swiglu", "positional": "rope_halves",
         "bias": False}


@dataclass(frozen=True)
class Config:
    contexts: tuple[int, ...] = (32, 64)       # candidates, chosen on validation (seed 0)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_layers: int = 4
    d_model: int = 128
    max_steps: int = 16000
    batch_size: int = 16
    lr: float = 2e-3
    dropout: float = 0.2
    workers: int = 2
    # per-run records, committed: a sweep longer than a session resumes in the next checkout
    cache_dir: str = "docs/results/architectures_names/runs"  # "" = no cache
    # mid-run checkpoints (every 500 steps; not committed): a killed run resumes, bit-identically
    ckpt_dir: str = "runs/architectures_names"  # "" = none
    # stage 8's committed GPT-2-style result on the same split, read for the comparison
    stage8_results: str = "docs/results"  # "" = no comparison
    target: float = 1.95  # nats/char on the test names (stage 8's 1.968 carried over)


def _names_config(c: Config, T: int) -> NamesConfig:
    return replace(NamesConfig(), n_layers=c.n_layers, d_model=c.d_model, context_length=T,
                   max_steps=c.max_steps, batch_size=c.batch_size, lr=c.lr,
                   dropout=c.dropout, windows=(T,))


def _overrides(cfg: dict[str, Any]) -> dict[str, Any]:
    from spiral.models.gpt import _matched_swiglu_hidden

    return {**LLAMA, "ffn_hidden": _matched_swiglu_hidden(cfg["context_length"],
                                                          cfg["n_layers"], cfg["d_model"])}


def _train_eval(job: dict[str, Any]) -> float | None:
    """The finished model's loss on training text, in eval mode (no dropout): the first
    len(validation) characters of the training split, scored like validation. Read from the
    run's final checkpoint; beside the validation loss it shows how far the run memorised."""
    from spiral import checkpoint, data
    from spiral.evaluate import evaluate
    from spiral.models.gpt import GPT
    from spiral.tokenizers.char import CharTokenizer

    ckpt = Path(job["ckpt_dir"]) / "checkpoint.safetensors" if job.get("ckpt_dir") else None
    cfg = job["config"]
    if ckpt is None or not ckpt.is_file() or checkpoint.read_header(ckpt)["step"] != cfg[
            "max_steps"]:
        return None
    s = data.get_splits("names")
    tok = CharTokenizer.from_text(s.train)
    tr, va = tok.encode_array(s.train), tok.encode_array(s.val)
    model = GPT(model_config(NamesConfig(**cfg), tok.vocab_size, _overrides(cfg)),
                rng=np.random.default_rng(0))
    checkpoint.load(ckpt, model)
    model.eval()
    return float(evaluate(model, tr[: len(va)]).nats)


def _job(job: dict[str, Any]) -> dict[str, Any]:
    cache = Path(job["cache"]) if job["cache"] else None
    if cache is not None and cache.is_file():
        res = dict(json.loads(cache.read_text(encoding="utf-8")))
        if "train_eval" not in res and job.get("ckpt_dir"):  # a record from before the field
            res["train_eval"] = _train_eval(job)
            if res["train_eval"] is not None:
                from spiral.records import atomic_write_text

                atomic_write_text(cache, json.dumps(res) + "\n")
        return res
    cfg = job["config"]
    out = _train_seed({"config": cfg, "seed": job["seed"], "score_test": job["score_test"],
                       "model_overrides": _overrides(cfg),
                       "ckpt_dir": job.get("ckpt_dir"), "checkpoint_interval": 500})
    res = {"context": cfg["context_length"], "seed": job["seed"], "val": out["val"],
           "test": out["test"] if job["score_test"] else None,
           "n_parameters": out["n_parameters"], "train_eval": _train_eval(job)}
    if cache is not None:
        from spiral.records import atomic_write_text

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(res) + "\n")
    return res


def _map(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(jobs) == 1:
        return [_job(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(_job, jobs))


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    def job(T: int, seed: int, test: bool) -> dict[str, Any]:
        kind = "final" if test else "trial"
        return {"config": asdict(_names_config(config, T)), "seed": seed, "score_test": test,
                "cache": (f"{config.cache_dir}/{kind}-T{T}-s{seed}.json"
                          if config.cache_dir else ""),
                "ckpt_dir": (f"{config.ckpt_dir}/{kind}-T{T}-s{seed}"
                             if config.ckpt_dir else "")}

    def final(T: int, seed: int) -> dict[str, Any]:
        j = job(T, seed, True)
        if seed == config.seeds[0] and config.ckpt_dir:
            # the chosen trial IS this run (same config, seed and generator): resume its
            # finished checkpoint, which trains nothing more, and score the test split once
            j["ckpt_dir"] = job(T, seed, False)["ckpt_dir"]
        return j

    trials = _map([job(T, config.seeds[0], False) for T in config.contexts], config.workers)
    chosen = min(trials, key=lambda r: r["val"])["context"]
    finals = _map([final(chosen, s) for s in config.seeds], config.workers)
    test = mean_sd([r["test"] for r in finals])
    val = mean_sd([r["val"] for r in finals])
    out: dict[str, Any] = {}

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f}"

    rows = [[f"trial: context {r['context']} (seed {r['seed']})",
             fmt(r.get("train_eval")), f"{r['val']:.3f}", "—"] for r in trials]
    if all(r.get("train_eval") is not None for r in trials + finals):
        # validation minus training text, both in eval mode: how far each run memorised
        out["trial_gaps"] = {str(r["context"]): r["val"] - r["train_eval"] for r in trials}
        out["train_eval"] = mean_sd([r["train_eval"] for r in finals])
        out["gap"] = mean_sd([r["val"] - r["train_eval"] for r in finals])
    te = out.get("train_eval")
    rows.append([f"Llama-style {config.n_layers}×{config.d_model}, context {chosen}, "
                 f"{finals[0]['n_parameters']:,} params, {len(finals)} seeds",
                 "—" if te is None else f"{te['mean']:.3f} ± {te['sd']:.3f}",
                 f"{val['mean']:.3f} ± {val['sd']:.3f}",
                 f"{test['mean']:.3f} ± {test['sd']:.3f}"])
    if config.stage8_results:  # the GPT-2-style block of stage 8: same recipe, same split
        from math import sqrt

        from spiral.experiments.framework import load_results

        gpt = load_results("transformer_names", config.stage8_results)["results"]
        g = gpt["gpt_test"]
        # two independent sets of runs (stage 8 drew dropout from a second generator):
        # the difference of means, with the standard error of that difference
        out["vs_gpt2"] = {"gpt2_test": g, "diff": test["mean"] - g["mean"],
                          "se": sqrt(test["sd"] ** 2 / test["n"] + g["sd"] ** 2 / g["n"]),
                          "gpt2_params": gpt["n_parameters"], "kn_test": gpt["kn_best_test"]}
        rows.append([f"stage 8: GPT-2-style, context 64, {gpt['n_parameters']:,} params, "
                     f"{g['n']} seeds", "—", f"{gpt['gpt_val']['mean']:.3f} ± "
                     f"{gpt['gpt_val']['sd']:.3f}", f"{g['mean']:.3f} ± {g['sd']:.3f}"])
    out["target"] = config.target
    out["target_met"] = bool(test["mean"] <= config.target)
    return {"trials": trials, "chosen_context": chosen, "finals": finals, "test": test,
            "val": val, "n_parameters": finals[0]["n_parameters"], **out,
            "table": {"columns": ["run", "training text (eval mode)", "validation nats/char",
                                  "test nats/char"],
                      "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.0, height=2.8)
    t = results["trials"]
    ax.plot([r["context"] for r in t], [r["val"] for r in t], "o-", color=PALETTE[0],
            label="trials (seed 0, validation)")
    f = results["finals"]
    ax.plot([r["context"] for r in f], [r["test"] for r in f], "s", color=PALETTE[1],
            label="final seeds (test, scored once)")
    if "vs_gpt2" in results:  # stage 8's GPT-2-style block (test, mean ± sd) and the lines
        g = results["vs_gpt2"]["gpt2_test"]
        ax.axhspan(g["mean"] - g["sd"], g["mean"] + g["sd"], color=PALETTE[2], alpha=0.25,
                   lw=0)
        ax.axhline(g["mean"], color=PALETTE[2], lw=1,
                   label="stage 8 GPT-2-style (test, mean ± sd)")
        ax.axhline(results["vs_gpt2"]["kn_test"], color="0.4", ls="--", lw=1,
                   label="Kneser–Ney (test)")
    ax.axhline(results["target"], color="0.4", ls=":", lw=1, label="target")
    ax.set_xscale("log", base=2)
    ax.set_xticks([r["context"] for r in t], [str(r["context"]) for r in t])
    ax.set_xlabel("context length")
    ax.set_ylabel("nats/char")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return {"names_llama": fig}


def check(results: dict[str, Any]) -> None:
    """The context was chosen on validation and every final run scored the test split."""
    assert results["chosen_context"] == min(results["trials"], key=lambda r: r["val"])[
        "context"]
    assert all(r["test"] is not None and np.isfinite(r["test"]) for r in results["finals"])


EXPERIMENT = Experiment(
    name="architectures_names", stage=14, title="The modern block on names",
    quick=Config(contexts=(8, 16), seeds=(0, 1), n_layers=1, d_model=16, max_steps=60,
                 lr=1e-2, dropout=0.0, workers=1, cache_dir="", ckpt_dir="",
                 stage8_results=""),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("test", f"{r['test']['mean']:.3f} ± {r['test']['sd']:.3f}"),
                       ("context", str(r["chosen_context"]))],
)
