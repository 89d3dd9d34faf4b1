"""Per-op overhead of spiral's ``Tensor`` against PyTorch CPU, forward + backward.

Run from the repository root::

    PYTHONPATH=src python -m benchmarks.bench_tensor_ops [--repeats 7]

For each primitive op and two sizes (16×16, where Python overhead dominates, and 256×256,
where the arithmetic does) we time ``inner`` repetitions of: build fresh leaves' graph
(op, then ``.sum()``), ``backward()``, clear the grads — on our engine and on torch, one
thread each, interleaved by :func:`benchmarks.harness.compare`. A final row times a small
MLP training step (two ``Linear`` + tanh layers, mean-squared error) the same way.

The ratio is spiral time ÷ torch time (below 1: we are faster), of the medians; the ratio
of the minima is stored beside it because the shared machine's noise mostly adds time, so
the fastest repeat of each side is the cleaner estimate of its cost. Writes
``docs/results/benchmarks/tensor_ops/results.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.harness import compare, save
from spiral.autograd import Tensor

SIZES = (16, 256)

OPS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "add (broadcast row)": lambda m, a, b: a + b[0],
    "mul": lambda m, a, b: a * b,
    "matmul": lambda m, a, b: a @ b,
    "tanh": lambda m, a, b: a.tanh(),
    "exp": lambda m, a, b: a.exp(),
    "relu": lambda m, a, b: a.relu(),
    "sum(dim=-1)": lambda m, a, b: a.sum(-1),
    "max(dim=-1)": lambda m, a, b: a.max(-1)[0],
    "transpose": lambda m, a, b: a.transpose(0, 1),
    "reshape": lambda m, a, b: a.reshape(-1),
    "index rows": lambda m, a, b: a[m.tensor(np.arange(a.shape[0]) % 7)],
    "cat": lambda m, a, b: m.cat([a, b], 0),
    "chunk(2) and recombine": lambda m, a, b: _chunk_mul(a),
}


def _chunk_mul(a: Any) -> Any:
    q, k = a.chunk(2, 1)  # (n, n) -> 2 x (n, n/2), like a fused qkv projection's split
    return q * k


def _step(op: Callable[..., Any], m: Any, leaves: list[Any], inner: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(inner):
            op(m, *leaves).sum().backward()
            for t in leaves:
                t.grad = None
    return run


def _mlp_step(m: Any, make: Callable[[np.ndarray], Any], rng: np.random.Generator,
              inner: int) -> Callable[[], None]:
    """One training step's autograd work for a 64-128-128-1 MLP on a batch of 32."""
    params = [make(rng.standard_normal(s).astype(np.float32) * 0.1)
              for s in [(64, 128), (128,), (128, 128), (128,), (128, 1), (1,)]]
    x = rng.standard_normal((32, 64)).astype(np.float32)
    y = rng.standard_normal((32, 1)).astype(np.float32)
    xt, yt = m.tensor(x), m.tensor(y)

    def run() -> None:
        for _ in range(inner):
            w1, b1, w2, b2, w3, b3 = params
            h = (xt @ w1 + b1).tanh()
            h = (h @ w2 + b2).tanh()
            loss = ((h @ w3 + b3 - yt) ** 2).mean()
            loss.backward()
            for p in params:
                p.grad = None
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import torch

    import spiral.autograd as ag

    rng = np.random.default_rng(0)
    rows: list[list[Any]] = []
    ops: dict[str, Any] = {}
    for n in SIZES:
        inner = 200 if n == 16 else 40
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        for name, op in OPS.items():
            ours = [Tensor(a.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True)]
            theirs = [torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)]
            rec = compare({"spiral": _step(op, ag, ours, inner),
                           "torch": _step(op, torch, theirs, inner)},
                          repeats=args.repeats, threads=1)
            t = rec["timings"]
            us = {k: t[k]["median_s"] / inner * 1e6 for k in t}
            ratio = t["spiral"]["median_s"] / t["torch"]["median_s"]
            ratio_min = t["spiral"]["min_s"] / t["torch"]["min_s"]
            ops[f"{name} {n}x{n}"] = {"timings": t, "inner": inner, "us_per_call": us,
                                      "spiral_over_torch": ratio,
                                      "spiral_over_torch_min": ratio_min}
            rows.append([name, f"{n}×{n}", round(us["spiral"], 1), round(us["torch"], 1),
                         f"{ratio:.2f}×", f"{ratio_min:.2f}×"])
            print(rows[-1], flush=True)
    inner = 20
    rec = compare({"spiral": _mlp_step(ag, lambda z: Tensor(z, requires_grad=True), rng, inner),
                   "torch": _mlp_step(torch, lambda z: torch.tensor(z, requires_grad=True), rng,
                                      inner)},
                  repeats=args.repeats, threads=1)
    t = rec["timings"]
    us = {k: t[k]["median_s"] / inner * 1e6 for k in t}
    ratio = t["spiral"]["median_s"] / t["torch"]["median_s"]
    ratio_min = t["spiral"]["min_s"] / t["torch"]["min_s"]
    ops["mlp step"] = {"timings": t, "inner": inner, "us_per_call": us,
                       "spiral_over_torch": ratio, "spiral_over_torch_min": ratio_min}
    rows.append(["MLP step 64-128-128-1, batch 32", "—", round(us["spiral"], 1),
                 round(us["torch"], 1), f"{ratio:.2f}×", f"{ratio_min:.2f}×"])
    print(rows[-1], flush=True)
    ratios_small = [v["spiral_over_torch"] for k, v in ops.items() if k.endswith("16x16")]
    ratios_medium = [v["spiral_over_torch"] for k, v in ops.items() if k.endswith("256x256")]
    results = {
        "dtype": "float32",
        "threads": 1,
        "repeats": args.repeats,
        "ops": ops,
        "median_ratio_16": float(np.median(ratios_small)),
        "median_ratio_256": float(np.median(ratios_medium)),
        "mlp_step_ratio": ratio,
        "table": {
            "columns": ["op (fwd + sum + bwd)", "size", "spiral µs (median)",
                        "torch µs (median)", "spiral ÷ torch (medians)",
                        "spiral ÷ torch (minima)"],
            "rows": rows,
        },
    }
    print(save("tensor_ops", results))


if __name__ == "__main__":
    main()
