"""A 124M-parameter GPT-2 checkpoint on our engine vs transformers: forward time, load memory.

Run from the repository root::

    PYTHONPATH=src python -m benchmarks.bench_hub [--repeats 5] [--seq-len 128]

``transformers`` builds GPT-2 small's shape (12 layers, 12 heads, d_model 768, vocab 50257,
context 1024, tied head; 124M parameters) with random weights and saves it; ``spiral.hub``
loads that folder. We then time one forward pass (batch 1, ``--seq-len`` tokens, no
gradients, float32) of each, ONE thread on both sides, interleaved by
:func:`benchmarks.harness.compare`, and report the ratio of medians. The same run checks the
logits agree (max error relative to the logits' scale) and measures, with tracemalloc, the
peak memory of ``spiral.hub.load_model`` against the model's own bytes: below 2 means the
weights never existed twice. ``os.getloadavg()`` is recorded before and after; above 1 the
result is labelled as taken on a loaded machine. Writes docs/results/benchmarks/hub/.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import compare, fmt_row, ratios, save
from spiral import hub
from spiral.autograd import no_grad


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seq-len", type=int, default=128)
    args = ap.parse_args(argv)
    import torch
    import transformers

    load_before = os.getloadavg()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    ref = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    n_params = sum(p.numel() for p in ref.parameters())
    ids = np.random.default_rng(0).integers(0, 50257, (1, args.seq_len))
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        tracemalloc.start()
        t0 = time.perf_counter()
        ours = hub.load_model(Path(tmp))
        load_s = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    weights = sum(p.data.nbytes for p in ours.parameters())
    tids = torch.tensor(ids)

    def spiral_forward() -> np.ndarray:
        with no_grad():
            return ours(ids).data

    def torch_forward() -> np.ndarray:
        with torch.no_grad():
            return ref(tids).logits.numpy()

    a, b = spiral_forward(), torch_forward()
    rel = float(np.abs(a - b).max() / np.abs(b).max())
    rec = compare({"spiral": spiral_forward, "transformers": torch_forward},
                  repeats=args.repeats, warmup=1, threads=1)
    load_after = os.getloadavg()
    ratio = ratios(rec, "spiral")["transformers"]
    loaded = max(load_before[0], load_after[0]) > 1.0
    results = {
        **rec, "n_parameters": int(n_params), "seq_len": args.seq_len, "batch": 1,
        "logits_rel_err": rel, "load_s": load_s,
        "load_peak_bytes": int(peak), "weights_bytes": int(weights),
        "load_peak_over_weights": peak / weights,
        "transformers_over_spiral": ratio,
        "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "label": ("taken on a LOADED shared machine (load average above 1): absolute times "
                  "and the ratio are indicative only") if loaded else "quiet machine",
        "table": {"columns": ["engine", "median (ms)", "min–max (ms)", "time / ours"],
                  "rows": [fmt_row("spiral (NumPy)", rec["timings"]["spiral"]),
                           fmt_row("transformers (PyTorch)", rec["timings"]["transformers"],
                                   ratio)]},
    }
    path = save("hub", results)
    print(f"{n_params / 1e6:.1f}M parameters, {args.seq_len} tokens, 1 thread: "
          f"spiral {rec['timings']['spiral']['median_s'] * 1e3:.0f} ms, transformers "
          f"{rec['timings']['transformers']['median_s'] * 1e3:.0f} ms (transformers/spiral "
          f"time = {ratio:.2f}); logits rel. err {rel:.1e}; load peak / weights = "
          f"{peak / weights:.2f}; load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
          f"{' (LOADED machine)' if loaded else ''} -> {path}")
    return results


if __name__ == "__main__":
    main()
