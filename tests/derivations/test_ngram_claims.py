"""The stage-1 chapter's claims, each checked numerically (chapter: stages/stage-01-ngrams)."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from spiral.ngram import NGramLM

pytestmark = pytest.mark.stage1

TEXT = "abracadabra, a cadabra bra; barbara cab a drab crab"


def test_chain_rule_probabilities_of_all_continuations_sum_to_one():
    """prod_t P(x_t | context) over every continuation of length 4 sums to one."""
    for sm in ("add_k", "kneser_ney"):
        lm = NGramLM(3, smoothing=sm, k=0.5).fit("abcab cba bca")
        V = lm.vocab
        total = sum(
            math.exp(-lm.token_nll("ab" + "".join(rest)).sum())
            for rest in itertools.product(V, repeat=4)
        )
        assert total == pytest.approx(1.0, abs=1e-12)


def test_mle_is_counting():
    """MLE of a categorical next-token distribution = count ratios (Lagrangian stationary
    point), it is a maximum (random feasible perturbations only lower the likelihood), and
    gradient descent on free logits converges to it."""
    lm = NGramLM(2).fit(TEXT)
    pairs = Counter(zip(TEXT, TEXT[1:]))
    firsts = Counter(TEXT[:-1])
    for (a, b), c in pairs.items():
        assert lm.prob(a, b) == pytest.approx(c / firsts[a], abs=1e-15)
    ctx = "a"
    counts = np.array([pairs[(ctx, w)] for w in lm.vocab], dtype=np.float64)
    p_star = lm.distribution(ctx)

    def loglik(p: np.ndarray) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.where(counts > 0, counts * np.log(p), 0.0).sum())

    # Lagrangian: d/dp_w [sum c_w log p_w - lam (sum p_w - 1)] = c_w / p_w - lam = 0 on the support
    support = counts > 0
    lam = counts[support] / p_star[support]
    np.testing.assert_allclose(lam, counts.sum(), rtol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(200):  # any other point of the simplex is worse
        q = rng.dirichlet(np.ones(len(counts)))
        q = 0.9 * p_star + 0.1 * q
        assert loglik(q) < loglik(p_star)
    # gradient descent on free logits z, p = softmax(z): grad of the mean NLL = p - c / N
    z = np.zeros(len(counts))
    for _ in range(5000):
        p = np.exp(z - z.max())
        p /= p.sum()
        z -= 2.0 * (p - counts / counts.sum())
    p = np.exp(z - z.max())
    np.testing.assert_allclose(p / p.sum(), p_star, atol=1e-3)


def test_laplace_is_dirichlet_posterior_mean():
    """(c + 1) / (N + V) is the posterior mean of theta under a uniform Dirichlet prior."""
    lm = NGramLM(1, smoothing="laplace").fit("aab")  # V = 2: the Beta(1, 1) case
    grid = (np.arange(200_000) + 0.5) / 200_000  # midpoint rule on theta_a in (0, 1)
    post = grid**2 * (1 - grid) ** 1  # prior density 1 x likelihood theta_a^2 theta_b^1
    mean = float((grid * post).sum() / post.sum())
    assert lm.prob("", "a") == pytest.approx(mean, abs=1e-9)
    # V = 4 by importance sampling from the uniform prior: weight = likelihood
    text = "aabacd"
    lm = NGramLM(1, smoothing="laplace").fit(text)
    counts = np.array([text.count(c) for c in lm.vocab])
    theta = np.random.default_rng(0).dirichlet(np.ones(4), size=400_000)  # (S, V)
    wts = np.prod(theta**counts, axis=1)
    mc = (wts[:, None] * theta).sum(0) / wts.sum()
    np.testing.assert_allclose(lm.distribution(""), mc, atol=4e-3)
    # and add-k is the posterior mean under Dirichlet(k): the same check at k = 0.5 (V = 2)
    lm = NGramLM(1, smoothing="add_k", k=0.5).fit("aab")
    post = grid ** (2 - 0.5) * (1 - grid) ** (1 - 0.5)  # prior theta^(k-1)(1-theta)^(k-1)
    assert lm.prob("", "a") == pytest.approx(float((grid * post).sum() / post.sum()), abs=1e-6)


def test_uniform_model_perplexity_is_vocab_size():
    """A model that spreads probability evenly over |V| tokens has perplexity exactly |V|."""
    lm = NGramLM(1).fit("abcdefg" * 10)  # every token equally frequent: uniform MLE
    for text in ("aaaaaa", "gfedcbabcd", "abcdefg" * 3):
        assert lm.perplexity(text) == pytest.approx(7.0, rel=1e-12)
    big_k = NGramLM(3, smoothing="add_k", k=1e12).fit(TEXT)  # k -> infinity: uniform
    assert big_k.perplexity(TEXT) == pytest.approx(big_k.vocab_size, rel=1e-6)


def test_perplexity_is_exp_cross_entropy():
    lm = NGramLM(3, smoothing="kneser_ney").fit(TEXT)
    h = lm.cross_entropy(TEXT[::-1])
    assert lm.perplexity(TEXT[::-1]) == pytest.approx(math.exp(h), rel=1e-12)
    bits = h / math.log(2)  # bits per token = the ideal code length of an arithmetic coder
    assert 2**bits == pytest.approx(lm.perplexity(TEXT[::-1]), rel=1e-12)
    assert h == pytest.approx(-np.log([lm.prob(TEXT[::-1][i - 2 : i], TEXT[::-1][i])
                                      for i in range(2, len(TEXT))]).mean(), rel=1e-12)


def test_perplexity_can_exceed_vocab_size():
    """The pitfall 'perplexity <= |V|' is false: a confident wrong model exceeds |V|."""
    lm = NGramLM(1, smoothing="add_k", k=0.01).fit("a" * 1000 + "bc")
    assert lm.vocab_size == 3
    assert lm.perplexity("bcbcbc") > 3 * 10


def _sample_chain(P: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    cdf = np.cumsum(P, axis=1)
    out = np.empty(n, dtype=np.int64)
    out[0] = 0
    u = rng.random(n)
    for t in range(1, n):
        out[t] = np.searchsorted(cdf[out[t - 1]], u[t], side="right")
    return out


def test_cross_entropy_approaches_the_entropy_rate_of_a_known_chain():
    """On text from a known Markov chain, held-out cross-entropy -> H = sum_i pi_i H(P_i)."""
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.full(5, 0.5), size=5)  # (5, 5) transition matrix
    evals, evecs = np.linalg.eig(P.T)
    pi = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    pi /= pi.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        H = float(-(pi[:, None] * np.where(P > 0, P * np.log(P), 0.0)).sum())
    test = _sample_chain(P, 50_000, rng)
    gaps = []
    for n in (1_000, 10_000, 100_000):
        lm = NGramLM(2, smoothing="add_k", k=0.1).fit(_sample_chain(P, n, rng))
        gaps.append(lm.cross_entropy(test) - H)
    assert gaps[-1] < 0.01 and gaps[0] > gaps[-1] > -0.01
    lm3 = NGramLM(3, smoothing="kneser_ney").fit(_sample_chain(P, 100_000, rng))
    assert abs(lm3.cross_entropy(test) - H) < 0.01  # extra context cannot help a bigram chain


def _kn_reference(train: str, n: int, D: float):
    """Interpolated Kneser-Ney with dicts, written independently of spiral.ngram."""
    V = sorted(set(train))
    grams = [Counter(train[i : i + m] for i in range(len(train) - m + 1)) for m in range(n + 1)]
    cont = [defaultdict(set) for _ in range(n + 1)]
    for m in range(2, n + 1):
        for g in grams[m]:
            cont[m - 1][g[1:]].add(g[0])

    def p(ctx: str, w: str, top: bool) -> float:
        m = len(ctx) + 1
        if top:
            table = dict(grams[m])
        else:
            table = {g: len(s) for g, s in cont[m].items()}
        follow = {g: c for g, c in table.items() if g[:-1] == ctx}
        lower = p(ctx[1:], w, False) if m > 1 else 1 / len(V)
        total = sum(follow.values())
        if total == 0:
            return lower
        return max(follow.get(ctx + w, 0) - D, 0) / total + D * len(follow) / total * lower

    return lambda ctx, w: p(ctx[-(n - 1) :] if n > 1 else "", w, True)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_kneser_ney_matches_an_independent_reference(order):
    train = "she sells sea shells by the sea shore; the shells she sells are sea shells"
    ref = _kn_reference(train, order, 0.75)
    lm = NGramLM(order, smoothing="kneser_ney", discount=0.75).fit(train)
    for i in range(order - 1, len(train), 3):
        ctx = train[max(0, i - order + 1) : i]
        for w in "sea hlb;":
            assert lm.prob(ctx, w) == pytest.approx(ref(ctx, w), abs=1e-12)


def _nltk_laplace_nll(train_seqs, eval_seqs, order):
    nltk_lm = pytest.importorskip("nltk.lm")
    from nltk.util import ngrams

    model = nltk_lm.Laplace(order)
    model.fit([list(ngrams(s, order)) for s in train_seqs], [t for s in train_seqs for t in s])
    return np.array([
        -math.log(model.score(g[-1], list(g[:-1]))) for s in eval_seqs for g in ngrams(s, order)
    ])


def test_laplace_agrees_with_nltk_on_the_names_split():
    """nltk.lm's vocabulary always holds <UNK>, so it matches ours with unk=True; names are
    padded with order-1 begin markers and one end marker, the same symbol ('\\n')."""
    from spiral import data

    s = data.names_splits()
    train, val = s.train[:8_000], s.val[:400]  # a prefix of each split keeps nltk quick
    order = 3
    ours = NGramLM(order, smoothing="laplace", unk=True).fit(train)
    pad = ["\n"] * (order - 1)
    ref = _nltk_laplace_nll([pad + list(n) + ["\n"] for n in train],
                            [pad + list(n) + ["\n"] for n in val], order)
    np.testing.assert_allclose(ours.token_nll(val), ref, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_laplace_agrees_with_nltk_on_shakespeare():
    """A continuous stream: the first order-1 characters are context only, as in nltk."""
    from spiral import data

    sp = data.get_splits("shakespeare")
    train, val = sp.train[:150_000], sp.val[:8_000]
    order = 4
    ours = NGramLM(order, smoothing="laplace", unk=True).fit(train)
    ref = _nltk_laplace_nll([list(train)], [list(val)], order)
    np.testing.assert_allclose(ours.token_nll(val), ref, rtol=0, atol=1e-9)


def test_makemore_bigram_anchor_train_equals_eval():
    """makemore's bigram: NLL 2.454 on all names (train = eval), 2.4546 with +1 smoothing."""
    from spiral import data

    names = data.parse_names(data.load_text("names"))
    assert len(names) == 32_033
    assert NGramLM(2).fit(names).cross_entropy(names) == pytest.approx(2.454, abs=5e-4)
    lap = NGramLM(2, smoothing="laplace").fit(names)
    assert lap.cross_entropy(names) == pytest.approx(2.4546, abs=5e-5)


