"""Sizes in bytes per format, the GGUF export checked, and our INT8 layer's time (honestly).

Sizes: every stored array of the model (:func:`spiral.quant.nbytes`) for float32, INT8 per
channel, INT4 per channel, INT4 per group, and the GGUF files (F32, F16, Q8_0, Q4_0) as
written by :func:`spiral.quant.gguf_io.export_gguf`; each GGUF file is read back with the
``gguf`` package and the model it holds is run against ours (max |Δ logit|; 0 means the
same weights bit for bit, the scales having been rounded to float16 first). Layers whose
width is not a multiple of 32 cannot use ggml's 32-weight blocks and are written as float.
Time: one (d_model → FFN width) layer on ``tokens`` tokens, float32 vs our W8A8 layer
(int8 × int8 → int32 in NumPy's integer matmul, and the same exact sums by float64 BLAS)
vs weight-only INT4 (unpack and dequantize, then float32),
the median of ``repeats`` runs, with the machine's load average recorded: NumPy has no fast
integer matrix product, so this measures NumPy, not what integer hardware would do.
Chapter: stage 18, "Sizes and speed".
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.experiments.framework import Experiment
from spiral.experiments.quant.common import linear_names, load
from spiral.nn.layers import Linear
from spiral.plotting import PALETTE, new_figure
from spiral.quant import QuantLinear, nbytes, quantize_model


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    standin_steps: int = 300
    group_size: int = 64
    tokens: int = 256
    repeats: int = 20


def _gguf(base: Any, c: Config, kind: str, folder: Path) -> dict[str, Any]:
    from spiral.quant.gguf_io import export_gguf, load_gguf, round_scales_to_fp16

    pre = load(c.base, c.standin_steps)
    m = pre.model
    if kind in ("Q8_0", "Q4_0"):
        bits = 8 if kind == "Q8_0" else 4
        names = linear_names(m)
        mods = dict(m.named_modules())
        fit = [n for n in names if mods[n].in_features % 32 == 0]
        quantize_model(m, bits, granularity="group", group_size=32, include=fit)
        quantize_model(m, bits, include=[n for n in names if n not in fit])
        round_scales_to_fp16(m)
    path = folder / f"model-{kind}.gguf"
    written = export_gguf(m, path, tokenizer=pre.tokenizer,
                          float_type="F16" if kind == "F16" else "F32")
    ids = np.random.default_rng(0).integers(0, m.config.vocab_size, (2, m.context_length))
    diff = float(np.abs(load_gguf(path)(ids).data - m(ids).data).max())
    types: dict[str, int] = {}
    for t in written.values():
        types[t] = types.get(t, 0) + 1
    return {"bytes": path.stat().st_size, "types": types, "max_logit_diff": diff}


def _time(f: Any, x: np.ndarray, repeats: int) -> float:
    f(x)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.experiments.inference.common import one_blas_thread

    with one_blas_thread():  # timings of one core, as the table says, on a shared machine
        return _run(config, rng)


def _run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = config
    sizes = {}
    for name, kw in (("float32", None), ("INT8 per channel", dict(bits=8)),
                     ("INT4 per channel", dict(bits=4)),
                     (f"INT4 per group of {c.group_size}", dict(bits=4, granularity="group",
                                                               group_size=c.group_size))):
        m = load(c.base, c.standin_steps).model
        if kw is not None:
            quantize_model(m, **kw)
        sizes[name] = nbytes(m)
    with tempfile.TemporaryDirectory() as tmp:
        gg = {k: _gguf(None, c, k, Path(tmp)) for k in ("F32", "F16", "Q8_0", "Q4_0")}
    cfg = load(c.base, c.standin_steps).config
    lin = Linear(cfg.d_model, cfg.hidden, bias=False, rng=rng)
    x = rng.standard_normal((c.tokens, cfg.d_model)).astype(np.float32)
    w8 = QuantLinear.from_linear(lin, 8, act_bits=8)
    w8i = QuantLinear(w8.qtensor(), None, 8, accumulate="int32")
    w4 = QuantLinear.from_linear(lin, 4)
    load_before = os.getloadavg()
    times = {"float32": _time(lambda a: lin(Tensor(a)), x, c.repeats),
             "W8A8, int32 matmul in NumPy": _time(lambda a: w8i(Tensor(a)), x, c.repeats),
             "W8A8, the same integers by float64 BLAS": _time(lambda a: w8(Tensor(a)), x,
                                                              c.repeats),
             "INT4 weight-only (dequantize, float32)": _time(lambda a: w4(Tensor(a)), x,
                                                             c.repeats)}
    loadavg = [load_before, os.getloadavg()]
    f32 = sizes["float32"]
    rows = [[k, f"{v:,}", f"{v / f32:.1%}", "our safetensors layout"] for k, v in sizes.items()]
    rows += [[f"GGUF {k}", f"{v['bytes']:,}", f"{v['bytes'] / f32:.1%}",
              ", ".join(f"{n}×{t}" for t, n in v["types"].items())] for k, v in gg.items()]
    return {"sizes": sizes, "gguf": gg, "times_s": times, "loadavg": loadavg,
            "layer": [cfg.d_model, cfg.hidden, c.tokens],
            "table": {"columns": ["format", "bytes", "of float32", "tensors"], "rows": rows},
            "time_table": {"columns": ["layer", "median time (ms)", "vs float32"],
                           "rows": [[k, f"{v * 1e3:.3f}", f"{v / times['float32']:.2f}×"]
                                    for k, v in times.items()]}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(1, 1, width=6.0, height=2.8)
    items = list(results["sizes"].items()) + [(f"GGUF {k}", v["bytes"])
                                              for k, v in results["gguf"].items()]
    y = np.arange(len(items))
    ax.barh(y, [v / 1024 for _, v in items], color=[PALETTE[0]] * len(results["sizes"])
            + [PALETTE[2]] * len(results["gguf"]))
    ax.set_yticks(y, [k for k, _ in items], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("KiB")
    return {"sizes": fig}


def check(results: dict[str, Any]) -> None:
    s, g = results["sizes"], results["gguf"]
    assert s["INT8 per channel"] < 0.6 * s["float32"] and s["INT4 per channel"] < s[
        "INT8 per channel"]
    assert g["Q4_0"]["bytes"] < g["Q8_0"]["bytes"] < g["F32"]["bytes"]
    assert g["F16"]["bytes"] < g["F32"]["bytes"]
    assert g["F32"]["max_logit_diff"] == 0.0 and g["Q8_0"]["max_logit_diff"] == 0.0
    assert g["Q4_0"]["max_logit_diff"] == 0.0


EXPERIMENT = Experiment(
    name="quant_size_speed", stage=18, title="Bytes per format; GGUF round trip; INT8 time",
    quick=Config(base="standin", standin_steps=200, group_size=8, repeats=3),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("GGUF Q4_0 bytes", r["gguf"]["Q4_0"]["bytes"])],
)
