"""Baby GPT training iteration: our engine vs PyTorch CPU eager, side by side.

Run from the repository root::

    PYTHONPATH=src python -m benchmarks.bench_gpt [--repeats 15] [--threads 1 2]

One iteration = batch sampling + forward + backward + gradient clipping + AdamW step of the
``baby`` preset (4 layers, 4 heads, d_model 128, context 64, batch 12, tied, no biases) on
tiny Shakespeare. The peer is :class:`benchmarks.torch_gpt.TorchGPT` with identical weights
(fused QKV, ``F.scaled_dot_product_attention``, torch's default AdamW), fp32 eager. Thread
counts are pinned on both sides (threadpoolctl + ``torch.set_num_threads``); the two are
interleaved by :func:`benchmarks.harness.compare`; each timed call runs ``--iters``
iterations. glibc's malloc is tuned for both (:func:`benchmarks.bench_fused_ops.tune_malloc`).
A cProfile pass then splits our iteration into kernels. The machine's load average is
recorded before and after: it is shared, and absolute times move with it; the ratio less so.
Writes ``docs/results/benchmarks/gpt/results.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.bench_fused_ops import tune_malloc
from benchmarks.harness import compare, pin_threads, save
from benchmarks.torch_gpt import TorchGPT, copy_from_spiral
from spiral import data
from spiral.data import sample_batch
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.optim import clip_grad_norm_
from spiral.tokenizers.char import CharTokenizer

BATCH = 12


def _steps(train_ids: np.ndarray) -> tuple[Callable[[], float], Callable[[], float], int]:
    cfg = GPTConfig.preset("baby", int(train_ids.max()) + 1)
    ours = GPT(cfg, rng=np.random.default_rng(0))
    peer = TorchGPT(cfg)
    copy_from_spiral(peer, ours)
    opt, topt = ours.configure_optimizer(), peer.configure_optimizer()
    params = list(ours.parameters())
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)

    def ours_step() -> float:
        x, y = sample_batch(train_ids, BATCH, cfg.context_length, rng_a)
        loss = F.cross_entropy(ours(x), y)
        loss.backward()
        clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss.item())

    def torch_step() -> float:
        x, y = sample_batch(train_ids, BATCH, cfg.context_length, rng_b)
        logits = peer(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]),
                                                 torch.from_numpy(y).view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
        topt.step()
        topt.zero_grad(set_to_none=True)
        return float(loss.item())

    return ours_step, torch_step, ours.num_parameters()


def _repeat(fn: Callable[[], float], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            fn()
    return run


# which kernel a profiled function belongs to
_GROUPS = {
    "linear_forward": "linear (matmul) forward", "linear_backward": "linear (matmul) backward",
    "attention_forward": "attention forward", "attention_backward": "attention backward",
    "gelu_forward": "GELU", "gelu_backward": "GELU",
    "layer_norm_forward": "layer norm", "layer_norm_backward": "layer norm",
    "cross_entropy_forward": "cross-entropy", "cross_entropy_backward": "cross-entropy",
    "_update_group": "AdamW step", "clip_grad_norm_": "gradient clipping",
    "_scatter_add_rows": "embedding backward",
}


def profile(step: Callable[[], float], iters: int, threads: int) -> dict[str, float]:
    """ms per iteration spent in each kernel group (cProfile's cumulative time)."""
    pr = cProfile.Profile()
    with pin_threads(threads):
        step()
        pr.enable()
        for _ in range(iters):
            step()
        pr.disable()
    stats = pstats.Stats(pr).stats  # type: ignore[attr-defined]
    out: dict[str, float] = defaultdict(float)
    total = 0.0
    for (_, _, fname), (_, _, _, cum, _) in stats.items():
        if fname in _GROUPS:
            out[_GROUPS[fname]] += cum
        if fname in ("ours_step",):
            total = cum
    out = {k: v / iters * 1e3 for k, v in out.items()}
    out["everything else (graph, Python, small ops)"] = total / iters * 1e3 - sum(out.values())
    out["total"] = total / iters * 1e3
    return dict(out)


def model_flops(n_params_matmul: int, tokens: int, T: int, d_model: int, n_layers: int) -> float:
    """6·N·tokens for the matmuls plus 12·n_layers·T·d_model per token for attention (PaLM)."""
    return 6 * n_params_matmul * tokens + 12 * n_layers * T * d_model * tokens


def quality(seeds: list[int]) -> None:
    """The nanoGPT recipe, ours (``spiral train gpt``) and torch's, per seed, scored by our
    evaluator on the whole validation split; results saved after every run."""
    import time

    from benchmarks.torch_gpt import copy_to_spiral, train_torch
    from spiral.evaluate import evaluate
    from spiral.experiments.framework import mean_sd
    from spiral.recipes.gpt import RECIPES, train_gpt

    tune_malloc()
    torch.set_num_threads(1)  # the shared loop trains with one BLAS thread; so does torch
    splits = data.get_splits("shakespeare")
    tok = CharTokenizer.from_text(splits.train)
    train_ids, val_ids = tok.encode_array(splits.train), tok.encode_array(splits.val)
    cfg = GPTConfig.preset("baby", tok.vocab_size)
    r = RECIPES["baby"]
    runs: dict[str, list[dict[str, Any]]] = {"spiral": [], "torch": []}
    for seed in seeds:
        res = train_gpt("shakespeare", f"runs/gpt_quality/spiral_seed{seed}", seed=seed,
                        progress=False)
        runs["spiral"].append({"seed": seed, "val_nats": res["val_nats"],
                               "train_s": res["train_s"], "load_avg": os.getloadavg()[0]})
        print("spiral", runs["spiral"][-1], flush=True)
        t0 = time.perf_counter()
        peer, _ = train_torch(cfg, train_ids, np.random.default_rng(seed),
                              max_steps=r["max_steps"], batch_size=r["batch_size"], lr=r["lr"],
                              min_lr=r["lr"] * r["min_lr_ratio"], warmup=r["warmup_steps"],
                              grad_clip=r["grad_clip"], seed=seed)
        wall = time.perf_counter() - t0
        scored = GPT(cfg, rng=np.random.default_rng(0))
        copy_to_spiral(peer, scored)
        runs["torch"].append({"seed": seed, "val_nats": evaluate(scored, val_ids).nats,
                              "train_s": wall, "load_avg": os.getloadavg()[0]})
        print("torch", runs["torch"][-1], flush=True)
        summary = {k: mean_sd([x["val_nats"] for x in v]) for k, v in runs.items()}
        gap = summary["spiral"]["mean"] - summary["torch"]["mean"]
        save("gpt_quality", {
            "config": {"preset": "baby", "recipe": r, "betas": [0.9, 0.99], "seeds": seeds,
                       "evaluated": "whole validation split, spiral.evaluate"},
            "runs": runs, "val_nats": summary, "gap_nats": gap,
            "n_seeds": len(runs["torch"]),
            "table": {"columns": ["engine", "seeds", "validation nats/char", "train time (s)"],
                      "rows": [[k, len(v), f"{summary[k]['mean']:.3f} ± {summary[k]['sd']:.3f}",
                                f"{np.median([x['train_s'] for x in v]):.0f}"]
                               for k, v in runs.items()]},
        })


def paired(seeds: list[int]) -> None:
    """The baby recipe on both engines from the SAME initial weights on the SAME batches, per
    seed; both scored by our evaluator on the whole validation split. The per-seed
    difference isolates the engine from the draw of weights and batches."""
    from benchmarks.torch_gpt import copy_to_spiral, train_torch
    from spiral.evaluate import evaluate
    from spiral.experiments.framework import mean_sd
    from spiral.optim import AdamW
    from spiral.recipes.gpt import BETAS, RECIPES
    from spiral.train import TrainConfig, train

    tune_malloc()
    torch.set_num_threads(1)
    splits = data.get_splits("shakespeare")
    tok = CharTokenizer.from_text(splits.train)
    train_ids, val_ids = tok.encode_array(splits.train), tok.encode_array(splits.val)
    cfg = GPTConfig.preset("baby", tok.vocab_size)
    r = RECIPES["baby"]
    runs = []
    for seed in seeds:
        start = GPT(cfg, rng=np.random.default_rng(seed))
        init = {k: v.copy() for k, v in start.state_dict().items()}
        ours = GPT(cfg, rng=np.random.default_rng(seed))
        tcfg = TrainConfig(seed=seed, progress=False, **{**r, "eval_interval": r["max_steps"]})
        opt = AdamW(ours.param_groups(tcfg.weight_decay), lr=tcfg.lr, betas=BETAS)
        state = train(ours, opt, train_ids, val_ids, tcfg, np.random.default_rng(seed + 100))
        peer, _ = train_torch(cfg, train_ids, np.random.default_rng(seed + 100),
                              max_steps=r["max_steps"], batch_size=r["batch_size"], lr=r["lr"],
                              min_lr=r["lr"] * r["min_lr_ratio"], warmup=r["warmup_steps"],
                              grad_clip=r["grad_clip"], seed=seed, init_from=start)
        assert all(np.array_equal(init[k], v) for k, v in start.state_dict().items())
        scored = GPT(cfg, rng=np.random.default_rng(0))
        copy_to_spiral(peer, scored)
        rec = {"seed": seed, "spiral": state.history[-1]["val_loss"],
               "torch": evaluate(scored, val_ids).nats}
        rec["difference"] = rec["spiral"] - rec["torch"]
        runs.append(rec)
        print(rec, flush=True)
    diff = mean_sd([x["difference"] for x in runs])
    save("gpt_quality_paired", {
        "config": {"preset": "baby", "recipe": r, "betas": list(BETAS), "seeds": seeds,
                   "pairing": "same initial weights (ours, seed) and same batch stream"},
        "runs": runs, "difference": diff,
        "spiral": mean_sd([x["spiral"] for x in runs]),
        "torch": mean_sd([x["torch"] for x in runs]),
        "table": {"columns": ["seed", "ours", "PyTorch", "ours − PyTorch"],
                  "rows": [[x["seed"], f"{x['spiral']:.4f}", f"{x['torch']:.4f}",
                            f"{x['difference']:+.4f}"] for x in runs]},
    })


def keep_large_arrays_in_heap() -> bool:
    """Serve every allocation from glibc's heap, none from a fresh ``mmap``.

    :func:`tune_malloc` raises the mmap threshold to its ceiling, 32 MB; the ``small``
    preset's (B·T, 4C) activations and (B, H, T, T) attention probabilities are 100 MB each,
    so without this each one is a new mapping whose pages fault in on first touch, every
    step (a third of our iteration on this machine). Applies to both engines. Returns False
    where glibc's ``mallopt`` is unavailable."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_mmap_max = -4
    return bool(libc.mallopt(m_mmap_max, 0))


def small_cost(iters: int) -> None:
    """ms per iteration of the ``small`` preset (nanoGPT's shakespeare-char config: batch 64,
    context 256, dropout 0.2) on both engines, one thread, and what its 5000 iterations and
    the baby recipe's 2000 would take at that speed."""
    import time

    tuned = tune_malloc()
    in_heap = keep_large_arrays_in_heap()
    torch.set_num_threads(1)
    splits = data.get_splits("shakespeare")
    train_ids = CharTokenizer.from_text(splits.train).encode_array(splits.train)
    cfg = GPTConfig.preset("small", int(train_ids.max()) + 1)
    ours = GPT(cfg, rng=np.random.default_rng(0))
    opt = ours.configure_optimizer()
    # the same work on both sides: our model once more without dropout, like the torch peer
    same = GPT(GPTConfig.preset("small", cfg.vocab_size, dropout=0.0),
               rng=np.random.default_rng(0))
    same_opt = same.configure_optimizer()
    peer = TorchGPT(GPTConfig.preset("small", cfg.vocab_size, dropout=0.0))
    popt = peer.configure_optimizer()
    peer.train()

    def ours_step(model: GPT, optimizer: Any, x: np.ndarray, y: np.ndarray) -> None:
        F.cross_entropy(model(x), y).backward()
        clip_grad_norm_(list(model.parameters()), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    def torch_step(x: np.ndarray, y: np.ndarray) -> None:
        logits = peer(torch.from_numpy(x))
        torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]),
                                          torch.from_numpy(y).view(-1)).backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
        popt.step()
        popt.zero_grad(set_to_none=True)

    steps: dict[str, Callable[[np.ndarray, np.ndarray], None]] = {
        "spiral": lambda x, y: ours_step(ours, opt, x, y),
        "spiral_no_dropout": lambda x, y: ours_step(same, same_opt, x, y),
        "torch": torch_step}
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {k: [] for k in steps}
    load_before = list(os.getloadavg())
    with pin_threads(1):
        for i in range(iters + 1):  # iteration 0 warms all up (first touch of the heap)
            x, y = sample_batch(train_ids, 64, cfg.context_length, rng)
            for name, step in steps.items():  # interleaved: slow drifts hit all alike
                t0 = time.perf_counter()
                step(x, y)
                if i > 0:
                    times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    save("gpt_small", {
        "config": {"preset": "small", "batch_size": 64, "context_length": 256, "iters": iters,
                   "warmup_iters": 1, "threads": 1,
                   "note": "the torch peer runs without dropout; spiral_no_dropout is our "
                           "engine on the same work, spiral is the preset as trained (0.2)",
                   "malloc_tuned": tuned, "mmap_disabled": in_heap},
        "s_per_iter": med, "all_s": times, "load_avg": load_before,
        "load_avg_after": list(os.getloadavg()),
        "ratio_same_work": med["spiral_no_dropout"] / med["torch"],
        "ratio_with_our_dropout": med["spiral"] / med["torch"],
        "hours_for_5000_iters": {k: v * 5000 / 3600 for k, v in med.items()},
        "n_parameters": ours.num_parameters(),
    })
    print(med)


