"""Stage 12: the lean saving policy keeps less and computes exactly the same bits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.nn import kernels as K
from spiral.nn.attention_kernels import scaled_dot_product_attention as sdpa
from spiral.nn.blocking import WHOLE
from spiral.nn.lean import lean_saving
from spiral.optim import AdamW
from spiral.profiling.memory import profile_step

pytestmark = pytest.mark.stage12

V = 23


def _config(**kw: Any) -> GPTConfig:
    base: dict[str, Any] = dict(n_layers=2, d_model=32, n_heads=4, context_length=16)
    base.update(kw)
    return GPTConfig.preset("baby", V, **base)


def _steps(c: GPTConfig, dtype: Any, n: int = 2) -> list[tuple[bytes, bytes, list[bytes]]]:
    """Logits, loss and every gradient (as raw bytes) of ``n`` AdamW steps."""
    m = GPT(c, rng=np.random.default_rng(0), dtype=dtype)
    opt = AdamW(m.parameters(), lr=1e-2)
    r = np.random.default_rng(1)
    out = []
    for _ in range(n):
        x, y = r.integers(0, V, (3, 16)), r.integers(0, V, (3, 16))
        logits = m(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        out.append((logits.data.tobytes(), loss.data.tobytes(),
                    [p.grad.tobytes() for p in m.parameters()]))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("attention", ["naive", "flash"])
def test_lean_is_bit_identical(dtype: Any, dropout: float, attention: str) -> None:
    """Same ops in the same order: logits, loss and gradients agree to the bit, and the
    dropout generator is drawn in the same order (the second step would differ if not)."""
    all_ = _steps(_config(dropout=dropout, attention=attention), dtype)
    lean = _steps(_config(dropout=dropout, attention=attention, saved="lean"), dtype)
    assert lean == all_


@pytest.mark.parametrize("kw", [dict(norm_type="rmsnorm"), dict(gelu_approximate="tanh"),
                                dict(bias=True), dict(ffn_type="swiglu", positional="rope"),
                                dict(placement="post"), dict(positional="none")])
def test_lean_is_bit_identical_across_switches(kw: dict[str, Any]) -> None:
    all_ = _steps(_config(dropout=0.2, attention="flash", **kw), np.float32)
    lean = _steps(_config(dropout=0.2, attention="flash", saved="lean", **kw), np.float32)
    assert lean == all_


def _forward_bytes(c: GPTConfig, B: int, T: int) -> tuple[int, int]:
    """(live bytes above the resident ones at the end of the forward pass, peak)."""
    r = np.random.default_rng(2)
    x, y = r.integers(0, V, (B, T)), r.integers(0, V, (B, T))
    m = GPT(c, rng=np.random.default_rng(0))
    tl = profile_step(m, (x, y), AdamW(m.parameters(), lr=1e-3))
    return [e.live for e in tl.events if e.phase == "forward"][-1] - tl.baseline, tl.peak


@pytest.mark.parametrize("kw", [dict(), dict(attention="flash"), dict(dropout=0.2),
                                dict(attention="flash", dropout=0.2, norm_type="rmsnorm")])
def test_lean_saving_matches_the_derivation(kw: dict[str, Any]) -> None:
    """Measured saving at the end of the forward pass = :func:`lean_saving`, to the byte:
    the derivation names every array the profiler sees that one policy keeps and the other
    does not, and nothing else differs (so the tolerance is zero)."""
    c_all, c_lean = _config(**kw), _config(saved="lean", **kw)
    B, T = 4, 16
    fwd_all, peak_all = _forward_bytes(c_all, B, T)
    fwd_lean, peak_lean = _forward_bytes(c_lean, B, T)
    assert fwd_all - fwd_lean == sum(lean_saving(c_all, B, T).values())
    assert peak_lean < peak_all


def test_lean_saving_terms_per_layer() -> None:
    """The per-layer algebra of the module docstring for one configuration, by hand."""
    c = _config(attention="flash", dropout=0.2)
    N, C, h, T, L, s = 4 * 16, 32, 128, 16, 2, 4
    t = lean_saving(c, 4, 16)
    assert t["norms: x̂ recomputed"] == (2 * L + 1) * (N * C - N) * s
    assert t["GELU: Φ(x) recomputed"] == L * N * h * s
    assert t["residual branches: one node"] == 2 * L * (N * C * s + N * C * (2 * s - 1))
    assert t["embeddings: one node"] == N * C * s + T * C * s + 8 * T + N * C * (2 * s - 1)
    assert t["head merge: a view"] == L * N * C * s
    with pytest.raises(ValueError, match="pre-LN"):
        lean_saving(_config(placement="post"), 4, 16)


def test_saved_is_validated_and_recorded() -> None:
    with pytest.raises(ValueError, match="saved must be one of"):
        _config(saved="some")
    assert "saved" not in _config().to_dict()
    assert _config(saved="lean").to_dict()["saved"] == "lean"
    m = GPT(_config(saved="lean"), rng=np.random.default_rng(0))
    names = [n for n, _ in m.named_parameters()]
    assert names == [n for n, _ in GPT(_config(), rng=np.random.default_rng(0))
                     .named_parameters()]


def test_seq_major_output_makes_the_head_merge_a_view() -> None:
    r = np.random.default_rng(0)
    q, k, v = (Tensor(r.standard_normal((2, 3, 8, 4)), requires_grad=True) for _ in range(3))
    o = sdpa(q, k, v, is_causal=True, kernel="flash", block_q=3, block_k=5, seq_major=True)
    ref = sdpa(q, k, v, is_causal=True, kernel="flash", block_q=3, block_k=5)
    assert np.array_equal(o.data, ref.data)
    merged = o.transpose(1, 2).reshape(2, 8, 12)
    assert np.shares_memory(merged.data, o.data)
    with pytest.raises(ValueError, match="tiled kernel"):
        sdpa(q, k, v, kernel="naive", seq_major=True)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("size", [1000, WHOLE + 12345])
def test_gelu_recompute_kernel_is_bit_identical(approximate: str, size: int) -> None:
    r = np.random.default_rng(0)
    x, g = (r.standard_normal(size).astype(np.float32) for _ in range(2))
    _, aux = K.gelu_forward(x, approximate)
    assert np.array_equal(K.gelu_backward_recompute(g, x, approximate),
                          K.gelu_backward(g, x, aux, approximate))


def test_layer_norm_recompute_is_bit_identical() -> None:
    x = np.random.default_rng(0).standard_normal((5, 7, 33)).astype(np.float32)
    xhat, mean, rstd = K.layer_norm_normalize(x, 1, 1e-5)
    assert np.array_equal(K.layer_norm_recompute(x, 1, mean, rstd), xhat)
    _, xhat2, rstd2 = K.layer_norm_forward(x, 1, None, None, 1e-5)
    assert np.array_equal(xhat2, xhat) and np.array_equal(rstd2, rstd)


def test_lean_ffn_node_refuses_a_second_backward() -> None:
    m = GPT(_config(saved="lean"), rng=np.random.default_rng(0))
    x = np.random.default_rng(1).integers(0, V, (2, 16))
    loss = F.cross_entropy(m(x), x)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_spiral_train_gpt_takes_saved_lean_and_trains_the_same_run(tmp_path) -> None:
    """`spiral train gpt --saved lean --attention flash` records the policy and, being
    bit-identical, ends on the same validation loss as `--saved all` with flash."""
    import json

    from spiral.cli import main

    text = tmp_path / "tiny.txt"
    text.write_text("the cat sat on the mat. " * 40)
    common = ["--data", str(text), "--max-steps", "3", "--eval-interval", "3",
              "--batch-size", "2", "--context-length", "16",
              "--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--attention", "flash",
              "--no-progress"]
    vals = {}
    for saved in ("all", "lean"):
        out = tmp_path / saved
        assert main(["train", "gpt", "--out", str(out), "--saved", saved, *common]) == 0
        cfg = json.loads((out / "config.json").read_text())["model_config"]
        assert cfg.get("saved", "all") == saved
        last = (out / "metrics.jsonl").read_text().splitlines()[-1]
        vals[saved] = json.loads(last)["val_loss"]
    assert vals["lean"] == vals["all"]
