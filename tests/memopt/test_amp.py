"""Stage 12: float formats, autocast, and GradScaler against torch.amp.GradScaler."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from spiral.amp import FORMATS, GradScaler, autocast, bit_fields, format_of, round_to
from spiral.amp.training import amp_train_step, make_scaler, underflow_fraction
from spiral.autograd import Tensor
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.nn.layers import Linear
from spiral.optim import SGD

pytestmark = pytest.mark.stage12


@pytest.mark.parametrize("name", FORMATS)
def test_derived_ranges_match_finfo(name: str) -> None:
    f = format_of(name)
    ref = np.finfo(np.float16) if name == "float16" else (
        np.finfo(np.float32) if name == "float32" else ml_dtypes.finfo(getattr(ml_dtypes, name)))
    assert f.bits == ref.bits
    assert f.max == float(ref.max)
    assert f.smallest_normal == float(ref.smallest_normal)
    assert f.smallest_subnormal == float(ref.smallest_subnormal)
    assert f.eps == float(ref.eps)


def test_bit_fields() -> None:
    assert bit_fields(1.0, "float16") == ("0", "01111", "0000000000")
    assert bit_fields(-2.0, "bfloat16") == ("1", "10000000", "0000000")
    assert bit_fields(65504.0, "float16") == ("0", "11110", "1111111111")
    with pytest.raises(ValueError, match="unknown float format"):
        format_of("float12")


def test_bfloat16_and_float16_rounding_match_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(20000) * np.exp(rng.uniform(-30, 30, 20000))).astype(np.float32)
    x[:4] = [1 + 2**-8, 1 + 3 * 2**-8, 2**-130, 3.3e38]  # ties to even, subnormal, overflow
    for name, tdtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        ours = round_to(x, name)
        theirs = torch.from_numpy(x).to(tdtype).to(torch.float32).numpy()
        assert np.array_equal(ours, theirs, equal_nan=True)


def test_autocast_rounds_matmuls_and_their_gradients_only() -> None:
    lin = Linear(8, 8, rng=np.random.default_rng(1))
    x = Tensor(np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32) * 1e-3,
               requires_grad=True)
    with autocast("float16"):
        y = lin(x)
        p = F.softmax(y * 3.0, -1)  # float32 op: not rounded
    assert np.array_equal(round_to(y.data, "float16"), y.data)
    assert not np.array_equal(round_to(p.data, "float16"), p.data)
    (y * 1e-6).sum().backward()  # gradients of 1e-6 · W: some underflow in float16
    assert np.array_equal(round_to(x.grad, "float16"), x.grad)
    assert lin.weight.grad.dtype == np.float32  # master weights stay float32
    assert F.linear.__name__ == "linear"  # the policy is undone on exit
    with pytest.raises(ValueError, match="autocast dtype"):
        with autocast("float8"):
            pass


def _script() -> list[float]:
    return [1.0, 1.0, np.inf, 1.0, 1.0, 1.0, np.nan, 1.0, 1.0, 1.0, 1.0, 1e30, 1.0]


def test_grad_scaler_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    kw = dict(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    ts = torch.amp.GradScaler("cpu", **kw)
    ours = GradScaler(**kw)
    tp = torch.nn.Parameter(torch.ones(3))
    topt = torch.optim.SGD([tp], lr=0.1)
    lin = Linear(3, 1, bias=False, rng=np.random.default_rng(0))
    opt = SGD(lin.parameters(), lr=0.1)
    for g in _script():
        ts.scale(torch.tensor(1.0))  # torch creates its scale on the first scale()
        ours.scale(1.0)
        grad = np.array([g, 0.5, -0.25], dtype=np.float32) * ours.get_scale()
        tp.grad = torch.from_numpy(grad.copy())
        lin.weight.grad = grad.reshape(1, 3).copy()
        before_t, before_o = tp.detach().clone().numpy(), lin.weight.data.copy()
        ts.step(topt)
        ours.step(opt)
        ts.update()
        ours.update()
        assert ours.get_scale() == ts.get_scale()
        stepped_t = not np.array_equal(before_t, tp.detach().numpy())
        stepped_o = not np.array_equal(before_o, lin.weight.data)
        assert stepped_t == stepped_o
        assert ours.state_dict()["_growth_tracker"] == ts.state_dict()["_growth_tracker"]
    assert set(ours.state_dict()) == set(ts.state_dict())


def test_grad_scaler_defaults_and_errors() -> None:
    torch = pytest.importorskip("torch")
    ts, ours = torch.amp.GradScaler("cpu"), GradScaler()
    ts.scale(torch.tensor(1.0))
    for k, v in ts.state_dict().items():
        assert ours.state_dict()[k] == v
    lin = Linear(2, 1, rng=np.random.default_rng(0))
    opt = SGD(lin.parameters(), lr=0.1)
    lin.weight.grad = np.ones((1, 2), dtype=np.float32)
    ours.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        ours.unscale_(opt)
    ours.step(opt)
    with pytest.raises(RuntimeError, match="already been called since the last update"):
        ours.step(opt)
    ours.update()
    with pytest.raises(RuntimeError, match="No inf checks"):
        ours.update()
    off = GradScaler(enabled=False)
    assert off.scale(3.0) == 3.0 and off.get_scale() == 1.0 and off.state_dict() == {}
    restored = GradScaler()
    restored.load_state_dict({**ours.state_dict(), "scale": 8.0})
    assert restored.get_scale() == 8.0


def test_underflow_fraction_and_scaling() -> None:
    tiny = format_of("float16").smallest_subnormal
    v = np.array([tiny / 4, tiny, 1e-3, 0.0])
    assert underflow_fraction(v) == pytest.approx(1 / 3)
    assert underflow_fraction(v, scale=2.0**16) == 0.0
    assert underflow_fraction(v, "bfloat16") == 0.0


def test_amp_train_step_all_precisions() -> None:
    c = GPTConfig.preset("baby", 11, n_layers=1, d_model=16, n_heads=2, context_length=8)
    x = np.random.default_rng(0).integers(0, 11, (2, 8))
    for precision in ("float32", "bfloat16", "float16", "float16-noscale"):
        m = GPT(c, rng=np.random.default_rng(0))
        opt = m.configure_optimizer(lr=1e-2)
        scaler = make_scaler(precision)
        out = [amp_train_step(m, opt, x, x, precision, scaler) for _ in range(3)]
        assert out[-1]["loss"] < out[0]["loss"]
        assert all(np.isfinite(p.data).all() for p in m.parameters())
    with pytest.raises(ValueError, match="precision must be one of"):
        make_scaler("float64")


def test_train_loop_precision_option() -> None:
    from spiral.train import TrainConfig, train

    ids = np.random.default_rng(0).integers(0, 11, 2000)
    assert "precision" not in TrainConfig().to_dict()
    assert TrainConfig(precision="float16").to_dict()["precision"] == "float16"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp8")
    c = GPTConfig.preset("baby", 11, n_layers=1, d_model=16, n_heads=2, context_length=8)
    finals = {}
    for precision in ("float32", "bfloat16", "float16"):
        m = GPT(c, rng=np.random.default_rng(0))
        cfg = TrainConfig(max_steps=4, batch_size=2, seq_len=8, eval_interval=4,
                          eval_tokens=200, progress=False, precision=precision)
        st = train(m, m.configure_optimizer(), ids, ids[:300], cfg, np.random.default_rng(1))
        finals[precision] = st.history[-1]["train_loss"]
    assert finals["bfloat16"] != finals["float32"]  # the policy was applied ...
    assert abs(finals["bfloat16"] - finals["float32"]) < 0.05  # ... and changed little
    assert abs(finals["float16"] - finals["float32"]) < 0.05
