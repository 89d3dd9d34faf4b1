"""Flash against naive attention: peak memory, bytes moved and time as the context grows.

One (batch, head) of attention, head size d, forward + backward through the autograd
engine. Peak memory is measured by ``tracemalloc`` (NumPy reports every array to it) above
the inputs: naive attention holds S and P, (T × T) each, plus dP and dS in backward —
Θ(T²); flash attention holds O, λ and the gradients plus one tile — Θ(T·d + B²). Bytes
moved between a modelled on-chip memory of M bytes and main memory are COUNTED by
:class:`~spiral.nn.attention_io.IOCounter` as the kernels run, for block sizes chosen to fit
M, and compared with the derived counts (:func:`~spiral.nn.attention_io.flash_io`,
``naive_io``). Times are wall-clock on a shared machine, recorded with the load average.
Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

import os
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.experiments.framework import Experiment
from spiral.nn.attention_io import IOCounter, flash_io, naive_io, tiles_for_memory
from spiral.nn.attention_kernels import scaled_dot_product_attention as sdpa
from spiral.plotting import PALETTE, new_figure

MiB = 2**20


@dataclass(frozen=True)
class Config:
    d: int = 64
    lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
    naive_max: int = 4096          # naive attention's T×T matrices beyond this: > 1 GiB
    block: int = 128
    io_lengths: tuple[int, ...] = (256, 512, 1024, 2048)
    sram_bytes: tuple[int, ...] = (32_768, 98_304, 196_608)


def _step(kernel: str, T: int, d: int, rng: np.random.Generator, block: int,
          counter: IOCounter | None = None) -> tuple[int, float]:
    """Peak bytes above the inputs and seconds of one causal forward + backward."""
    q, k, v = (Tensor(rng.standard_normal((1, T, d)).astype(np.float32), requires_grad=True)
               for _ in range(3))
    g = Tensor(rng.standard_normal((1, T, d)).astype(np.float32))
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = sdpa(q, k, v, is_causal=True, kernel=kernel, block_q=block, block_k=block,
               counter=counter)
    (out * g).sum().backward()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, dt


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    mem = []
    for T in config.lengths:
        row: dict[str, Any] = {"T": T, "scores_bytes": 4 * T * T}
        for kernel in ("naive", "flash"):
            if kernel == "naive" and T > config.naive_max:
                continue
            row[f"{kernel}_peak"], row[f"{kernel}_seconds"] = _step(kernel, T, config.d, rng,
                                                                    config.block)
        mem.append(row)
    io = []
    for M in config.sram_bytes:
        b = tiles_for_memory(M, config.d)
        for T in config.io_lengths:
            for kernel in ("naive", "flash"):
                c = IOCounter(sram_bytes=None if kernel == "naive" else M)
                _step(kernel, T, config.d, rng, b, c)
                d = config.d
                derived = 4 * (naive_io(T, T, d, d) + naive_io(T, T, d, d, backward=True)
                               if kernel == "naive" else
                               flash_io(T, T, d, d, b, b, True)
                               + flash_io(T, T, d, d, b, b, True, backward=True))
                io.append({"M": M, "block": b, "T": T, "kernel": kernel,
                           "counted": c.bytes_moved, "derived": derived,
                           "peak_on_chip": c.peak_on_chip,
                           "theta": 4 * T * T * d * d / M})
    flash = [r for r in mem if "flash_peak" in r]
    naive = [r for r in mem if "naive_peak" in r]

    def growth(rows: list[dict[str, Any]], key: str) -> float:
        """(p(4T) − p(2T)) / (p(2T) − p(T)) at the largest lengths: 2 if p is linear in T
        (plus a constant), 4 if quadratic."""
        p = [r[key] for r in rows[-3:]]
        return (p[2] - p[1]) / (p[1] - p[0])

    return {"memory": mem, "io": io, "d": config.d, "block": config.block,
            "flash_growth": growth(flash, "flash_peak"),
            "naive_growth": growth(naive, "naive_peak"),
            "flash_bytes_per_token": (flash[-1]["flash_peak"] - flash[-2]["flash_peak"])
            / (flash[-1]["T"] - flash[-2]["T"]),
            "largest_T": flash[-1]["T"], "flash_peak_largest": flash[-1]["flash_peak"],
            "scores_largest": flash[-1]["scores_bytes"],
            "io_all_equal": all(r["counted"] == r["derived"] for r in io),
            "loadavg": list(os.getloadavg())}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    mem = results["memory"]
    fig, (ax, bx, cx) = new_figure(1, 3, width=12.0, height=3.4)
    for kernel, color in (("naive", PALETTE[1]), ("flash", PALETTE[0])):
        pts = [(r["T"], r[f"{kernel}_peak"] / MiB) for r in mem if f"{kernel}_peak" in r]
        ax.plot(*zip(*pts), "o-", color=color, label=kernel)
        pts = [(r["T"], r[f"{kernel}_seconds"]) for r in mem if f"{kernel}_seconds" in r]
        cx.plot(*zip(*pts), "o-", color=color, label=kernel)
    ax.plot([r["T"] for r in mem], [r["scores_bytes"] / MiB for r in mem], ":",
            color=PALETTE[6], label="one T×T float32 matrix")
    for a in (ax, cx):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("sequence length T")
        a.legend(frameon=False, fontsize=8)
    ax.set_ylabel("peak memory above inputs (MiB)")
    cx.set_ylabel(f"seconds, fwd + bwd (load {results['loadavg'][0]:.1f})")
    for i, M in enumerate(sorted({r["M"] for r in results["io"]})):
        rows = [r for r in results["io"] if r["M"] == M and r["kernel"] == "flash"]
        bx.plot([r["T"] for r in rows], [r["counted"] / MiB for r in rows], "o",
                color=PALETTE[i], label=f"flash, M = {M // 1024} KiB (B = {rows[0]['block']})")
        bx.plot([r["T"] for r in rows], [r["derived"] / MiB for r in rows], "-",
                color=PALETTE[i], lw=1)
    rows = [r for r in results["io"] if r["kernel"] == "naive" and r["M"] == results["io"][0]["M"]]
    bx.plot([r["T"] for r in rows], [r["counted"] / MiB for r in rows], "s",
            color=PALETTE[6], label="naive")
    bx.plot([r["T"] for r in rows], [r["derived"] / MiB for r in rows], "-", color=PALETTE[6],
            lw=1)
    bx.set_xscale("log", base=2)
    bx.set_yscale("log")
    bx.set_xlabel("sequence length T (points counted, lines derived)")
    bx.set_ylabel("bytes moved to/from main memory (MiB)")
    bx.legend(frameon=False, fontsize=7)
    return {"flash_vs_naive": fig}


def check(results: dict[str, Any]) -> None:
    assert results["io_all_equal"]
    assert 1.8 < results["flash_growth"] < 2.3  # doubling T doubles the increment: O(T)
    assert results["naive_growth"] > 3.3  # ... quadruples it: O(T²)
    naive = [r for r in results["memory"] if "naive_peak" in r]
    assert naive[-1]["naive_peak"] > 2 * naive[-1]["scores_bytes"]  # S and P at least
    assert results["flash_peak_largest"] < results["scores_largest"]
    for r in results["io"]:
        if r["kernel"] == "flash":
            assert r["peak_on_chip"] <= r["M"]


EXPERIMENT = Experiment(
    name="memopt_flash", stage=12, title="Flash attention: memory and bytes moved",
    quick=Config(lengths=(128, 256, 512), naive_max=512, block=64, io_lengths=(128, 256),
                 sram_bytes=(65_536,)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("largest T", r["largest_T"]),
                       ("flash peak at largest T (MiB)", r["flash_peak_largest"] / MiB),
                       ("counted == derived", r["io_all_equal"])],
)
