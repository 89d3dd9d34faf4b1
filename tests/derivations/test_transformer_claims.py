"""The stage-8 chapter's claims, each checked numerically."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.models.gpt import GPT, GPTConfig, count_parameters
from spiral.nn import functional as F
from spiral.nn import kernels as K
from spiral.nn.transformer import Block, MultiHeadAttention

pytestmark = pytest.mark.stage8


def test_mha_is_a_sum_over_head_subspaces() -> None:
    """MHA(x) = Σ_h softmax(Q_h K_hᵀ/√hd + M) V_h W_O,hᵀ, with Q_h = x W_Q[h rows]ᵀ."""
    rng = np.random.default_rng(0)
    C, H = 12, 3
    hd = C // H
    mha = MultiHeadAttention(C, H, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 5, C))
    W = mha.qkv_proj.weight.data  # (3C, C)
    Wq, Wk, Wv = W[:C], W[C:2 * C], W[2 * C:]
    Wo = mha.out_proj.weight.data  # (C, C): column block h reads head h
    total = np.zeros_like(x)
    mask = K.causal_mask(5, 5, np.float64)
    for h in range(H):
        rows = slice(h * hd, (h + 1) * hd)
        q, k, v = x @ Wq[rows].T, x @ Wk[rows].T, x @ Wv[rows].T  # (B, T, hd) each
        a = K.softmax_forward(q @ np.swapaxes(k, -1, -2) / np.sqrt(hd) + mask, -1)
        total += (a @ v) @ Wo[:, rows].T  # (B, T, hd) @ (hd, C)
    np.testing.assert_allclose(mha(Tensor(x)).data, total, rtol=1e-12, atol=1e-13)


def test_heads_cost_the_same_parameters_and_flops() -> None:
    """Parameters of MHA do not depend on n_heads; score FLOPs B·H·T²·hd = B·T²·d_model."""
    counts = {h: MultiHeadAttention(24, h, rng=np.random.default_rng(0)).num_parameters()
              for h in (1, 2, 3, 4, 6, 8, 12, 24)}
    assert len(set(counts.values())) == 1 and counts[1] == 4 * 24 * 24
    T = 64
    assert len({h * T * T * (24 // h) for h in counts}) == 1


def test_one_head_is_rank_limited() -> None:
    """One head gives each position ONE distribution over the past; H heads give H.
    With H heads, the attention outputs of a position can mix H different positions."""
    rng = np.random.default_rng(1)
    mha = MultiHeadAttention(16, 4, rng=rng, dtype=np.float64)
    _, w = mha(Tensor(rng.standard_normal((1, 8, 16))), need_weights=True)  # (1, 4, 8, 8)
    last = w[0, :, -1, :]  # the four heads' distributions for the last position
    assert np.linalg.matrix_rank(last, tol=1e-6) == 4


def test_weight_tying_saves_only_the_embedding() -> None:
    """Tying removes vocab_size·d_model parameters: far from half the baby GPT."""
    c = GPTConfig.preset("baby", 65)
    tied, untied = count_parameters(c), count_parameters(GPTConfig.preset("baby", 65,
                                                                          tie_weights=False))
    assert untied - tied == 65 * 128
    assert (untied - tied) / untied < 0.02


def test_zero_branches_make_pre_ln_blocks_the_identity() -> None:
    """x + F(LN x) with F's output projections zero is exactly x, and its Jacobian is I:
    the pre-LN residual stream carries the gradient untouched; post-LN still normalizes."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 8)) * 3 + 1
    for placement in ("pre", "post"):
        blk = Block(8, 2, placement=placement, rng=rng, dtype=np.float64)
        blk.attn.out_proj.weight.data[...] = 0.0
        assert blk.ffn is not None
        blk.ffn.proj.weight.data[...] = 0.0
        xt = Tensor(x, requires_grad=True)
        y = blk(xt)
        g = rng.standard_normal(y.shape)
        y.backward(g)
        if placement == "pre":
            np.testing.assert_array_equal(y.data, x)
            np.testing.assert_array_equal(xt.grad, g)
        else:  # LN(LN(x)) = LN(x): unit variance per position, not x
            np.testing.assert_allclose(y.data.std(-1), 1.0, rtol=1e-4)
            assert not np.allclose(xt.grad, g)