def test_continuation_unigram_is_the_one_that_keeps_the_marginals() -> None:
    """Σ_v c(v) P(w|v) = c(w) for interpolated absolute discounting iff P_low = N₁₊(•w)/N₁₊(••).

    The derivation in the chapter's Kneser–Ney section: the discounted part contributes
    c(w) − D·N₁₊(•w), the interpolated part D·N₁₊(••)·P_low(w).
    """
    from spiral.experiments.ngram.continuation_counts import _interpolated

    rng = np.random.default_rng(0)
    for trial in range(5):
        V = int(rng.integers(3, 12))
        ids = rng.choice(V, size=int(rng.integers(50, 3000)), p=rng.dirichlet(np.ones(V) * 0.3))
        counts = np.zeros((V, V))
        np.add.at(counts, (ids[:-1], ids[1:]), 1.0)
        rows = counts.sum(1) > 0
        counts = counts[rows][:, :]  # contexts that occur (every row needs c(v) > 0)
        occ = counts.sum(0)
        cont = (counts > 0).sum(0).astype(float)
        d = float(rng.uniform(0.1, 1.0))
        implied = counts.sum(1) @ _interpolated(counts, cont / cont.sum(), d)
        np.testing.assert_allclose(implied, occ, rtol=0, atol=1e-9 * occ.sum())
        plain = counts.sum(1) @ _interpolated(counts, occ / occ.sum(), d)
        if not np.allclose(cont / cont.sum(), occ / occ.sum()):
            assert np.abs(plain - occ).max() > 1e-6 * occ.sum(), trial


def test_worked_kneser_ney_example_by_hand() -> None:
    """The chapter's hand calculation on 'abracadabra' (D = 3/4), in exact fractions."""
    from fractions import Fraction as Fr

    d = Fr(3, 4)
    gamma = d * 3 / 4  # N₁₊(a•) = 3 distinct followers of the 4 a's that have one
    cont = {"a": Fr(3, 7), "b": Fr(1, 7), "c": Fr(1, 7), "d": Fr(1, 7), "r": Fr(1, 7)}
    top = {"b": 2, "c": 1, "d": 1}  # c(a w)
    hand = {w: max(Fr(top.get(w, 0)) - d, Fr(0)) / 4 + gamma * cont[w] for w in cont}
    assert hand["b"] == Fr(11, 28) and hand["a"] == Fr(27, 112) and sum(hand.values()) == 1
    lm = NGramLM(2, smoothing="kneser_ney", discount=0.75).fit("abracadabra")
    for w, p in hand.items():
        assert lm.prob("a", w) == pytest.approx(float(p), abs=1e-15), w