def estimate_spread(run_dirs: list[str], draws: int = 50) -> None:
    """nanoGPT's validation estimate (mean loss of 20 random batches of 12 × 64) against the
    whole-split evaluator, for trained runs: how far a 20-batch estimate strays."""
    from spiral import checkpoint
    from spiral.evaluate import evaluate

    splits = data.get_splits("shakespeare")
    tok = CharTokenizer.from_text(splits.train)
    val_ids = tok.encode_array(splits.val)
    rows, per_run = [], []
    for run in run_dirs:
        model = GPT(GPTConfig.preset("baby", tok.vocab_size), rng=np.random.default_rng(0))
        checkpoint.load(f"{run}/checkpoint.safetensors", model)
        whole = evaluate(model, val_ids).nats
        rng = np.random.default_rng(0)
        est = []
        with pin_threads(1):
            for _ in range(draws):
                losses = []
                for _ in range(20):
                    x, y = sample_batch(val_ids, BATCH, 64, rng)
                    losses.append(float(F.cross_entropy(model(x), y).item()))
                est.append(float(np.mean(losses)))
        e = np.asarray(est)
        per_run.append({"run": run, "whole_split": whole, "estimate_mean": float(e.mean()),
                        "estimate_sd": float(e.std(ddof=1)), "estimate_min": float(e.min()),
                        "estimate_max": float(e.max())})
        rows.append([run.rsplit("/", 1)[-1], f"{whole:.3f}",
                     f"{e.mean():.3f} ± {e.std(ddof=1):.3f}",
                     f"{e.min():.3f}–{e.max():.3f}"])
        print(per_run[-1])
    save("gpt_eval_estimate", {
        "config": {"draws": draws, "batches_per_estimate": 20, "batch_size": BATCH,
                   "context_length": 64},
        "runs": per_run,
        "mean_offset": float(np.mean([r["estimate_mean"] - r["whole_split"] for r in per_run])),
        "mean_estimate_sd": float(np.mean([r["estimate_sd"] for r in per_run])),
        "table": {"columns": ["run", "whole validation split", "20-batch estimate (mean ± sd)",
                              "min–max of estimates"], "rows": rows},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--iters", type=int, default=3, help="iterations per timed call")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quality", type=int, nargs="*", default=None, metavar="SEED",
                    help="instead of timing: train both with the recipe for these seeds")
    ap.add_argument("--paired", type=int, nargs="+", default=None, metavar="SEED",
                    help="instead of timing: both engines from the same weights and batches")
    ap.add_argument("--small", type=int, default=0, metavar="ITERS",
                    help="instead of timing baby: time ITERS iterations of the small preset")
    ap.add_argument("--estimate", nargs="+", default=None, metavar="RUN_DIR",
                    help="instead of timing: nanoGPT-style 20-batch estimates of trained runs")
    args = ap.parse_args()
    if args.estimate:
        estimate_spread(args.estimate)
        return
    if args.paired:
        paired(args.paired)
        return
    if args.small:
        small_cost(args.small)
        return
    if args.quality is not None:
        quality(args.quality or [0, 1, 2])
        return
    tuned = tune_malloc()
    splits = data.get_splits("shakespeare")
    tok = CharTokenizer.from_text(splits.train)
    train_ids = tok.encode_array(splits.train)
    ours_step, torch_step, n_params = _steps(train_ids)
    tokens = BATCH * 64
    C, L, V = 128, 4, tok.vocab_size
    flops = model_flops(12 * C * C * L + V * C, tokens, 64, C, L)
    load_before = os.getloadavg()
    runs: dict[str, Any] = {}
    rows = []
    for th in args.threads:
        rec = compare({"spiral": _repeat(ours_step, args.iters),
                       "torch": _repeat(torch_step, args.iters)},
                      repeats=args.repeats, warmup=1, threads=th)
        t = {k: {s: v[s] / args.iters for s in ("median_s", "min_s", "max_s")}
             for k, v in rec["timings"].items()}
        ratio = t["spiral"]["median_s"] / t["torch"]["median_s"]
        runs[f"threads_{th}"] = {"timings": t, "ratio": ratio,
                                 "all_s": {k: v["all_s"] for k, v in rec["timings"].items()},
                                 **{f"{k}_ms": t[k]["median_s"] * 1e3 for k in t},
                                 **{f"{k}_tokens_per_s": tokens / t[k]["median_s"] for k in t}}
        for k in ("spiral", "torch"):
            tk = t[k]
            rows.append([k, th, round(tk["median_s"] * 1e3, 1),
                         f"{tk['min_s'] * 1e3:.0f}–{tk['max_s'] * 1e3:.0f}",
                         round(tokens / tk["median_s"]),
                         round(flops / tk["median_s"] / 1e9, 1),
                         "1" if k == "torch" else f"{ratio:.2f}×"])
        print(f"threads={th}: spiral {t['spiral']['median_s'] * 1e3:.1f} ms, "
              f"torch {t['torch']['median_s'] * 1e3:.1f} ms, ratio {ratio:.2f}")
    prof = profile(ours_step, 10, 1)
    load_after = os.getloadavg()
    results = {
        "config": {"preset": "baby", "batch_size": BATCH, "context_length": 64,
                   "repeats": args.repeats, "iters_per_call": args.iters,
                   "threads": args.threads, "malloc_tuned": tuned,
                   "torch": torch.__version__, "numpy": np.__version__},
        "n_parameters": n_params, "flops_per_iter": flops,
        "load_avg_before": list(load_before), "load_avg_after": list(load_after),
        "runs": runs,
        "table": {"columns": ["engine", "threads", "ms/iter (median)", "min–max",
                              "tokens/s", "GFLOP/s", "time vs torch"], "rows": rows},
        "profile_ms": prof,
        "profile_table": {"columns": ["where our iteration goes (1 thread)", "ms/iter",
                                      "share"],
                          "rows": [[k, round(v, 1), f"{v / prof['total']:.0%}"]
                                   for k, v in sorted(prof.items(), key=lambda kv: -kv[1])
                                   if k != "total"]},
    }
    for r in results["profile_table"]["rows"]:  # type: ignore[index]
        print(r)
    print(save("gpt", results))


if __name__ == "__main__":
    main()
