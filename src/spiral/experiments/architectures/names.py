"""The modern block on names: below 1.95 nats/char on the deduplicated test split?

Stage 8's GPT-2-style model (4 layers × 128, context 64, 16,000 steps, dropout 0.2) reached
1.968 ± 0.004 on the test names. Here the same recipe runs with the Llama-style switches
(RMSNorm, SwiGLU at the width that matches stage 8's parameters, RoPE, no biases), and the
settings that recipe fixed for the other block are chosen again, on validation, for this one:
first the context length and the training length together (every pair of ``contexts`` ×
``lengths``, each a full cosine schedule to its own end, at the recipe's dropout), then, at
the chosen pair, the dropout (``dropouts``). Every trial is one seed and never scores the
test split; then three seeds train at the chosen setting and the test split is scored once
per seed by the shared evaluator. Every finished run is cached as JSON in ``cache_dir``
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
    lengths: tuple[int, ...] = (4000, 8000, 16000)  # training steps, chosen with the context
    # the first is the recipe's, used for the grid; the others (one below, one above) are
    # tried at the chosen (context, length)
    dropouts: tuple[float, ...] = (0.2, 0.1, 0.3)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_layers: int = 4
    d_model: int = 128
    batch_size: int = 16
    lr: float = 2e-3
    workers: int = 2
    # per-run records, committed: a sweep longer than a session resumes in the next checkout
    cache_dir: str = "docs/results/architectures_names/runs"  # "" = no cache
    # mid-run checkpoints (every 500 steps; not committed): a killed run resumes, bit-identically
    ckpt_dir: str = "runs/architectures_names"  # "" = none
    # stage 8's committed GPT-2-style result on the same split, read for the comparison
    stage8_results: str = "docs/results"  # "" = no comparison
    # one run of stage 8's GPT-2-style block at its own recipe (context, steps, dropout), seed
    # 0, checkpointed, so its training-text loss can be set beside the Llama block's
    gpt2_reference: tuple[int, int, float] | None = (64, 16000, 0.2)
    target: float = 1.95  # nats/char on the test names (stage 8's 1.968 carried over)


def _names_config(c: Config, T: int, steps: int, dropout: float) -> NamesConfig:
    return replace(NamesConfig(), n_layers=c.n_layers, d_model=c.d_model, context_length=T,
                   max_steps=steps, batch_size=c.batch_size, lr=c.lr, dropout=dropout,
                   windows=(T,))


def _tag(T: int, steps: int, dropout: float) -> str:
    return f"T{T}-S{steps}-d{dropout:g}"


def _key(r: dict[str, Any]) -> str:
    """A trial's key in the results, without dots (the book's result paths split on them):
    context 32, 16,000 steps, dropout 0.2 -> ``T32-S16000-d0_2``."""
    return _tag(r["context"], r["steps"], r["dropout"]).replace(".", "_")


def _overrides(cfg: dict[str, Any], block: str = "llama") -> dict[str, Any]:
    """The GPTConfig switches of ``block``: ``"llama"`` (this experiment's block, SwiGLU at
    the parameter-matched width) or ``"gpt2"`` (stage 8's block: no switches)."""
    from spiral.models.gpt import _matched_swiglu_hidden

    if block == "gpt2":
        return {}

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
    model = GPT(model_config(NamesConfig(**cfg), tok.vocab_size,
                             _overrides(cfg, job.get("block", "llama"))),
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
        # records cached before these fields existed take them from the job
        return {**res, "block": job.get("block", "llama"), "steps": job["config"]["max_steps"],
                "dropout": job["config"]["dropout"]}
    cfg = job["config"]
    out = _train_seed({"config": cfg, "seed": job["seed"], "score_test": job["score_test"],
                       "model_overrides": _overrides(cfg, job.get("block", "llama")),
                       "ckpt_dir": job.get("ckpt_dir"), "checkpoint_interval": 500})
    res = {"block": job.get("block", "llama"), "context": cfg["context_length"],
           "steps": cfg["max_steps"],
           "dropout": cfg["dropout"], "seed": job["seed"], "val": out["val"],
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
    B = config.batch_size

    def job(T: int, steps: int, dropout: float, seed: int, kind: str = "trial"
            ) -> dict[str, Any]:
        """``kind``: "trial" (validation only), "final" (scores test) or "gpt2" (stage 8's
        block at the given settings, validation only)."""
        name = f"{kind}-{_tag(T, steps, dropout)}-s{seed}"
        return {"config": asdict(_names_config(config, T, steps, dropout)), "seed": seed,
                "score_test": kind == "final", "block": "gpt2" if kind == "gpt2" else "llama",
                "cache": f"{config.cache_dir}/{name}.json" if config.cache_dir else "",
                "ckpt_dir": f"{config.ckpt_dir}/{name}" if config.ckpt_dir else ""}

    def final(T: int, steps: int, dropout: float, seed: int) -> dict[str, Any]:
        j = job(T, steps, dropout, seed, "final")
        if seed == config.seeds[0] and config.ckpt_dir:
            # the chosen trial IS this run (same config, seed and generator): resume its
            # finished checkpoint, which trains nothing more, and score the test split once
            j["ckpt_dir"] = job(T, steps, dropout, seed)["ckpt_dir"]
        return j

    s0, d0 = config.seeds[0], config.dropouts[0]
    # 1. context and training length together, at the recipe's dropout
    grid = _map([job(T, n, d0, s0) for T in config.contexts for n in config.lengths],
                config.workers)
    best = min(grid, key=lambda r: r["val"])
    T, steps = best["context"], best["steps"]
    # 2. the dropout, at the chosen context and length
    drop = [best] + _map([job(T, steps, d, s0) for d in config.dropouts[1:]],
                         config.workers)
    dropout = min(drop, key=lambda r: r["val"])["dropout"]
    trials = grid + drop[1:]
    finals = _map([final(T, steps, dropout, s) for s in config.seeds], config.workers)
    test = mean_sd([r["test"] for r in finals])
    val = mean_sd([r["val"] for r in finals])
    out: dict[str, Any] = {}

    def tokens(r: dict[str, Any]) -> float:  # training tokens, millions
        return r["steps"] * B * r["context"] / 1e6

    if config.gpt2_reference is not None:
        ref = _map([job(*config.gpt2_reference, s0, "gpt2")], 1)[0]
        ref["tokens_m"] = tokens(ref)
        if ref.get("train_eval") is not None:
            ref["gap"] = ref["val"] - ref["train_eval"]
        out["gpt2_reference"] = ref

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f}"

    for r in trials:
        r["tokens_m"] = tokens(r)
    rows = [[f"trial: context {r['context']}, {r['steps']:,} steps ({r['tokens_m']:.1f}M "
             f"tokens), dropout {r['dropout']:g}", fmt(r.get("train_eval")),
             f"{r['val']:.3f}", "—"] for r in trials]
    # validation minus training text, both in eval mode: how far each run memorised
    if all(r.get("train_eval") is not None for r in trials):
        out["trial_gaps"] = {_key(r): r["val"] - r["train_eval"] for r in trials}
    if all(r.get("train_eval") is not None for r in finals):
        out["train_eval"] = mean_sd([r["train_eval"] for r in finals])
        out["gap"] = mean_sd([r["val"] - r["train_eval"] for r in finals])
    if "gpt2_reference" in out:
        r = out["gpt2_reference"]
        rows.append([f"GPT-2-style (stage 8's block): context {r['context']}, "
                     f"{r['steps']:,} steps, dropout {r['dropout']:g} (seed 0)",
                     fmt(r.get("train_eval")), f"{r['val']:.3f}", "—"])
    te = out.get("train_eval")
    rows.append([f"Llama-style {config.n_layers}×{config.d_model}, context {T}, {steps:,} steps, "
                 f"dropout {dropout:g}, {finals[0]['n_parameters']:,} params, "
                 f"{len(finals)} seeds",
                 "—" if te is None else f"{te['mean']:.3f} ± {te['sd']:.3f}",
                 f"{val['mean']:.3f} ± {val['sd']:.3f}",
                 f"{test['mean']:.3f} ± {test['sd']:.3f}"])
    if config.stage8_results:  # the GPT-2-style block of stage 8: same recipe, same split
        from math import sqrt

        from spiral.experiments.framework import load_results

        rec = load_results("transformer_names", config.stage8_results)
        gpt, c8 = rec["results"], rec["config"]
        g = gpt["gpt_test"]
        # two independent sets of runs (stage 8 drew dropout from a second generator):
        # the difference of means, with the standard error of that difference
        out["vs_gpt2"] = {"gpt2_test": g, "diff": test["mean"] - g["mean"],
                          "se": sqrt(test["sd"] ** 2 / test["n"] + g["sd"] ** 2 / g["n"]),
                          "gpt2_params": gpt["n_parameters"], "kn_test": gpt["kn_best_test"]}
        rows.append([f"stage 8: GPT-2-style, context {c8['context_length']}, "
                     f"{c8['max_steps']:,} steps, dropout {c8['dropout']:g}, "
                     f"{gpt['n_parameters']:,} params, {g['n']} seeds", "—",
                     f"{gpt['gpt_val']['mean']:.3f} ± {gpt['gpt_val']['sd']:.3f}",
                     f"{g['mean']:.3f} ± {g['sd']:.3f}"])
    out["target"] = config.target
    out["target_met"] = bool(test["mean"] <= config.target)
    # the grid's trials by name, for the chapter's prose
    out["trial"] = {_key(r): r for r in trials}
    return {"trials": trials, "n_grid": len(grid), "chosen_context": T, "chosen_steps": steps,
            "chosen_dropout": dropout, "chosen_tokens_m": tokens(finals[0]),
            "finals": finals, "test": test, "val": val,
            "n_parameters": finals[0]["n_parameters"], "batch_size": B, **out,
            "table": {"columns": ["run", "training text (eval mode)", "validation nats/char",
                                  "test nats/char"],
                      "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, (ax, gx) = new_figure(ncols=2, width=7.0, height=2.9)
    grid = results["trials"][: results["n_grid"]]
    extra = results["trials"][results["n_grid"]:]
    for i, T in enumerate(sorted({r["context"] for r in grid})):
        rs = sorted((r for r in grid if r["context"] == T), key=lambda r: r["tokens_m"])
        lab = f"context {T}, dropout {rs[0]['dropout']:g}"
        ax.plot([r["tokens_m"] for r in rs], [r["val"] for r in rs], "o-", color=PALETTE[i],
                label=lab)
        if all(r.get("train_eval") is not None for r in rs):
            gx.plot([r["tokens_m"] for r in rs], [r["val"] - r["train_eval"] for r in rs],
                    "o-", color=PALETTE[i], label=lab)
    for k, r in enumerate(extra):  # the dropout trials at the chosen context and length
        mk = "^v<>"[k % 4]
        ax.plot([r["tokens_m"]], [r["val"]], mk, color="0.3", ms=5,
                label=f"dropout {r['dropout']:g} (context {r['context']})")
        if r.get("train_eval") is not None:
            gx.plot([r["tokens_m"]], [r["val"] - r["train_eval"]], mk, color="0.3", ms=5)
    ref = results.get("gpt2_reference")
    if ref is not None:
        ax.plot([ref["tokens_m"]], [ref["val"]], "*", color=PALETTE[2], ms=7,
                label="GPT-2-style, stage 8's recipe (seed 0)")
        if "gap" in ref:
            gx.plot([ref["tokens_m"]], [ref["gap"]], "*", color=PALETTE[2], ms=7)
    f = results["finals"]
    # drawn a little to the right of their setting, so they do not hide the trials there
    ax.plot([results["chosen_tokens_m"] * 1.07] * len(f), [r["test"] for r in f], "s",
            color=PALETTE[3], ms=4, label="final seeds (test, scored once)")
    if "vs_gpt2" in results:  # stage 8's GPT-2-style block (test, mean ± sd) and the lines
        g = results["vs_gpt2"]["gpt2_test"]
        ax.axhspan(g["mean"] - g["sd"], g["mean"] + g["sd"], color=PALETTE[2], alpha=0.25,
                   lw=0)
        ax.axhline(g["mean"], color=PALETTE[2], lw=1,
                   label="stage 8 GPT-2-style (test, mean ± sd)")
        ax.axhline(results["vs_gpt2"]["kn_test"], color="0.4", ls="--", lw=1,
                   label="Kneser–Ney (test)")
    ax.axhline(results["target"], color="0.4", ls=":", lw=1, label="target")
    ticks = sorted({round(r["tokens_m"], 1) for r in grid})
    for a in (ax, gx):
        a.set_xscale("log", base=2)
        a.set_xticks(ticks, [f"{t:g}" for t in ticks])
        a.minorticks_off()
        a.set_xlabel("training tokens (millions)")
    ax.set_ylabel("nats/char")
    ax.set_title("validation (trials) and test (final seeds)", fontsize=8)
    gx.set_ylabel("validation − training text (nats)")
    gx.set_title("gap to the training text", fontsize=8)
    ax.legend(fontsize=5.5, loc="upper right")
    return {"names_llama": fig}


def check(results: dict[str, Any]) -> None:
    """The context and length were chosen on validation, then the dropout, and every final
    run scored the test split."""
    grid = results["trials"][: results["n_grid"]]
    best = min(grid, key=lambda r: r["val"])
    assert (results["chosen_context"], results["chosen_steps"]) == (best["context"],
                                                                    best["steps"])
    drop = [best] + results["trials"][results["n_grid"]:]
    assert results["chosen_dropout"] == min(drop, key=lambda r: r["val"])["dropout"]
    assert all(r["test"] is not None and np.isfinite(r["test"]) for r in results["finals"])


EXPERIMENT = Experiment(
    name="architectures_names", stage=14, title="The modern block on names",
    quick=Config(contexts=(8, 16), lengths=(30, 60), dropouts=(0.0, 0.1), seeds=(0, 1),
                 n_layers=1, d_model=16, lr=1e-2, workers=1, cache_dir="", ckpt_dir="",
                 stage8_results="", gpt2_reference=(16, 60, 0.0)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("test", f"{r['test']['mean']:.3f} ± {r['test']['sd']:.3f}"),
                       ("chosen", f"context {r['chosen_context']}, {r['chosen_steps']} steps, "
                                  f"dropout {r['chosen_dropout']:g}")],
)
