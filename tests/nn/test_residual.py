"""Pre-LN and post-LN residual blocks: equal to the same torch network, and their gradient paths."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor, gradcheck_directional
from spiral.nn import FeedForward, PostLNBlock, PreLNBlock, ResidualMLP
from spiral.nn.residual import make_norm

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage6


class TorchResidualMLP(torch.nn.Module):
    """The reference: the same blocks written with torch.nn."""

    def __init__(self, d: int, n_layers: int, placement: str, d_hidden: int, norm: str) -> None:
        super().__init__()
        self.placement = placement
        make = (lambda: torch.nn.LayerNorm(d, dtype=torch.float64)) if norm == "layernorm" \
            else (lambda: torch.nn.RMSNorm(d, dtype=torch.float64))
        self.ffs = torch.nn.ModuleList(torch.nn.Sequential(
            torch.nn.Linear(d, d_hidden, dtype=torch.float64), torch.nn.GELU(),
            torch.nn.Linear(d_hidden, d, dtype=torch.float64)) for _ in range(n_layers))
        self.norms = torch.nn.ModuleList(make() for _ in range(n_layers))
        self.final = make() if placement == "pre" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for ff, ln in zip(self.ffs, self.norms):
            x = x + ff(ln(x)) if self.placement == "pre" else ln(x + ff(x))
        return self.final(x) if self.final is not None else x


def _load(ours: ResidualMLP, ref: TorchResidualMLP, rng: np.random.Generator) -> None:
    with torch.no_grad():
        for i, blk in enumerate(ours.blocks):
            ff, tff, tn = blk.sublayer, ref.ffs[i], ref.norms[i]
            for o, t in ((ff.fc, tff[0]), (ff.proj, tff[2])):
                t.weight.copy_(torch.from_numpy(o.weight.data))
                t.bias.copy_(torch.from_numpy(o.bias.data))
            pairs = [(blk.norm, tn)] + ([(ours.final_norm, ref.final)] if i == 0 and
                                        ours.final_norm is not None else [])
            for o, t in pairs:  # random gains so a wrong norm-parameter gradient shows
                o.weight.data[...] = 1 + 0.1 * rng.standard_normal(o.weight.shape)
                t.weight.copy_(torch.from_numpy(o.weight.data))
                if getattr(o, "bias", None) is not None:
                    o.bias.data[...] = 0.1 * rng.standard_normal(o.bias.shape)
                    t.bias.copy_(torch.from_numpy(o.bias.data))


@pytest.mark.parametrize("placement", ["pre", "post"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_residual_mlp_matches_torch(placement: str, norm: str) -> None:
    rng = np.random.default_rng(0)
    d, n_layers, hidden = 6, 3, 10
    ours = ResidualMLP(d, n_layers, placement, hidden, norm=norm, rng=rng, dtype=np.float64)
    ref = TorchResidualMLP(d, n_layers, placement, hidden, norm)
    _load(ours, ref, rng)
    x = rng.standard_normal((2, 5, d))
    g = rng.standard_normal((2, 5, d))
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), ref(xt)
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), atol=1e-10)
    yo.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), atol=1e-10)
    ours_grads = [p.grad for _, p in ours.named_parameters()]
    ref_grads = [p.grad.numpy() for _, p in ref.named_parameters()]
    assert sorted(np.round([np.linalg.norm(a) for a in ours_grads], 8)) == pytest.approx(
        sorted(np.round([np.linalg.norm(b) for b in ref_grads], 8)), abs=1e-7)
    np.testing.assert_allclose(ours.blocks[0].sublayer.fc.weight.grad,
                               ref.ffs[0][0].weight.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_residual_mlp_directional_gradcheck(placement: str) -> None:
    rng = np.random.default_rng(1)
    net = ResidualMLP(4, 2, placement, 8, rng=rng, dtype=np.float64)
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    params = list(net.parameters())
    assert gradcheck_directional(lambda x, *ps: net(x), [x, *params], rng=rng)


def test_pre_ln_identity_path_passes_the_gradient_unchanged() -> None:
    """With the branch switched off, pre-LN's ∂L/∂x is exactly the upstream gradient;
    post-LN's still passes through the LayerNorm Jacobian (it removes the mean, for one)."""
    rng = np.random.default_rng(2)
    d = 8
    g = rng.standard_normal((4, d))
    for block, identity in ((PreLNBlock, True), (PostLNBlock, False)):
        ff = FeedForward(d, 16, rng=rng, dtype=np.float64)
        ff.proj.weight.data[...] = 0
        ff.proj.bias.data[...] = 0
        blk = block(ff, d, dtype=np.float64)
        x = Tensor(rng.standard_normal((4, d)) * 3, requires_grad=True)
        blk(x).backward(g)
        if identity:
            np.testing.assert_allclose(x.grad, g, atol=1e-14)
        else:
            assert np.abs(x.grad - g).max() > 0.1
            np.testing.assert_allclose(x.grad.sum(-1), 0, atol=1e-12)


def test_parameter_counts_and_errors() -> None:
    d, h, n = 8, 32, 3
    pre = ResidualMLP(d, n, "pre", h, rng=np.random.default_rng(0))
    post = ResidualMLP(d, n, "post", h, rng=np.random.default_rng(0))
    per_block = (d * h + h) + (h * d + d) + 2 * d
    assert post.num_parameters() == n * per_block
    assert pre.num_parameters() == n * per_block + 2 * d  # the final LayerNorm
    assert ResidualMLP(d, n, "pre", h, norm="rmsnorm").num_parameters() == n * (per_block - d) + d
    assert FeedForward(d, h, bias=False).num_parameters() == 2 * d * h  # stage 8's bias-free MLP
    with pytest.raises(ValueError):
        ResidualMLP(d, 1, "middle")
    with pytest.raises(ValueError):
        make_norm("batchnorm", d)
