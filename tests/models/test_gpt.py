"""GPT: parameter count, torch parity (logits, gradients, a 20-step loss curve), gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.autograd.gradcheck import gradcheck_directional
from spiral.evaluate import evaluate
from spiral.models.gpt import GPT, GPTConfig, count_parameters
from spiral.nn import functional as F
from spiral.optim import clip_grad_norm_

torch = pytest.importorskip("torch")
torch_gpt = pytest.importorskip("benchmarks.torch_gpt")
pytestmark = pytest.mark.stage8


TINY = GPTConfig(vocab_size=11, context_length=8, n_layers=2, n_heads=2, d_model=8)


@settings(deadline=None, max_examples=20)
@given(n_layers=st.integers(1, 3), n_heads=st.sampled_from([1, 2, 4]),
       d_model=st.sampled_from([4, 8, 12]), expansion=st.sampled_from([1.0, 2.5, 4.0]),
       bias=st.booleans(), tie=st.booleans(), placement=st.sampled_from(["pre", "post"]),
       ffn=st.booleans(), norm=st.booleans())
def test_parameter_count_closed_form(n_layers: int, n_heads: int, d_model: int,
                                     expansion: float, bias: bool, tie: bool, placement: str,
                                     ffn: bool, norm: bool) -> None:
    c = GPTConfig(vocab_size=13, context_length=7, n_layers=n_layers, n_heads=n_heads,
                  d_model=d_model, expansion=expansion, bias=bias, tie_weights=tie,
                  placement=placement, ffn=ffn, norm=norm)
    assert GPT(c, rng=np.random.default_rng(0)).num_parameters() == count_parameters(c)


def test_baby_parameter_count_and_tying() -> None:
    """The baby preset on 65 characters; untying adds exactly vocab_size·d_model."""
    c = GPTConfig.preset("baby", 65)
    C, V, T, L = 128, 65, 64, 4
    assert count_parameters(c) == V * C + T * C + L * (12 * C * C + 2 * C) + C
    untied = GPT(GPTConfig.preset("baby", 65, tie_weights=False), rng=np.random.default_rng(0))
    assert untied.num_parameters() - count_parameters(c) == V * C


def test_presets() -> None:
    baby, small = GPTConfig.preset("baby", 65), GPTConfig.preset("small", 65)
    assert (baby.n_layers, baby.n_heads, baby.d_model, baby.context_length) == (4, 4, 128, 64)
    assert (small.n_layers, small.n_heads, small.d_model, small.context_length) == \
        (6, 6, 384, 256)
    assert not baby.bias and baby.tie_weights and baby.dropout == 0.0
    with pytest.raises(ValueError, match="unknown preset"):
        GPTConfig.preset("huge", 65)


def test_nanogpt_init_statistics() -> None:
    """N(0, 0.02) weights, 0.02/√(2·n_layers) on the residual projections, unit norm gains."""
    m = GPT(GPTConfig.preset("baby", 65), rng=np.random.default_rng(0))
    params = dict(m.named_parameters())
    resid = 0.02 / np.sqrt(8)
    assert abs(params["blocks.0.attn.out_proj.weight"].data.std() - resid) < 0.05 * resid
    assert abs(params["blocks.3.ffn.proj.weight"].data.std() - resid) < 0.05 * resid
    assert abs(params["blocks.1.ffn.fc.weight"].data.std() - 0.02) < 0.001
    assert abs(params["tok_emb.weight"].data.std() - 0.02) < 0.002
    assert np.all(params["final_norm.weight"].data == 1.0)
    assert m.head_weight is m.tok_emb.weight


def test_param_groups_decay_only_matrices() -> None:
    m = GPT(TINY, rng=np.random.default_rng(0))
    decay, keep = m.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in keep["params"])
    assert any(p is m.tok_emb.weight for p in decay["params"])  # as nanoGPT: embeddings too
    assert len(decay["params"]) + len(keep["params"]) == len(list(m.parameters()))


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("tie", [True, False])
def test_logits_equal_torch(dtype: type, tol: float, tie: bool) -> None:
    """Identical weights give identical logits (baby shape, float32 and float64)."""
    c = GPTConfig.preset("baby", 65, n_layers=2, tie_weights=tie)
    ours = GPT(c, rng=np.random.default_rng(1), dtype=dtype)
    ref = torch_gpt.TorchGPT(c).to(torch.float64 if dtype == np.float64 else torch.float32)
    torch_gpt.copy_from_spiral(ref, ours)
    idx = np.random.default_rng(2).integers(0, 65, (3, 64))
    with torch.no_grad():
        want = ref(torch.from_numpy(idx)).numpy()
    np.testing.assert_allclose(ours(idx).data, want, rtol=tol, atol=tol)


def test_gradients_equal_torch() -> None:
    """Every parameter's gradient of the loss equals torch's (float64)."""
    ours = GPT(TINY, rng=np.random.default_rng(3), dtype=np.float64)
    ref = torch_gpt.TorchGPT(TINY).double()
    torch_gpt.copy_from_spiral(ref, ours)
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 11, (4, 8)), rng.integers(0, 11, (4, 8))
    F.cross_entropy(ours(x), y).backward()
    logits = ref(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(logits.reshape(-1, 11),
                                      torch.from_numpy(y).reshape(-1)).backward()
    tgrads = {k: p.grad.numpy() for k, p in ref.named_parameters()}
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, tgrads[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_whole_gpt_gradcheck(placement: str) -> None:
    """Directional derivative of the loss vs central differences, float64, every parameter."""
    c = GPTConfig(vocab_size=7, context_length=6, n_layers=2, n_heads=2, d_model=8,
                  bias=True, placement=placement)
    m = GPT(c, rng=np.random.default_rng(5), dtype=np.float64)
    rng = np.random.default_rng(6)
    x, y = rng.integers(0, 7, (3, 6)), rng.integers(0, 7, (3, 6))
    assert gradcheck_directional(lambda *_: F.cross_entropy(m(x), y), list(m.parameters()),
                                 n_directions=5, rng=rng)


def test_golden_loss_curve_matches_torch() -> None:
    """20 steps of the full recipe (AdamW β2 .99, wd .1 on matrices, warmup + cosine,
    clipping) from the same weights on the same batches: the loss curves agree."""
    from spiral.data import sample_batch
    from spiral.train import TrainConfig, lr_multiplier

    c = GPTConfig(vocab_size=11, context_length=16, n_layers=2, n_heads=2, d_model=16)
    r7 = np.random.default_rng(7)  # a learnable stream: a cycle with 10 % random tokens
    ids = np.where(r7.random(2000) < 0.1, r7.integers(0, 11, 2000), (3 * np.arange(2000)) % 11)
    ours = GPT(c, rng=np.random.default_rng(8), dtype=np.float64)
    init = {k: v.copy() for k, v in ours.state_dict().items()}
    steps, lr = 20, 1e-2
    tcfg = TrainConfig(max_steps=steps, warmup_steps=5, lr=lr, min_lr_ratio=0.1)
    sched = lr_multiplier(tcfg)
    opt = ours.configure_optimizer(lr=lr)
    rng = np.random.default_rng(9)
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * sched(step)
        x, y = sample_batch(ids, 4, 16, rng)
        loss = F.cross_entropy(ours(x), y)
        loss.backward()
        clip_grad_norm_(list(ours.parameters()), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    start = GPT(c, rng=np.random.default_rng(0), dtype=np.float64)
    start.load_state_dict(init)
    _, ref_losses = torch_gpt.train_torch(c, ids, np.random.default_rng(9), max_steps=steps,
                                          batch_size=4, lr=lr, min_lr=lr * 0.1, warmup=5,
                                          dtype=torch.float64, init_from=start)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-8)
    assert losses[-1] < losses[0] - 0.3  # it learned something: the curve is not flat


def test_window_nll_and_evaluator() -> None:
    """window_nll is the per-position cross-entropy; the evaluator scores a stream with it."""
    m = GPT(TINY, rng=np.random.default_rng(10), dtype=np.float64)
    w = np.random.default_rng(11).integers(0, 11, (3, 9))
    nll = m.window_nll(w)
    ce = F.cross_entropy(m(w[:, :-1]), w[:, 1:], reduction="none").data
    np.testing.assert_allclose(nll, ce, rtol=1e-12)
    stream = np.random.default_rng(12).integers(0, 11, 100)
    r = evaluate(m, stream)
    assert r.n_tokens == 99 and abs(r.nats - np.log(11)) < 0.2  # near-uniform at init


def test_rejects_too_long_input() -> None:
    with pytest.raises(ValueError, match="longer than context_length"):
        GPT(TINY, rng=np.random.default_rng(0))(np.zeros((1, 9), dtype=np.int64))


def test_attention_maps() -> None:
    m = GPT(TINY, rng=np.random.default_rng(13))
    maps = m.attention_maps(np.zeros((2, 5), dtype=np.int64))
    assert len(maps) == 2 and maps[0].shape == (2, 2, 5, 5)
    np.testing.assert_allclose(maps[1].sum(-1), 1.0, rtol=1e-5)


def test_generate_runs() -> None:
    from spiral.generate import generate

    m = GPT(TINY, rng=np.random.default_rng(14))
    out = generate(m, [1, 2], 12, np.random.default_rng(0))
    assert len(out) == 12 and all(0 <= t < 11 for t in out)
    assert isinstance(m(np.array([[1]])), Tensor)


@pytest.mark.slow
def test_float32_baby_training_tracks_torch() -> None:
    """200 float32 steps of the baby recipe from the same weights on the same Shakespeare
    batches: our loss curve and PyTorch's stay together (no float32-only drift)."""
    from spiral import data
    from spiral.data import sample_batch
    from spiral.tokenizers.char import CharTokenizer

    s = data.get_splits("shakespeare")
    tok = CharTokenizer.from_text(s.train)
    ids = tok.encode_array(s.train)
    c = GPTConfig.preset("baby", tok.vocab_size)
    ours = GPT(c, rng=np.random.default_rng(0))
    start = GPT(c, rng=np.random.default_rng(0))
    steps = 200
    opt = ours.configure_optimizer()
    rng = np.random.default_rng(5)
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = torch_gpt.nanogpt_lr(step, max_steps=steps)
        x, y = sample_batch(ids, 12, 64, rng)
        loss = F.cross_entropy(ours(x), y)
        loss.backward()
        clip_grad_norm_(list(ours.parameters()), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    _, ref = torch_gpt.train_torch(c, ids, np.random.default_rng(5), max_steps=steps,
                                   init_from=start)
    np.testing.assert_allclose(losses, ref, rtol=1e-4)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.8
