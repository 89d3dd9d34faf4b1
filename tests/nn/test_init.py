"""spiral.nn.init against torch.nn.init: gains, fans, and the distributions each scheme draws.

Statistical tolerances. With N iid draws of variance σ² and kurtosis κ (3 for a normal law,
9/5 for a uniform one) the sample mean has standard error σ/√N and the sample variance has
relative standard error √((κ − 1)/N). Every check allows 5 standard errors, so a correct
initializer fails with probability below 1e-6 for any seed; a wrong scheme (say LeCun's
1/fan_in instead of Glorot's 2/(fan_in + fan_out)) is off by far more than that at these N.
For uniform laws, max|w| ≤ a always, and P(max|w| < a(1 − 10/N)) = (1 − 10/N)^N ≈ e^{-10}.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.nn import Linear, Parameter, init

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage6

SHAPES = [(384, 256), (64, 48, 3)]  # a Linear weight and a conv-like (out, in, kernel) weight


def _expected_std(scheme: str, shape: tuple[int, ...], gain: float, mode: str) -> float:
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(np.zeros(shape))
    if scheme.startswith("xavier"):
        return gain * math.sqrt(2.0 / (fan_in + fan_out))
    return gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def _check_moments(w: np.ndarray, std: float, kurtosis: float) -> None:
    n = w.size
    assert abs(w.mean()) < 5 * std / math.sqrt(n), (w.mean(), std)
    rel = w.var() / std**2 - 1.0
    assert abs(rel) < 5 * math.sqrt((kurtosis - 1.0) / n), (w.var(), std**2)


@pytest.mark.parametrize("name", ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                                  "conv_transpose2d", "conv_transpose3d", "sigmoid", "tanh",
                                  "relu", "leaky_relu", "selu"])
def test_calculate_gain_matches_torch(name: str) -> None:
    assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))


@pytest.mark.parametrize("slope", [0.0, 0.2, 1.0, math.sqrt(5.0)])
def test_leaky_relu_gain_with_slope_matches_torch(slope: float) -> None:
    assert init.calculate_gain("leaky_relu", slope) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", slope))


def test_calculate_gain_rejects_unknown() -> None:
    with pytest.raises(ValueError):
        init.calculate_gain("swish")


@pytest.mark.parametrize("shape", [(7, 3), (5, 4, 3), (6, 2, 3, 4), (2, 3, 1, 1, 5)])
def test_fans_match_torch(shape: tuple[int, ...]) -> None:
    ours = init.calculate_fan_in_and_fan_out(np.zeros(shape))
    ref = torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    assert ours == ref


def test_fans_need_two_dimensions() -> None:
    with pytest.raises(ValueError):
        init.calculate_fan_in_and_fan_out(np.zeros(5))
    with pytest.raises(ValueError):
        init.kaiming_normal_(np.zeros((3, 3)), mode="fan_avg", generator=np.random.default_rng())


CASES = [  # (scheme, kwargs for ours and torch, gain used in the formula, mode)
    ("xavier_uniform_", {}, 1.0, "fan_in"),
    ("xavier_uniform_", {"gain": 5.0 / 3.0}, 5.0 / 3.0, "fan_in"),
    ("xavier_normal_", {}, 1.0, "fan_in"),
    ("xavier_normal_", {"gain": math.sqrt(2.0)}, math.sqrt(2.0), "fan_in"),
    ("kaiming_uniform_", {}, math.sqrt(2.0 / (1 + 0.0)), "fan_in"),
    ("kaiming_uniform_", {"a": math.sqrt(5.0)}, math.sqrt(2.0 / 6.0), "fan_in"),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2.0), "fan_out"),
    ("kaiming_normal_", {"nonlinearity": "relu"}, math.sqrt(2.0), "fan_in"),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2.0), "fan_out"),
    ("kaiming_normal_", {"nonlinearity": "tanh"}, 5.0 / 3.0, "fan_in"),
    ("kaiming_normal_", {"a": 0.2}, math.sqrt(2.0 / 1.04), "fan_in"),
    ("kaiming_normal_", {"nonlinearity": "linear"}, 1.0, "fan_in"),  # LeCun: N(0, 1/fan_in)
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("scheme", "kwargs", "gain", "mode"), CASES)
def test_init_distribution_matches_formula_and_torch(
    scheme: str, kwargs: dict, gain: float, mode: str, shape: tuple[int, ...]
) -> None:
    ours = getattr(init, scheme)(np.zeros(shape), **kwargs, generator=np.random.default_rng(0))
    ref = getattr(torch.nn.init, scheme)(torch.empty(shape, dtype=torch.float64), **kwargs,
                                         generator=torch.Generator().manual_seed(0)).numpy()
    std = _expected_std(scheme, shape, gain, mode)
    kurtosis = 1.8 if "uniform" in scheme else 3.0
    _check_moments(ours, std, kurtosis)
    _check_moments(ref, std, kurtosis)  # torch draws from the same law: the formula is right
    if "uniform" in scheme:
        bound = math.sqrt(3.0) * std
        for w in (ours, ref):
            assert np.abs(w).max() <= bound * (1 + 1e-12)
            assert np.abs(w).max() > bound * (1 - 10.0 / w.size)


def test_xavier_is_not_lecun() -> None:
    """Glorot's variance 2/(fan_in+fan_out) differs from LeCun's 1/fan_in when the fans differ."""
    g = np.random.default_rng(1)
    w = init.xavier_normal_(np.zeros((1024, 256)), generator=g)  # fan_in 256, fan_out 1024
    assert w.var() == pytest.approx(2.0 / 1280, rel=0.02)
    assert abs(w.var() - 1.0 / 256) > 0.5 * (1.0 / 256)


def test_simple_fills() -> None:
    g = np.random.default_rng(2)
    w = init.uniform_(np.zeros(100_000), -2.0, 3.0, generator=g)
    assert w.min() >= -2.0 and w.max() < 3.0
    _check_moments(w - 0.5, 5.0 / math.sqrt(12.0), 1.8)
    w = init.normal_(np.zeros(100_000), 1.5, 0.5, generator=g)
    _check_moments(w - 1.5, 0.5, 3.0)
    assert (init.zeros_(np.ones((3, 4))) == 0).all()
    assert (init.ones_(np.zeros((3, 4))) == 1).all()
    assert (init.constant_(np.zeros(3), 0.25) == 0.25).all()


def test_in_place_on_parameters_keeps_dtype_and_identity() -> None:
    p = Parameter(np.zeros((64, 32), dtype=np.float32))
    arr = p.data
    out = init.kaiming_uniform_(p, nonlinearity="relu", generator=np.random.default_rng(0))
    assert out is p and p.data is arr and p.dtype == np.float32
    assert np.abs(p.data).max() > 0
    t = Tensor(np.zeros((4, 4)))
    init.xavier_normal_(t, generator=np.random.default_rng(0))
    assert t.dtype == np.float64 and t.data.std() > 0


def test_same_generator_seed_same_weights() -> None:
    a = init.xavier_uniform_(np.zeros((8, 8)), generator=np.random.default_rng(7))
    b = init.xavier_uniform_(np.zeros((8, 8)), generator=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_linear_default_is_kaiming_uniform_with_a_sqrt5() -> None:
    """torch's Linear default: kaiming_uniform_(a=√5) has bound exactly 1/√fan_in."""
    fan_in = 300
    lin = Linear(fan_in, 200, rng=np.random.default_rng(0), dtype=np.float64)
    w = init.kaiming_uniform_(np.zeros((200, fan_in)), a=math.sqrt(5.0),
                              generator=np.random.default_rng(1))
    bound = 1.0 / math.sqrt(fan_in)
    assert np.abs(w).max() <= bound * (1 + 1e-12)
    assert np.abs(lin.weight.data).max() <= bound * (1 + 1e-12)
    _check_moments(lin.weight.data, bound / math.sqrt(3.0), 1.8)
    _check_moments(w, bound / math.sqrt(3.0), 1.8)
