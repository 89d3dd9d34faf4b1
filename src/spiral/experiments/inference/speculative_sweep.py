"""Speculative decoding on the base model with a small byte-level draft trained here.

For each draft length k: the acceptance rate α (accepted over tested drafts: those after
a rejection are never tested), tokens per round against (1 − α^{k+1}) / (1 − α), and the
wall-clock speed-up over plain cached decoding against the formula
(1 − α^{k+1}) / ((1 − α)(k·c + v)), with c the draft's decode step time over the target's
and v the target's verifying forward of k + 1 positions over one decode step (all measured
here; v = 1, the textbook's idealization, is reported too). Sampling at temperature 1;
greedy decoding is checked token for token against the target's own greedy output, and
sampled two-token continuations are chi-square tested against the target's exact
distributions (and the draft's, for power: :func:`distribution_test`). Three
seeds (three sets of validation prompts, three drafts). Timings come from a shared machine
and carry its load average. Chapter: stage 17.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import no_grad
from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.inference.common import (
    load_average,
    load_base,
    one_blas_thread,
    train_draft,
    val_prompts,
)
from spiral.inference import (
    KVCache,
    expected_speedup,
    expected_tokens_per_round,
    forward_cached,
    generate_cached,
    speculative_generate,
)
from spiral.inference.roofline import best_time
from spiral.plotting import PALETTE, new_figure

KEYS = ("alpha", "tokens_per_round", "formula_tokens", "speedup", "formula_speedup")


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    draft_steps: int = 300
    ks: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_prompts: int = 4
    prompt_len: int = 32
    new_tokens: int = 96
    standin_steps: int = 60
    chi2_samples: int = 20000  # two-token continuations for the distribution test


def step_time(model: Any, t: int, n: int = 1) -> float:
    """Best time of one cached forward of n new positions after t cached ones."""
    cache = KVCache.for_model(model, capacity=t + n)
    forward_cached(model, np.zeros((1, t), dtype=np.int64), cache)

    def one() -> None:
        cache.truncate(t)
        forward_cached(model, np.zeros((1, n), dtype=np.int64), cache)
    return best_time(one, 7)


def distribution_test(target: Any, draft: Any, prompt: list[int], n: int, seed: int
                      ) -> dict[str, Any]:
    """Chi-square tests of n sampled two-token continuations (k = 2, temperature 1): the
    first token's and the second token's distributions against the target's exact ones
    (P(a), and P(b) = Σ_a P(a) P(b | a)), and against the draft's, to show the tests' power.
    Cells expecting fewer than five draws are pooled into one."""
    from scipy import stats  # the test extra, like torch for the PyTorch comparison

    from spiral.generate import filter_probs

    V = target.config.vocab_size

    def exact(m: Any) -> tuple[np.ndarray, np.ndarray]:  # P(a) and P(b), uncached forwards
        with no_grad():
            pa = filter_probs(m(np.asarray([prompt])).data[0, -1], 1.0)
            ids = np.array([prompt + [a] for a in range(V)], dtype=np.int64)
            last = m(ids).data[:, -1]
        pb = np.stack([filter_probs(z, 1.0) for z in last])
        return pa, pa @ pb

    counts = np.zeros((2, V))
    drafted = accepted = 0
    rng = np.random.default_rng(seed)
    for _ in range(n):
        o = speculative_generate(target, draft, prompt, 2, rng, k=2)
        counts[0, o.tokens[0]] += 1
        counts[1, o.tokens[1]] += 1
        drafted, accepted = drafted + o.drafted, accepted + o.accepted

    def pvalue(obs: np.ndarray, probs: np.ndarray) -> float:
        expected, small = probs * n, probs * n < 5
        f_obs = np.append(obs[~small], obs[small].sum())
        f_exp = np.append(expected[~small], expected[small].sum())
        return float(stats.chisquare(f_obs, f_exp).pvalue)

    out: dict[str, Any] = {"samples": n, "acceptance": accepted / drafted}
    for who, m in (("target", target), ("draft", draft)):
        for i, (obs, probs) in enumerate(zip(counts, exact(m))):
            out[f"p_{who}_{('first', 'second')[i]}"] = pvalue(obs, probs)
    return out


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    with one_blas_thread():  # timings: one BLAS thread (see common.one_blas_thread)
        return _run(config, rng)


def _run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    target = load_base(config.base, steps=config.standin_steps).model
    load = load_average()
    per_seed: list[dict[str, Any]] = []
    timeline: list[tuple[int, int]] = []
    chi2: dict[str, Any] = {}
    for seed in config.seeds:
        draft = train_draft(target.config, config.draft_steps, seed)
        prompts = val_prompts(config.n_prompts, config.prompt_len, np.random.default_rng(seed))
        mid = config.prompt_len + config.new_tokens // 2
        t_step = step_time(target, mid)
        c = step_time(draft, mid) / t_step
        verify = {k: step_time(target, mid, k + 1) / t_step for k in config.ks}
        greedy_same = all(
            speculative_generate(target, draft, p, config.new_tokens, np.random.default_rng(0),
                                 k=4, temperature=0).tokens ==
            generate_cached(target, p, config.new_tokens, np.random.default_rng(0),
                            temperature=0) for p in prompts)
        t0 = time.perf_counter()
        for i, p in enumerate(prompts):
            generate_cached(target, p, config.new_tokens, np.random.default_rng(i))
        plain = time.perf_counter() - t0
        rows = {}
        for k in config.ks:
            t0 = time.perf_counter()
            outs = [speculative_generate(target, draft, p, config.new_tokens,
                                         np.random.default_rng(i), k=k)
                    for i, p in enumerate(prompts)]
            spec = time.perf_counter() - t0
            accepted = sum(o.accepted for o in outs)
            tested = accepted + sum(a < d for o in outs for d, a in o.per_round)
            alpha = accepted / tested  # per tested token (see SpeculativeOutput.alpha)
            full = [r for o in outs for r in o.per_round if r[0] == k]  # rounds of length k
            rows[str(k)] = {"alpha": alpha, "speedup": plain / spec,
                            "tokens_per_round": float(np.mean([a + 1 for _, a in full])),
                            "formula_tokens": expected_tokens_per_round(alpha, k),
                            "formula_speedup": expected_speedup(alpha, k, c, verify[k]),
                            "formula_speedup_ideal": expected_speedup(alpha, k, c),
                            "verify_cost": verify[k]}
            if seed == config.seeds[0] and k == 4:
                timeline = outs[0].per_round
        if seed == config.seeds[0]:
            chi2 = distribution_test(target, draft, prompts[0], config.chi2_samples, seed)
        per_seed.append({"seed": seed, "cost_ratio": c, "greedy_identical": greedy_same,
                         "rows": rows})
    summary = {}
    for k in config.ks:
        s = [p["rows"][str(k)] for p in per_seed]
        summary[str(k)] = {key: mean_sd([r[key] for r in s]) for key in s[0]}
    return {"per_seed": per_seed, "summary": summary, "timeline": timeline, "chi2": chi2,
            "cost_ratio": mean_sd([p["cost_ratio"] for p in per_seed]),
            "load_average": [load, load_average()],
            "table": {"columns": ["k", "acceptance α", "tokens/round (measured)",
                                  "tokens/round (formula)", "speed-up (measured)",
                                  "speed-up (formula)"],
                      "rows": [[k] + [_fmt(summary[str(k)][key]) for key in KEYS]
                               for k in config.ks]}}


def _fmt(s: dict[str, Any]) -> str:
    return f"{s['mean']:.2f} ± {s['sd']:.2f}" if s["n"] > 1 else f"{s['mean']:.2f} (one run)"


def plot(results: dict[str, Any]) -> dict[str, Any]:
    s = results["summary"]
    ks = [int(k) for k in s]
    fig, ax = new_figure(1, 2, width=9.0, height=3.4)
    for j, (key, label) in enumerate([("speedup", "measured (wall clock)"),
                                      ("formula_speedup", "formula, measured c and v"),
                                      ("formula_speedup_ideal", "formula with v = 1")]):
        m = [s[str(k)][key]["mean"] for k in ks]
        sd = [s[str(k)][key]["sd"] for k in ks]
        ax[0].errorbar(ks, m, yerr=sd, fmt=("o-", "s--", "^:")[j], color=PALETTE[j],
                       ms=4, capsize=2, label=label)
    ax[0].axhline(1.0, color="#999999", lw=0.7, ls=":")
    ax[0].set_xticks(ks)
    ax[0].set_xlabel("draft length k")
    ax[0].set_ylabel("speed-up over plain decoding")
    c = results["cost_ratio"]["mean"]
    ax[0].set_title(f"draft/target step cost c = {c:.2f}; "
                    f"load {results['load_average'][0][0]:.1f}", fontsize=8)
    ax[0].legend(fontsize=7)
    tl = results["timeline"]
    x = np.arange(len(tl))
    acc = np.array([a for _, a in tl])
    rej = np.array([d - a for d, a in tl])
    ax[1].bar(x, acc, color=PALETTE[2], label="draft tokens accepted")
    ax[1].bar(x, rej, bottom=acc, color=PALETTE[3],
              label="drafted, not accepted (rejected, or untested after a rejection)")
    ax[1].bar(x, np.ones(len(tl)), bottom=acc + rej, color=PALETTE[0], alpha=0.5,
              label="target's token (residual or bonus)")
    ax[1].set_xlabel("round (k = 4, one prompt)")
    ax[1].set_ylabel("tokens")
    ax[1].set_ylim(0, 7.5)
    ax[1].legend(fontsize=6, loc="upper left")
    return {"speculative": fig}


def check(results: dict[str, Any]) -> None:
    # sampled output consistent with the target's distribution (a fixed seed: a fixed p)
    c = results["chi2"]
    assert min(c["p_target_first"], c["p_target_second"]) > 1e-4, c
    assert all(p["greedy_identical"] for p in results["per_seed"])
    for row in results["summary"].values():
        assert 0 < row["alpha"]["mean"] < 1
        measured, formula = row["tokens_per_round"]["mean"], row["formula_tokens"]["mean"]
        assert abs(measured - formula) / formula < 0.2, (measured, formula)


EXPERIMENT = Experiment(
    name="inference_speculative", stage=17,
    title="Speculative decoding: acceptance, tokens per round and speed-up vs draft length",
    quick=Config(base="standin", draft_steps=20, ks=(1, 2, 4), seeds=(0,), n_prompts=3,
                 prompt_len=8, new_tokens=20, standin_steps=40, chi2_samples=1000),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"speed-up at k = {k}", v["speedup"]["mean"])
                       for k, v in r["summary"].items()],
)
