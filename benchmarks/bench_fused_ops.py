"""Fused vs composed ops: speed and memory of forward + backward, with PyTorch as the peer.

Run from the repository root::

    PYTHONPATH=src python -m benchmarks.bench_fused_ops [--repeats 7]

Shapes are the baby GPT's (batch 12 × context 64, d_model 128, 4 heads, vocab 65), float32,
one thread on every side. For each op we time one forward + backward pass of

* ``fused``    — :mod:`spiral.nn.functional` (one graph node, hand-derived backward),
* ``composed`` — the ``composed_*`` reference built from stage-2 primitives,
* ``torch``    — ``torch.nn.functional`` on CPU (the peer the stage-8 target is set against),

interleaved by :func:`benchmarks.harness.compare`. Memory: bytes the autograd graph holds
between forward and backward (NumPy allocations traced by ``tracemalloc``), and the
number of graph nodes, after :func:`tune_malloc` (see its docstring: page faults on fresh
temporaries otherwise dominate). :func:`malloc_effect` measures that effect on its own, in
fresh processes. Writes ``docs/results/benchmarks/fused_ops/results.json``.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.harness import compare, ratios, save
from spiral.autograd.tensor import Tensor
from spiral.nn import functional as F

B, T, D, H, V = 12, 64, 128, 4, 65  # batch, context_length, d_model, n_heads, vocab_size


def _inputs(rng: np.random.Generator) -> dict[str, Any]:
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "x": r(B, T, D), "w": r(4 * D, D) / float(np.sqrt(D)), "b": r(4 * D),
        "logits": 3 * r(B, T, V), "targets": rng.integers(0, V, (B, T)),
        "ln_w": 1 + 0.1 * r(D), "ln_b": 0.1 * r(D), "h": r(B, T, 4 * D),
        "q": r(B, H, T, D // H), "k": r(B, H, T, D // H), "v": r(B, H, T, D // H),
    }


def _ops(fused: bool) -> dict[str, tuple[list[str], Callable[..., Tensor]]]:
    """op name -> (input keys, function of Tensors returning the tensor to backprop from)."""
    lin = F.linear if fused else F.composed_linear
    ce = F.cross_entropy if fused else F.composed_cross_entropy
    sm = F.softmax if fused else F.composed_softmax
    ln = F.layer_norm if fused else F.composed_layer_norm
    gl = (lambda z: F.gelu(z, approximate="tanh")) if fused else F.composed_gelu
    att = F.scaled_dot_product_attention if fused else F.composed_scaled_dot_product_attention
    return {
        "linear": (["x", "w", "b"], lin),
        "softmax": (["logits"], lambda z: sm(z, -1)),
        "cross_entropy": (["logits", "targets"], lambda z, t: ce(z, t.data)),
        "layer_norm": (["x", "ln_w", "ln_b"], lambda z, w, b: ln(z, (D,), w, b)),
        "gelu_tanh": (["h"], gl),
        "causal_attention": (["q", "k", "v"], lambda q, k, v: att(q, k, v, is_causal=True)),
    }


def _torch_ops() -> dict[str, Callable[..., Any]]:
    import torch

    tf = torch.nn.functional
    return {
        "linear": tf.linear,
        "softmax": lambda z: torch.softmax(z, -1),
        "cross_entropy": lambda z, t: tf.cross_entropy(z.reshape(-1, V), t.reshape(-1)),
        "layer_norm": lambda z, w, b: tf.layer_norm(z, (D,), w, b),
        "gelu_tanh": lambda z: tf.gelu(z, approximate="tanh"),
        "causal_attention": lambda q, k, v: tf.scaled_dot_product_attention(q, k, v,
                                                                             is_causal=True),
    }


INNER = 1  # passes per timed sample: short samples are less often hit by a time slice elsewhere


def _step(fn: Callable[..., Any], arrays: list[np.ndarray], make: Callable[..., Any]) -> Any:
    """A closure doing INNER forward + backward passes, each on fresh leaves."""
    import torch

    def run() -> None:
        for _ in range(INNER):
            leaves = [make(a) for a in arrays]
            out = fn(*leaves)
            g = np.ones(out.shape, dtype=np.float32)
            out.backward(g if isinstance(out, Tensor) else torch.from_numpy(g))
    return run


def _per_pass(rec: dict[str, Any]) -> dict[str, Any]:
    """Harness timings of INNER passes -> timings of one pass."""
    for t in rec["timings"].values():
        for key in ("median_s", "min_s", "max_s"):
            t[key] /= INNER
        t["all_s"] = [v / INNER for v in t["all_s"]]
    return rec


def _ours_leaf(a: np.ndarray) -> Tensor:
    return Tensor(a, requires_grad=a.dtype.kind == "f")


def _torch_leaf(a: np.ndarray) -> Any:
    import torch

    t = torch.from_numpy(a)
    return t.requires_grad_(True) if a.dtype.kind == "f" else t


def graph_memory(fn: Callable[..., Tensor], arrays: list[np.ndarray]) -> tuple[int, int]:
    """(bytes allocated and still held after forward, number of graph nodes)."""
    leaves = [_ours_leaf(a) for a in arrays]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    out = fn(*leaves)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    nodes, stack, seen = 0, [out], set()
    while stack:
        n = stack.pop()
        if id(n) in seen or not n.requires_grad or not n._parents:
            continue
        seen.add(id(n))
        nodes += 1
        stack.extend(n._parents)
    return held, nodes


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS.

    With the defaults, every activation-sized temporary (a few MB) is a fresh mmap or a
    re-grown heap, and first-touch page faults dominate elementwise ops on this machine
    (a tanh-GELU backward: ~16 ms vs ~0.4 ms). Raising the mmap and trim thresholds fixes
    it for NumPy and torch alike. Returns False where glibc's ``mallopt`` is unavailable.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)
                and libc.mallopt(m_trim_threshold, 256 * 2**20)
                and libc.mallopt(m_top_pad, 64 * 2**20))


def measure(repeats: int) -> tuple[dict[str, Any], list[list[Any]]]:
    inputs = _inputs(np.random.default_rng(0))
    fused, composed, peer = _ops(True), _ops(False), _torch_ops()
    rows, ops = [], {}
    for name, (keys, fn) in fused.items():
        arrays = [inputs[k] for k in keys]
        rec = _per_pass(compare({
            "fused": _step(fn, arrays, _ours_leaf),
            "composed": _step(composed[name][1], arrays, _ours_leaf),
            "torch": _step(peer[name], arrays, _torch_leaf),
        }, repeats=repeats, threads=1))
        r = ratios(rec, ours="fused")
        t = rec["timings"]
        # noise on a shared machine only adds time: the ratio of minima is the steadier one
        r_min = {k: t[k]["min_s"] / t["fused"]["min_s"] for k in ("composed", "torch")}
        mem_f, nodes_f = graph_memory(fn, arrays)
        mem_c, nodes_c = graph_memory(composed[name][1], arrays)
        ops[name] = {
            "timings": rec["timings"],
            "composed_over_fused": r["composed"],
            "fused_over_torch": 1.0 / r["torch"],
            "composed_over_fused_min": r_min["composed"],
            "fused_over_torch_min": 1.0 / r_min["torch"],
            "graph_bytes": {"fused": mem_f, "composed": mem_c},
            "graph_nodes": {"fused": nodes_f, "composed": nodes_c},
        }
        ms = {k: f"{t[k]['median_s'] * 1e3:.3f} ({t[k]['min_s'] * 1e3:.3f})" for k in t}
        rows.append([name, ms["fused"], ms["composed"], ms["torch"],
                     f"{r['composed']:.2f}× ({r_min['composed']:.2f}×)",
                     f"{1 / r['torch']:.2f}× ({1 / r_min['torch']:.2f}×)",
                     f"{mem_f / 2**20:.2f} / {mem_c / 2**20:.2f}", f"{nodes_f} / {nodes_c}"])
        print(rows[-1], flush=True)
    return ops, rows


COLUMNS = ["op (fwd + bwd)", "fused ms: median (min)", "composed ms", "torch ms",
           "composed / fused: medians (minima)", "fused / torch", "graph MiB fused / composed",
           "nodes fused / composed"]

# The allocator experiment runs in fresh processes, so that glibc's adaptive thresholds start
# from the same state every time (inside one long process the outcome depends on history).
_MALLOC_PROBE = """
import json, time
import numpy as np
from threadpoolctl import threadpool_limits
from spiral.nn import kernels as K
x = np.random.default_rng(0).standard_normal((12, 64, 512)).astype(np.float32)
g = np.ones_like(x)
y, aux = K.gelu_forward(x, "tanh")
c, s = 0.044715, (2 / np.pi) ** 0.5
def one_expression():  # the tanh-GELU backward as one NumPy expression: ~8 temporaries
    t = np.tanh(s * x * (1.0 + c * x * x))
    return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * s * (1.0 + 3.0 * c * x * x))
