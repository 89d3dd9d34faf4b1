"""Stage 17: speculative decoding reproduces the target model (greedy exactly, sampled in law)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from spiral.autograd import no_grad
from spiral.generate import filter_probs, generate
from spiral.inference.speculative import (
    expected_speedup,
    expected_tokens_per_round,
    speculative_generate,
)
from spiral.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.stage17

V = 5


def model(seed: int, positional: str = "rope", n_kv: int | None = None,
          noise_of: GPT | None = None, noise: float = 0.0, vocab: int = V,
          d_model: int = 8, init_std: float = 0.5) -> GPT:
    cfg = GPTConfig(vocab_size=vocab, context_length=40, n_layers=2, n_heads=2,
                    d_model=d_model, init_std=init_std, positional=positional, n_kv_heads=n_kv)
    m = GPT(cfg, rng=np.random.default_rng(seed), dtype=np.float64)
    if noise_of is not None:  # a draft that mostly agrees with the target, but not always
        rng = np.random.default_rng(seed + 100)
        for (_, p), (_, src) in zip(m.named_parameters(), noise_of.named_parameters()):
            p.data = src.data + noise * rng.standard_normal(src.data.shape)
    m.eval()
    return m


@pytest.mark.parametrize("positional,n_kv", [("rope", None), ("learned", 1), ("alibi", 2)])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_output_is_the_targets(positional: str, n_kv: int | None, k: int) -> None:
    size = dict(vocab=13, d_model=16, init_std=0.7)  # a greedy output that is not one token
    target = model(0, positional, n_kv, **size)  # type: ignore[arg-type]
    draft = model(1, positional, n_kv, noise_of=target, noise=0.1, **size)  # type: ignore[arg-type]
    want = generate(target, [1, 2, 3], 30, np.random.default_rng(0), temperature=0,
                    use_cache=False)
    assert len(set(want)) > 1
    got = speculative_generate(target, draft, [1, 2, 3], 30, np.random.default_rng(0), k=k,
                               temperature=0)
    assert got.tokens == want
    assert 0.0 < got.acceptance_rate < 1.0  # both the accept and the reject paths ran


def test_sampled_output_distribution_is_the_targets() -> None:
    """Chi-square over all V² two-token continuations; fixed seed, so the p-value is fixed."""
    target = model(0, init_std=0.3)
    draft = model(1, noise_of=target, noise=0.1, init_std=0.3)
    prompt, n = [1, 3], 2000

    def exact(m: GPT) -> np.ndarray:  # P(a, b | prompt) from uncached forwards
        with no_grad():
            pa = filter_probs(m(np.array([prompt])).data[0, -1], 1.0)
            return np.array([pa[a] * filter_probs(m(np.array([prompt + [a]])).data[0, -1])[b]
                             for a, b in itertools.product(range(V), repeat=2)])

    rng = np.random.default_rng(12345)
    counts = np.zeros(V * V)
    drafted = accepted = 0
    for _ in range(n):
        out = speculative_generate(target, draft, prompt, 2, rng, k=2)
        counts[out.tokens[0] * V + out.tokens[1]] += 1
        drafted, accepted = drafted + out.drafted, accepted + out.accepted
    assert 0.2 < accepted / drafted < 0.95  # the residual resampling really ran

    def chi2_pvalue(probs: np.ndarray) -> float:  # cells expecting < 5 draws pooled into one
        expected, small = probs * n, probs * n < 5
        f_obs = np.append(counts[~small], counts[small].sum())
        f_exp = np.append(expected[~small], expected[small].sum())
        return float(stats.chisquare(f_obs, f_exp).pvalue)

    p_target, p_draft = chi2_pvalue(exact(target)), chi2_pvalue(exact(draft))
    assert p_target > 1e-3, p_target  # consistent with the target's distribution
    assert p_draft < 1e-6, p_draft    # and the test has the power to tell the draft's apart


def test_a_perfect_draft_is_always_accepted() -> None:
    target = model(0)
    out = speculative_generate(target, target, [0], 24, np.random.default_rng(0), k=3)
    assert out.acceptance_rate == 1.0 and len(out.tokens) == 24
    assert out.rounds == 24 // expected_tokens_per_round(1.0, 3)


def test_expected_tokens_formula() -> None:
    for alpha in (0.0, 0.3, 0.8, 1.0):
        for k in (0, 1, 4):
            assert expected_tokens_per_round(alpha, k) == pytest.approx(
                sum(alpha ** i for i in range(k + 1)))
    assert expected_speedup(0.8, 4, 0.1) == pytest.approx(
        (1 - 0.8 ** 5) / 0.2 / 1.4)
    with pytest.raises(ValueError, match="alpha"):
        expected_tokens_per_round(1.5, 2)


def test_stop_token_budget_and_errors() -> None:
    target, draft = model(0), model(1)
    full = speculative_generate(target, draft, [1], 20, np.random.default_rng(0), k=4,
                                temperature=0).tokens
    stop = full[5]
    short = speculative_generate(target, draft, [1], 20, np.random.default_rng(0), k=4,
                                 temperature=0, stop_token=stop).tokens
    assert short == full[:full.index(stop) + 1]
    assert len(speculative_generate(target, draft, [1], 7, np.random.default_rng(0),
                                    k=5).tokens) == 7
    with pytest.raises(ValueError, match="context_length"):
        speculative_generate(target, draft, [1] * 30, 11, np.random.default_rng(0))
    with pytest.raises(ValueError, match="vocabulary"):
        other = GPT(GPTConfig(vocab_size=V + 1, context_length=40, n_layers=1, n_heads=1,
                              d_model=4))
        speculative_generate(target, other, [1], 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k and max_new_tokens"):
        speculative_generate(target, draft, [1], 3, np.random.default_rng(0), k=-1)


def test_alpha_counts_only_tested_drafts() -> None:
    from spiral.inference import SpeculativeOutput

    out = SpeculativeOutput(drafted=12, accepted=6, per_round=[(4, 0), (4, 2), (4, 4)])
    # two rejections (rounds 1 and 2); the drafts after them were never tested
    assert out.alpha == 6 / 8 and out.acceptance_rate == 6 / 12


def test_the_speedup_formula_charges_the_verifying_forward() -> None:
    from spiral.inference import expected_speedup

    tokens = expected_tokens_per_round(0.5, 2)  # 1 + 0.5 + 0.25
    assert expected_speedup(0.5, 2, 0.1) == pytest.approx(tokens / 1.2)
    assert expected_speedup(0.5, 2, 0.1, verify_cost=2.0) == pytest.approx(tokens / 2.2)
