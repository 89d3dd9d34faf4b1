"""A small GPT on names (deduplicated 80/10/10 split) against Kneser–Ney, on the TEST split.

Kneser–Ney orders 3–6 are fitted on the training names and the best order is chosen on
validation; the GPT recipe below was fixed on validation before test was scored (the
one-seed trials are in ``docs/lab-notes.md``). Both are then scored once on the test split
with the shared evaluator (names as one stream, newline = end of name).

Two measurements explain the recipe. *Window cuts*: the evaluator scores a stream in
windows of the model's context length T, so a name that straddles a window boundary is
predicted without its beginning; the expected fraction of such targets is E[k]/T (k = the
target's offset inside its name), and the same trained GPT is scored at several T to
measure the excess loss per cut target. *Leakage*: the Kneser–Ney model is also scored on
makemore's lecture split, which keeps duplicate names, to show what leakage is worth.
Seeds train in parallel worker processes (one BLAS thread each); each seed's result
depends on its seed only. Chapter: stage 8, "Names".
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    context_length: int = 64
    max_steps: int = 16000
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 100
    dropout: float = 0.2
    kn_orders: tuple[int, ...] = (3, 4, 5, 6)
    windows: tuple[int, ...] = (8, 16, 32, 64)       # evaluation windows for the trained GPT
    kn_windows: tuple[int, ...] = (8, 16, 32, 64, 256)
    workers: int = 3                                  # seeds trained in parallel


def cut_fraction(names: list[str], T: int) -> float:
    """Expected fraction of scored targets whose name began before their window.

    A target at offset k inside its name (k = 0 for the first letter, k = n for the
    newline after an n-letter name) needs k + 1 tokens of context to see the whole name.
    At window position j (uniform on 1..T) it has j, so it is cut when j <= k:
    P(cut) = min(k, T) / T, averaged over every target.
    """
    num = sum(min(k, T) for n in names for k in range(len(n) + 1))
    den = sum(len(n) + 1 for n in names)
    return num / (den * T)


def model_config(c: Config, vocab_size: int, overrides: dict[str, Any]) -> Any:
    """The GPTConfig of a names run: the recipe's shape plus ``overrides`` (stage 14's
    Llama switches)."""
    from spiral.models.gpt import GPTConfig

    return GPTConfig(vocab_size=vocab_size, context_length=c.context_length,
                     n_layers=c.n_layers, n_heads=c.n_heads, d_model=c.d_model,
                     dropout=c.dropout, **overrides)


def _train_seed(job: dict[str, Any]) -> dict[str, Any]:
    """One seed: train on the fixed split, score validation at every window and test once
    (``job["score_test"] = False`` for a tuning trial, which must not look at test;
    ``job["model_overrides"]``: extra GPTConfig fields, e.g. stage 14's Llama switches)."""
    from threadpoolctl import threadpool_limits

    from spiral import data
    from spiral.evaluate import evaluate
    from spiral.models.gpt import GPT
    from spiral.optim import AdamW
    from spiral.tokenizers.char import CharTokenizer
    from spiral.train import TrainConfig, resume, train

    c, seed = Config(**job["config"]), job["seed"]
    s = data.get_splits("names")
    assert s.test is not None
    tok = CharTokenizer.from_text(s.train)
    tr, va, te = (tok.encode_array(x) for x in (s.train, s.val, s.test))
    cfg = model_config(c, tok.vocab_size, job.get("model_overrides", {}))
    ckpt_dir = job.get("ckpt_dir") or None  # long runs: checkpoint and resume from here
    model_rng = np.random.default_rng(seed)
    model = GPT(cfg, rng=model_rng)
    tcfg = TrainConfig(max_steps=c.max_steps, batch_size=c.batch_size,
                       seq_len=c.context_length, lr=c.lr, warmup_steps=c.warmup_steps,
                       eval_interval=c.max_steps, seed=seed, progress=False,
                       checkpoint_interval=job.get("checkpoint_interval", 0))
    opt = AdamW(model.param_groups(0.1), lr=c.lr, betas=(0.9, 0.99))
    # A checkpointed run draws init, dropout and batches from ONE generator, which the
    # checkpoint saves and restores in place, so a resumed run is bit-identical to an
    # uninterrupted one (stage 8's runs keep their two generators and their numbers).
    rng = model_rng if ckpt_dir is not None else np.random.default_rng(seed + 1000)
    meta = {"config": job["config"], "seed": seed,
            "model_overrides": job.get("model_overrides", {})}
    state = None
    if ckpt_dir is not None and (Path(ckpt_dir) / "checkpoint.safetensors").is_file():
        state = resume(Path(ckpt_dir) / "checkpoint.safetensors", model, opt, rng, meta=meta)
    with threadpool_limits(limits=1, user_api="blas"):
        state = train(model, opt, tr, va, tcfg, rng, out_dir=ckpt_dir, state=state,
                      checkpoint_meta=meta if ckpt_dir is not None else None,
                      until=job.get("until"))
        if state.step < c.max_steps:  # stopped early on purpose (``until``): not scored
            return {"seed": seed, "step": state.step}
        by_window = {}
        for T in c.windows:
            model.context_length = T
            by_window[str(T)] = evaluate(model, va).nats
        model.context_length = c.context_length
        test = evaluate(model, te).nats if job.get("score_test", True) else float("nan")
    return {"seed": seed, "val": state.history[-1]["val_loss"], "test": test,
            "train_loss": state.history[-1]["train_loss"], "val_by_window": by_window,
            "n_parameters": model.num_parameters()}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral import data
    from spiral.evaluate import evaluate
    from spiral.ngram import NGramLM

    s = data.get_splits("names")
    assert s.test is not None
    kn = {}
    for n in config.kn_orders:
        lm = NGramLM(n, smoothing="kneser_ney").fit(s.train)
        kn[n] = {"val": evaluate(lm, lm.encode(s.val)).nats,
                 "test": evaluate(lm, lm.encode(s.test)).nats}
    best = min(kn, key=lambda n: kn[n]["val"])
    # the same best-order model scored with shorter windows, and on makemore's leaky split
    lm = NGramLM(best, smoothing="kneser_ney").fit(s.train)
    kn_by_window = {}
    for T in config.kn_windows:
        lm.context_length = T
        kn_by_window[str(T)] = evaluate(lm, lm.encode(s.val)).nats
    leaky = data.names_makemore_split()
    lm_leaky = NGramLM(best, smoothing="kneser_ney").fit(data.names_stream(leaky.train))
    train_names = set(leaky.train)
    seen = [n for n in leaky.val if n in train_names]
    unseen = [n for n in leaky.val if n not in train_names]

    def leaky_score(names: list[str]) -> float:
        return evaluate(lm_leaky, lm_leaky.encode(data.names_stream(names))).nats

    kn_leaky = {"all": leaky_score(leaky.val), "seen": leaky_score(seen),
                "unseen": leaky_score(unseen), "fraction_seen": len(seen) / len(leaky.val)}

    val_names = data.names_splits().val
    cuts = {str(T): cut_fraction(val_names, T)
            for T in sorted(set(config.windows) | set(config.kn_windows))}

    jobs = [{"config": asdict(config), "seed": seed} for seed in config.seeds]
    workers = max(1, min(config.workers, len(jobs)))
    if workers == 1:
        runs = [_train_seed(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(_train_seed, jobs))
    gpt_test = mean_sd([r["test"] for r in runs])
    gpt_val = mean_sd([r["val"] for r in runs])
    gpt_by_window = {T: mean_sd([r["val_by_window"][T] for r in runs])["mean"]
                     for T in runs[0]["val_by_window"]}
    # excess loss per cut target: least-squares slope of val loss against cut fraction
    xs = np.array([cuts[T] for T in gpt_by_window])
    ys = np.array([gpt_by_window[T] for T in gpt_by_window])
    slope, intercept = np.polyfit(xs, ys, 1)
    kxs = np.array([cuts[T] for T in kn_by_window])
    kys = np.array([kn_by_window[T] for T in kn_by_window])
    kn_slope, kn_intercept = np.polyfit(kxs, kys, 1)
    n_params = runs[0]["n_parameters"]
    rows = [[f"{n}-gram Kneser–Ney" + (" (chosen on val)" if n == best else ""),
             f"{kn[n]['val']:.3f}", f"{kn[n]['test']:.3f}"] for n in config.kn_orders]
    rows.append([f"GPT {config.n_layers}×{config.d_model}, context {config.context_length}, "
                 f"{n_params:,} params, {len(runs)} seeds",
                 f"{gpt_val['mean']:.3f} ± {gpt_val['sd']:.3f}",
                 f"{gpt_test['mean']:.3f} ± {gpt_test['sd']:.3f}"])
    win_rows = []
    for w in sorted(cuts, key=int):
        g = gpt_by_window.get(w)
        k = kn_by_window.get(w)
        win_rows.append([int(w), f"{cuts[w]:.3f}", "—" if g is None else f"{g:.3f}",
                         "—" if k is None else f"{k:.3f}"])
    return {"kn": {str(n): v for n, v in kn.items()}, "kn_best_order": best,
            "kn_best_test": kn[best]["test"], "gpt_test": gpt_test, "gpt_val": gpt_val,
            "runs": runs, "gpt_minus_kn_test": gpt_test["mean"] - kn[best]["test"],
            "n_parameters": n_params, "cut_fraction": cuts,
            "gpt_val_by_window": gpt_by_window, "kn_val_by_window": kn_by_window,
            "gpt_excess_per_cut": float(slope), "gpt_val_no_cuts": float(intercept),
            "kn_excess_per_cut": float(kn_slope), "kn_val_no_cuts": float(kn_intercept),
            "gpt_window_gain_16_to_full": gpt_by_window.get("16", float("nan"))
            - gpt_by_window[str(config.context_length)],
            "kn_leaky": kn_leaky, "kn_leak_gain": kn_leaky["unseen"] - kn_leaky["all"],
            "table": {"columns": ["model", "validation nats/char", "test nats/char"],
                      "rows": rows},
            "window_table": {"columns": ["window T", "cut fraction E[min(k,T)]/T",
                                         "GPT validation loss",
                                         f"KN-{best} validation loss"],
                             "rows": win_rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=2.6)
    labels = [f"KN-{n}" for n in results["kn"]] + ["GPT"]
    vals = [v["test"] for v in results["kn"].values()] + [results["gpt_test"]["mean"]]
    errs = [0.0] * len(results["kn"]) + [results["gpt_test"]["sd"]]
    colors = [PALETTE[0]] * len(results["kn"]) + [PALETTE[1]]
    y = np.arange(len(labels))
    ax.barh(y, vals, xerr=errs, color=colors, height=0.6)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(min(vals) - 0.1, max(vals) + 0.05)
    for yi, v in zip(y, vals, strict=True):
        ax.text(v + 0.005, yi, f"{v:.3f}", va="center", fontsize=8)
    ax.set_xlabel("test loss (nats/char; lower is better)")

    fig2, ax2 = new_figure(width=5.6, height=3.0)
    cuts = results["cut_fraction"]
    for key, slope_key, icpt_key, color, label in (
            ("gpt_val_by_window", "gpt_excess_per_cut", "gpt_val_no_cuts", PALETTE[1], "GPT"),
            ("kn_val_by_window", "kn_excess_per_cut", "kn_val_no_cuts", PALETTE[0],
             f"KN-{results['kn_best_order']}")):
        pts = results[key]
        xs = np.array([cuts[T] for T in pts])
        ys = np.array([pts[T] for T in pts])
        ax2.plot(xs, ys, "o", color=color, label=f"{label}, measured")
        grid = np.linspace(0.0, xs.max(), 20)
        ax2.plot(grid, results[icpt_key] + results[slope_key] * grid, "--", color=color,
                 lw=1, label=f"{label}, fit: {results[slope_key]:.2f} nats per cut target")
        for T, x, yv in zip(pts, xs, ys, strict=True):
            ax2.annotate(f"T={T}", (x, yv), textcoords="offset points", xytext=(4, -10),
                         fontsize=7, color=color)
    ax2.set_xlabel("fraction of targets whose name began before the window")
    ax2.set_ylabel("validation loss (nats/char)")
    ax2.legend(fontsize=7, loc="lower right")
    return {"names_test": fig, "names_window_cuts": fig2}


def check(results: dict[str, Any]) -> None:
    """The GPT beats the best Kneser–Ney order on the test names, and shorter evaluation
    windows cost both models loss (a positive excess per cut target)."""
    assert results["gpt_test"]["mean"] < results["kn_best_test"], results["table"]
    assert results["gpt_excess_per_cut"] > 0, results["window_table"]


EXPERIMENT = Experiment(
    name="transformer_names", stage=8, title="A small GPT on names vs Kneser–Ney",
    quick=Config(seeds=(0,), n_layers=2, d_model=32, context_length=32, batch_size=16,
                 max_steps=600, kn_orders=(2,), lr=1e-2, dropout=0.0, windows=(8, 32),
                 kn_windows=(8, 32), workers=1),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("GPT test", f"{r['gpt_test']['mean']:.3f}"),
                       ("best KN test", f"{r['kn_best_test']:.3f}")],
)


def trial(argv: list[str] | None = None) -> dict[str, Any]:
    """A one-seed tuning trial on validation only, e.g.
    ``python -m spiral.experiments.transformer.names d_model=128 dropout=0.2 max_steps=6000``
    (``key=value`` overrides of the full :class:`Config`; prints validation losses)."""
    import json
    import sys

    fields = {f: type(v) for f, v in asdict(Config()).items() if not isinstance(v, tuple)}
    overrides: dict[str, Any] = {}
    for kv in sys.argv[1:] if argv is None else argv:
        key, _, value = kv.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown field {key!r}; choose from {sorted(fields)}")
        overrides[key] = fields[key](value)
    config = asdict(Config())
    config.update(overrides, seeds=(0,), windows=(config["context_length"],))
    res = _train_seed({"config": config, "seed": 0, "score_test": False})
    out = {"overrides": overrides, "val": res["val"], "train_loss": res["train_loss"]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    trial()