def in_place():  # the library kernel: two buffers, in-place updates
    return K.gelu_backward(g, x, aux, "tanh")
out = {}
with threadpool_limits(1):
    for name, f in (("one expression", one_expression), ("in-place kernel", in_place)):
        f()
        ts = []
        for _ in range(31):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        out[name] = [float(np.median(ts)) * 1e3, float(min(ts)) * 1e3]  # ms
print(json.dumps(out))
"""
TUNED_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20),
             "MALLOC_TOP_PAD_": str(64 * 2**20)}


def malloc_effect() -> dict[str, Any]:
    """Median and min time (ms) of a GELU backward, one-expression vs in-place, per allocator."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parent.parent / "src")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    base["PYTHONPATH"] = src + os.pathsep + base.get("PYTHONPATH", "")
    runs = {}
    for label, extra in (("glibc defaults", {}), ("tuned", TUNED_ENV)):
        proc = subprocess.run([sys.executable, "-c", _MALLOC_PROBE], env={**base, **extra},
                              capture_output=True, text=True, check=True)
        runs[label] = json.loads(proc.stdout)
    rows = [[name, *(f"{runs[label][name][i]:.3f}" for label in runs for i in (0, 1)),
             f"{runs['glibc defaults'][name][0] / runs['tuned'][name][0]:.1f}×"]
            for name in runs["tuned"]]
    return {
        "runs": runs,
        "table": {"columns": ["tanh-GELU backward, (12, 64, 512) float32",
                              "defaults: median ms", "defaults: min ms", "tuned: median ms",
                              "tuned: min ms", "median slow-down with defaults"],
                  "rows": rows},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    import torch  # noqa: F401  (loaded so the harness pins its thread pool too)

    effect = malloc_effect()
    print(effect["table"]["rows"], flush=True)
    tuned = tune_malloc()
    ops, rows = measure(args.repeats)
    results = {
        "shapes": {"batch": B, "context_length": T, "d_model": D, "n_heads": H,
                   "vocab_size": V, "dtype": "float32", "threads": 1},
        "repeats": args.repeats,
        "passes_per_sample": INNER,
        "malloc_tuned": tuned,
        "ops": ops,
        "table": {"columns": COLUMNS, "rows": rows},
        "malloc_effect": effect,
    }
    print(save("fused_ops", results))


if __name__ == "__main__":
    main()