def test_residual_scaling_keeps_the_stream_variance_flat() -> None:
    """Pre-LN branches read LN(x), so each adds variance ∝ σ_out² whatever the stream's
    scale: dividing σ_out by √(2L) divides the stream's variance GROWTH by 2L (here 16)."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 65, (8, 64))
    ratios = {}
    for scaled in (True, False):
        m = GPT(GPTConfig(vocab_size=65, n_layers=8), rng=np.random.default_rng(4))
        if not scaled:
            for name, p in m.named_parameters():
                if name.endswith(("out_proj.weight", "ffn.proj.weight")):
                    p.data *= np.sqrt(2 * 8)
        x0 = (m.tok_emb(ids) + m.pos_emb(np.arange(64))).data
        x = Tensor(x0)
        for blk in m.blocks:
            x = blk(x)
        ratios[scaled] = float(x.data.var() / x0.var())
    growth = (ratios[False] - 1) / (ratios[True] - 1)
    assert 16 / 1.5 < growth < 16 * 1.5


def test_tied_head_gradient_is_the_sum_of_both_uses() -> None:
    """With tying, ∂L/∂E = (embedding-lookup gradient) + (output-layer gradient)."""
    c = GPTConfig(vocab_size=9, context_length=6, n_layers=1, n_heads=2, d_model=8)
    m = GPT(c, rng=np.random.default_rng(5), dtype=np.float64)
    rng = np.random.default_rng(6)
    x, y = rng.integers(0, 9, (2, 6)), rng.integers(0, 9, (2, 6))
    F.cross_entropy(m(x), y).backward()
    tied = m.tok_emb.weight.grad.copy()
    m.zero_grad()
    h, _ = m.hidden(x)
    head = Tensor(m.tok_emb.weight.data.copy(), requires_grad=True)
    F.cross_entropy(F.linear(h, head), y).backward()
    np.testing.assert_allclose(tied, m.tok_emb.weight.grad + head.grad, rtol=1e-10)


def test_cut_fraction_matches_the_evaluators_windows() -> None:
    """Names section: averaged over the T alignments of the window grid, the fraction of
    targets whose name began before their window is E[min(k, T)] / T, and k̄ / T once T
    exceeds every name. Counted here on the evaluator's own windows (``windows_of``)."""
    from spiral.evaluate import windows_of
    from spiral.experiments.transformer.names import cut_fraction

    rng = np.random.default_rng(0)
    names = ["x" * int(n) for n in rng.integers(1, 12, 400)]
    offset = [0]  # the stream's leading newline (never a target)
    for n in names:
        offset += list(range(len(n) + 1))  # letters at offsets 0..n-1, the closing newline at n
    k = np.array(offset)  # a target at window position j is cut when j <= k
    for T in (4, 8, 16, 32):
        cut = total = 0
        for shift in range(T):  # every alignment of the grid, as a random order implies
            idx = np.arange(shift, len(k))
            for block in windows_of(idx, T):
                for row in block:
                    for j in range(1, len(row)):
                        t = row[j]
                        total += 1
                        cut += j <= k[t]
        assert cut / total == pytest.approx(cut_fraction(names, T), rel=0.01)
    kbar = sum(len(n) * (len(n) + 1) / 2 for n in names) / sum(len(n) + 1 for n in names)
    assert cut_fraction(names, 32) == pytest.approx(kbar / 32, rel=1e-12)
    assert cut_fraction(names, 4) < kbar / 4  # capped: a target is cut at most once


def test_one_head_two_copies_margins_sum_to_the_theorems_terms() -> None:
    """'A task one head cannot do': for the second output (copy x_{t-3}) with logits
    a·F[k, x1] + b·F[k, x3] + c_k, the correct-minus-competitor margins of the inputs (i,i)
    and (j,j) sum to (a+b)·D and those of (i,j) and (j,i) to (b-a)·D, D = F_ii+F_jj-F_ij-F_ji.
    So all four positive forces D > 0 and b > a; the first output forces a > b. Checked on
    random readouts, weights and constants; and the two-head construction gets both right."""
    rng = np.random.default_rng(0)
    V = 5

    def logits(F_: np.ndarray, a: float, b: float, c: np.ndarray, x1: int, x3: int) -> np.ndarray:
        return a * F_[:, x1] + b * F_[:, x3] + c

    for _ in range(200):
        F_, c = rng.normal(size=(V, V)), rng.normal(size=V)
        a, b = rng.uniform(0, 1, 2)
        i, j = rng.choice(V, 2, replace=False)
        D = F_[i, i] + F_[j, j] - F_[i, j] - F_[j, i]

        def margin(x1: int, x3: int, target: int, other: int,
                   F_: np.ndarray = F_, a: float = a, b: float = b,
                   c: np.ndarray = c) -> float:
            lg = logits(F_, a, b, c, x1, x3)
            return float(lg[target] - lg[other])

        diag = margin(i, i, i, j) + margin(j, j, j, i)
        off = margin(i, j, j, i) + margin(j, i, i, j)  # second output: the target is x3
        assert diag == pytest.approx((a + b) * D, abs=1e-12)
        assert off == pytest.approx((b - a) * D, abs=1e-12)
    # two heads write the two tokens through separate value maps (U1 for t-1, U3 for t-3):
    # readouts that look at one head each get both outputs right on every input
    U1, U3 = np.eye(V), np.eye(V)
    for x1 in range(V):
        for x3 in range(V):
            stream = np.concatenate([U1[x1], U3[x3]])  # head 1's and head 2's subspaces
            first = np.hstack([10 * np.eye(V), np.zeros((V, V))]) @ stream
            second = np.hstack([np.zeros((V, V)), 10 * np.eye(V)]) @ stream
            assert np.argmax(first) == x1 and np.argmax(second) == x3


def test_our_init_and_the_torch_references_have_the_same_distribution() -> None:
    """Stage 8's crossed design starts from 'our initial weights have the same distribution as
    PyTorch's': every tensor of GPT(...) and of the PyTorch reference has the same shape,
    a mean near 0 and a standard deviation within 3 % of the nominal one (0.02, the residual
    projections 0.02/sqrt(2L), gains exactly 1) — nanoGPT's initialization on both sides."""
    torch = pytest.importorskip("torch")
    torch_gpt = pytest.importorskip("benchmarks.torch_gpt")
    cfg = GPTConfig.preset("baby", 65)
    ours = GPT(cfg, rng=np.random.default_rng(0)).state_dict()
    torch.manual_seed(0)
    theirs = {k: v.detach().numpy() for k, v in torch_gpt.TorchGPT(cfg).state_dict().items()}
    assert ours.keys() == theirs.keys()
    resid = 0.02 / np.sqrt(2 * cfg.n_layers)
    for k, a in ours.items():
        b = theirs[k]
        assert a.shape == b.shape and a.dtype == b.dtype, k
        if a.ndim == 1:  # LayerNorm gains
            assert np.all(a == 1) and np.all(b == 1), k
            continue
        nominal = resid if k.endswith(("out_proj.weight", "ffn.proj.weight")) else 0.02
        for w in (a, b):
            assert abs(w.std() / nominal - 1) < 0.03, (k, w.std())
            assert abs(w.mean()) < 4 * nominal / np.sqrt(w.size), k
