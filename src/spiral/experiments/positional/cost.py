"""What each positional encoding costs: parameters, memory and time in the same small GPT.

For each encoding we build the study's GPT and measure (i) trained parameters in total and
in the encoding itself, (ii) the bytes the encoding keeps or builds per forward pass (the
learned table, the cached sinusoid table, RoPE's cos/sin caches, ALiBi's (H, T, T) bias
per layer), (iii) the peak traced memory of one forward + backward pass (``tracemalloc``,
which sees NumPy's allocations) and (iv) the median time of a forward + backward pass at
the training length and of a forward pass at 8× that length, interleaved across encodings
on one BLAS thread. Times are from a shared 2-core machine: compare them with each other,
not with other machines. Chapter: stage 9 ("What each encoding costs").
"""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, new_figure

ENCS = ("learned", "sinusoidal", "rope", "rope_halves", "alibi", "none")


@dataclass(frozen=True)
class Config:
    vocab_size: int = 65
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    context_length: int = 64
    batch_size: int = 16
    long_factor: int = 8
    repeats: int = 15


def _model(config: Config, enc: str) -> Any:
    from spiral.models.gpt import GPT, GPTConfig

    c = GPTConfig(vocab_size=config.vocab_size, context_length=config.context_length,
                  n_layers=config.n_layers, n_heads=config.n_heads, d_model=config.d_model,
                  positional=enc)
    return GPT(c, rng=np.random.default_rng(0))


def _encoding_bytes(model: Any, T: int) -> int:
    """Bytes the encoding holds or builds for one forward pass of length T."""
    from spiral.nn.positional import alibi_bias

    enc, total = model.config.positional, 0
    if model.pos_emb is not None:
        total += model.pos_emb.weight.data.nbytes
    if model.pos_enc is not None:
        total += model.pos_enc._table.nbytes
    for blk in model.blocks:
        if blk.attn.rotary is not None:
            total += sum(a.nbytes for pair in blk.attn.rotary._cache.values() for a in pair)
        if enc == "alibi":  # rebuilt in every layer's forward
            total += alibi_bias(model.config.n_heads, T, T).nbytes
    return total


def _step(model: Any, x: np.ndarray) -> None:
    from spiral.nn import functional as F

    loss = F.cross_entropy(model(x[:, :-1]), x[:, 1:])
    loss.backward()
    model.zero_grad()


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from spiral.autograd import no_grad

    T, L = config.context_length, config.context_length * config.long_factor
    x = rng.integers(0, config.vocab_size, (config.batch_size, T + 1))
    x_long = rng.integers(0, config.vocab_size, (1, L))
    models = {e: _model(config, e) for e in ENCS}
    out: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {e: [] for e in ENCS}
    times_long: dict[str, list[float]] = {e: [] for e in ENCS if e != "learned"}
    with threadpool_limits(limits=1, user_api="blas"):
        for e, m in models.items():
            _step(m, x)  # warm the caches
            tracemalloc.start()
            _step(m, x)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            n_pos = m.pos_emb.weight.data.size if m.pos_emb is not None else 0
            out[e] = {"params": m.num_parameters(), "pos_params": int(n_pos),
                      "encoding_bytes": _encoding_bytes(m, T), "peak_bytes": int(peak)}
        for _ in range(config.repeats):  # interleaved so load changes hit every encoding
            for e, m in models.items():
                t0 = time.perf_counter()
                _step(m, x)
                times[e].append(time.perf_counter() - t0)
                if e in times_long:
                    m.context_length = L
                    t0 = time.perf_counter()
                    with no_grad():
                        m(x_long)
                    times_long[e].append(time.perf_counter() - t0)
                    m.context_length = T
    for e in ENCS:
        out[e]["step_ms"] = float(np.median(times[e]) * 1e3)
        out[e]["long_forward_ms"] = (float(np.median(times_long[e]) * 1e3)
                                     if e in times_long else None)
    base = out["none"]["step_ms"]
    rows = [[e, f"{r['params']:,}", f"{r['pos_params']:,}", f"{r['encoding_bytes'] / 1024:.1f}",
             f"{r['peak_bytes'] / 2**20:.2f}", f"{r['step_ms']:.1f}",
             f"{r['step_ms'] / base:.2f}",
             "n/a" if r["long_forward_ms"] is None else f"{r['long_forward_ms']:.1f}"]
            for e, r in out.items()]
    share = out["learned"]["pos_params"] / out["learned"]["params"]
    return {"by_encoding": out, "context_length": T, "long_length": L, "d_model": config.d_model,
            "learned_param_share": share,
            "batch_size": config.batch_size,
            "table": {"columns": ["encoding", "parameters", "positional parameters",
                                  "encoding state (KiB)", "peak memory fwd+bwd (MiB)",
                                  f"fwd+bwd ms (B={config.batch_size}, T={T})",
                                  "time / none", f"forward ms at T={L}"],
                      "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    by = results["by_encoding"]
    fig, axes = new_figure(1, 2, width=7.4, height=3.0)
    names = list(by)
    axes[0].barh(names, [by[e]["step_ms"] for e in names], color=PALETTE[0])
    axes[0].set_xlabel("forward + backward (ms, median)")
    axes[1].barh(names, [by[e]["encoding_bytes"] / 1024 for e in names], color=PALETTE[1])
    axes[1].set_xlabel("encoding state (KiB)")
    axes[1].set_yticks([])
    return {"cost": fig}


def check(results: dict[str, Any]) -> None:
    by, T = results["by_encoding"], results["context_length"]
    # only learned positions add parameters: exactly context_length · d_model of them
    for e, r in by.items():
        assert r["pos_params"] == (T * results["d_model"] if e == "learned" else 0), e
        assert r["params"] == by["none"]["params"] + r["pos_params"], e
    assert by["none"]["encoding_bytes"] == 0
    # ALiBi builds an (H, T, T) bias per layer: quadratic in T, unlike the others
    assert by["alibi"]["encoding_bytes"] > 0
    assert by["learned"]["long_forward_ms"] is None


EXPERIMENT = Experiment(
    name="positional_cost", stage=9, title="Cost of each encoding",
    quick=Config(n_layers=1, d_model=32, context_length=16, batch_size=4, repeats=2),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(e, f"{v['step_ms']:.1f} ms") for e, v in r["by_encoding"].items()],
)
