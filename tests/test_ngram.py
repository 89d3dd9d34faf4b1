"""Tests of spiral.ngram: counting, conventions, normalisation, evaluation, sampling, errors."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.ngram import SMOOTHINGS, CountTable, NGramLM, window_codes

pytestmark = pytest.mark.stage1

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog met."
NAMES = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "ella", "liam", "noah"]
texts = st.text(alphabet="abcd", min_size=1, max_size=40)


def models(data, order):
    base = NGramLM(order).fit(data)
    return [base.with_smoothing(s, k=0.3) for s in SMOOTHINGS]


# ------------------------------------------------------------------------- counting
@settings(max_examples=40, deadline=None)
@given(text=texts, order=st.integers(1, 4))
def test_vectorised_counts_equal_a_counter(text, order):
    lm = NGramLM(order).fit(text)
    for m in range(1, order + 1):
        expected = Counter(text[i : i + m] for i in range(len(text) - m + 1))
        table = lm.raw[m - 1]
        got = {
            "".join(lm.decode(_digits(c, m, lm.vocab_size))): int(n)
            for c, n in zip(table.codes, table.counts)
        }
        assert got == dict(expected)


def _digits(code, m, V):
    out = []
    for _ in range(m):
        out.append(int(code % V))
        code //= V
    return out[::-1]


def test_window_codes_is_base_v():
    ids = np.array([2, 0, 1, 2])
    assert window_codes(ids, 3, 3).tolist() == [2 * 9 + 0 * 3 + 1, 0 * 9 + 1 * 3 + 2]
    assert window_codes(ids, 5, 3).tolist() == []


def test_continuation_counts_count_distinct_left_neighbours():
    lm = NGramLM(2).fit("xa ya za xb xb xb")
    cont = lm.cont[0]
    V = lm.vocab_size
    a, b = (lm.encode(c)[0] for c in "ab")
    # 'a' follows x, y, z: 3 distinct left contexts; 'b' follows only x (three times)
    assert cont.lookup(np.array([a, b])).tolist() == [3, 1]
    assert isinstance(cont, CountTable) and cont.order == 1 and V == lm.vocab_size


def test_sequences_are_padded_and_the_end_marker_is_scored():
    lm = NGramLM(3, smoothing="laplace").fit(NAMES)
    assert len(lm.token_nll(NAMES)) == sum(len(n) + 1 for n in NAMES)
    assert "\n" in lm.vocab and lm.vocab_size == len(set("".join(NAMES))) + 1
    # the first letter is predicted from the begin markers only
    counts = Counter(n[0] for n in NAMES)
    mle = NGramLM(3).fit(NAMES)
    assert mle.prob("\n\n", "a") == pytest.approx(counts["a"] / len(NAMES))


def test_continuous_stream_scores_all_but_the_first_order_minus_one_tokens():
    lm = NGramLM(4, smoothing="laplace").fit(TEXT)
    assert len(lm.token_nll(TEXT)) == len(TEXT) - 3


def test_integer_ids_and_characters_agree():
    ids = [ord(c) for c in TEXT]
    a = NGramLM(3, smoothing="kneser_ney").fit(TEXT)
    b = NGramLM(3, smoothing="kneser_ney").fit(np.array(ids))
    assert a.cross_entropy(TEXT[:30]) == pytest.approx(b.cross_entropy(ids[:30]), abs=1e-12)
    seqs = [[ord(c) for c in n] for n in NAMES]
    c = NGramLM(2, smoothing="laplace").fit(NAMES)
    d = NGramLM(2, smoothing="laplace").fit(seqs)
    assert c.cross_entropy(NAMES) == pytest.approx(d.cross_entropy(seqs), abs=1e-12)
    assert d.vocab[0] == -1  # the integer boundary marker


# ---------------------------------------------------------------------- normalisation
@settings(max_examples=30, deadline=None)
@given(text=texts, order=st.integers(1, 4), k=st.floats(0.01, 5.0), d=st.floats(0.05, 1.0))
def test_every_context_sums_to_one_under_every_smoothing(text, order, k, d):
    base = NGramLM(order, unk=True).fit(text)
    V = base.vocab_size
    rng = np.random.default_rng(len(text))
    seen = [base.raw[order - 1].ctx_codes] if order > 1 else [np.zeros(1, np.int64)]
    unseen = [rng.integers(0, V ** (order - 1), size=5)] if order > 1 else []
    for sm in SMOOTHINGS:
        lm = base.with_smoothing(sm, k=k, discount=d)
        for ctx in seen + (unseen if sm != "none" else []):
            # (C, V) table: every context against every next token
            p = lm._probs(np.repeat(ctx, V), order - 1, np.tile(np.arange(V), len(ctx)))
            np.testing.assert_allclose(p.reshape(len(ctx), V).sum(1), 1.0, atol=1e-12)


def test_every_short_context_sums_to_one_too():
    for lm in models(NAMES, 4):
        for ctx in ["", "\n", "\nem", "mem", "lll"]:
            assert lm.distribution(ctx).sum() == pytest.approx(1.0, abs=1e-12) or (
                lm.smoothing == "none" and lm.distribution(ctx).sum() == 0.0
            )


def test_mle_unseen_event_gives_infinite_perplexity_not_a_crash():
    lm = NGramLM(2).fit("abab")
    assert lm.perplexity("aab") == math.inf
    assert lm.cross_entropy("aab") == math.inf
    assert lm.with_smoothing("laplace").perplexity("aab") < math.inf


def test_unk_maps_unseen_tokens_and_is_otherwise_an_error():
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        NGramLM(2, smoothing="laplace").fit("abab").cross_entropy("abz")
    lm = NGramLM(2, smoothing="laplace", unk=True).fit("abab")
    assert lm.vocab == ["a", "b", "<unk>"]
    assert lm.prob("a", "z") == pytest.approx(1 / (2 + 3))
    assert np.isfinite(lm.cross_entropy("abzz"))


# ------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("smoothing", ["add_k", "kneser_ney"])
def test_window_nll_matches_token_nll_and_uses_lower_orders_at_window_start(smoothing):
    from spiral.evaluate import evaluate

    lm = NGramLM(4, smoothing=smoothing, k=0.5, context_length=16).fit(TEXT)
    ids = lm.encode(TEXT)
    windows = ids[None, :]
    nll = lm.window_nll(windows)[0]
    np.testing.assert_allclose(nll[2:], lm.token_nll(TEXT), rtol=0, atol=1e-12)
    assert nll[0] == pytest.approx(-math.log(lm.prob(TEXT[:1], TEXT[1])))
    assert nll[1] == pytest.approx(-math.log(lm.prob(TEXT[:2], TEXT[2])))
    res = evaluate(lm, ids)
    assert res.n_tokens == len(ids) - 1
    lm1 = NGramLM(1, smoothing=smoothing, k=0.5).fit(TEXT)
    assert lm1.window_nll(windows).shape == (1, len(ids) - 1)
    np.testing.assert_allclose(lm1.window_nll(windows)[0], lm1.token_nll(TEXT[1:]), atol=1e-12)


def test_char_model_ids_are_the_char_tokenizer_ids():
    from spiral.tokenizers.char import CharTokenizer

    lm = NGramLM(2).fit(TEXT)
    assert lm.encode(TEXT).tolist() == CharTokenizer.from_text(TEXT).encode(TEXT)


# -------------------------------------------------------------------------- sampling
def _chi2_quantile(p: float, df: int) -> float:
    """Wilson–Hilferty approximation to the chi-square quantile."""
    z = math.sqrt(2) * _erfinv(2 * p - 1)
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _erfinv(y: float) -> float:
    lo, hi = -6.0, 6.0
    for _ in range(100):  # bisection on math.erf
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erf(mid) < y else (lo, mid)
    return (lo + hi) / 2


def test_chi2_quantile_helper():
    assert _chi2_quantile(0.95, 10) == pytest.approx(18.307, rel=0.01)
    assert _chi2_quantile(0.999, 50) == pytest.approx(86.66, rel=0.01)


def _transition_chi2(lm: NGramLM, text: str) -> tuple[float, int]:
    """Pearson's statistic of sampled bigram transitions against the model, summed over
    contexts (cells with expectation < 5 pooled), and its degrees of freedom."""
    ids = lm.encode(text)
    prev, nxt = ids[:-1], ids[1:]
    stat, df = 0.0, 0
    for a in np.unique(prev):
        observed = np.bincount(nxt[prev == a], minlength=lm.vocab_size)
        expected = observed.sum() * lm.distribution(np.array([a]))
        assert observed[expected == 0].sum() == 0  # never a zero-probability token
        big = expected >= 5  # pool the cells with small expectations into one
        obs = np.append(observed[big], observed[~big].sum())
        exp = np.append(expected[big], expected[~big].sum())
        obs, exp = obs[exp > 0], exp[exp > 0]
        if len(exp) > 1:
            stat += float(((obs - exp) ** 2 / exp).sum())
            df += len(exp) - 1
    return stat, df


@pytest.mark.parametrize("smoothing", ["none", "kneser_ney"])
def test_sampled_transitions_follow_the_model_chi_square(smoothing):
    lm = NGramLM(2, smoothing=smoothing).fit(TEXT)
    stat, df = _transition_chi2(lm, lm.generate(20_000, rng=np.random.default_rng(1)))
    assert df > 10
    assert stat < _chi2_quantile(0.999, df), (stat, df)


def test_chi_square_rejects_a_wrong_sampler():
    """The same test fails a sampler that is slightly off (temperature 1.15, not 1)."""
    lm = NGramLM(2, smoothing="kneser_ney").fit(TEXT)
    wrong = lm.generate(20_000, rng=np.random.default_rng(1), temperature=1.15)
    stat, df = _transition_chi2(lm, wrong)
    assert stat > _chi2_quantile(0.999, df), (stat, df)


def test_generation_is_reproducible_and_temperature_sharpens():
    lm = NGramLM(3, smoothing="kneser_ney").fit(TEXT)
    a = lm.generate(50, rng=np.random.default_rng(0), prompt="the ")
    assert a == lm.generate(50, rng=np.random.default_rng(0), prompt="the ")
    assert len(a) == 50 and set(a) <= set(TEXT)
    cold = lm.generate(400, rng=np.random.default_rng(0), temperature=0.05)
    hot = lm.generate(400, rng=np.random.default_rng(0), temperature=5.0)
    assert lm.cross_entropy(cold) < lm.cross_entropy(hot)


def test_names_generation_restarts_after_each_end_marker():
    lm = NGramLM(3).fit(NAMES)
    out = lm.generate(300, rng=np.random.default_rng(0))
    made = [x for x in out.split("\n")[:-1]]
    assert len(made) > 5
    for name in made:  # every trigram of a generated name was seen (MLE)
        padded = "\n\n" + name + "\n"
        assert all(lm.prob(padded[i : i + 2], padded[i + 2]) > 0 for i in range(len(name) + 1))


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"order": 0}, "order"),
        ({"order": -2}, "order"),
        ({"order": 2, "smoothing": "add_k", "k": 0.0}, "k > 0"),
        ({"order": 2, "smoothing": "add_k", "k": -1.0}, "k > 0"),
        # regression: k = inf passed and every probability became nan -> 0 (perplexity inf)
        ({"order": 2, "smoothing": "add_k", "k": float("inf")}, "finite k > 0"),
        ({"order": 2, "smoothing": "add_k", "k": float("nan")}, "finite k > 0"),
        ({"order": 2, "smoothing": "kneser_ney", "discount": float("nan")}, "discount"),
        ({"order": 2, "smoothing": "witten_bell"}, "smoothing"),
        ({"order": 2, "smoothing": "kneser_ney", "discount": 1.5}, "discount"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NGramLM(**kwargs)


def test_bad_data_and_bad_calls():
    with pytest.raises(ValueError, match="empty"):
        NGramLM(2).fit("")
    with pytest.raises(ValueError, match="empty"):
        NGramLM(2).fit([])
    with pytest.raises(TypeError):
        NGramLM(2).fit([1.5, 2.5])
    with pytest.raises(RuntimeError, match="fit"):
        NGramLM(2).cross_entropy("ab")
    lm = NGramLM(2).fit("abab")
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(5, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(5, temperature=-1.0)
    with pytest.raises(ValueError, match="too short"):
        NGramLM(3).fit("abab").cross_entropy("a")
    with pytest.raises(TypeError, match="char"):
        lm.cross_entropy(np.array([1, 2]))
    with pytest.raises(ValueError, match="boundary"):
        NGramLM(2).fit(["ab\ncd"])
    with pytest.raises(ValueError, match="overflows"):
        NGramLM(40).fit(TEXT)


@settings(max_examples=25, deadline=None)
@given(text=st.text(alphabet="abc d", min_size=2, max_size=60), order=st.integers(1, 5),
       smoothing=st.sampled_from(["add_k", "kneser_ney"]))
def test_window_nll_property(text, order, smoothing):
    """Every window target is scored by the model of the width it has in the window."""
    lm = NGramLM(order, smoothing=smoothing, k=0.5).fit(text)
    ids = lm.encode(text)[None, :]
    nll = lm.window_nll(ids)[0]
    for i in range(1, len(text)):
        ctx = text[max(0, i - order + 1) : i]
        assert nll[i - 1] == pytest.approx(-math.log(lm.prob(ctx, text[i])), abs=1e-12)


def test_with_smoothing_equals_a_fresh_fit():
    base = NGramLM(4).fit(TEXT)
    for sm in SMOOTHINGS:
        fresh = NGramLM(4, smoothing=sm, k=0.3, discount=0.6).fit(TEXT)
        shared = base.with_smoothing(sm, k=0.3, discount=0.6)
        np.testing.assert_array_equal(fresh.token_nll(TEXT[::-1]), shared.token_nll(TEXT[::-1]))


def test_docstring_examples():
    import doctest

    import spiral.ngram.counts
    import spiral.ngram.model

    for module in (spiral.ngram.counts, spiral.ngram.model):
        failed, tried = doctest.testmod(module)
        assert tried > 0 and failed == 0


def test_benchmark_peers_compute_the_same_perplexity():
    """The three implementations timed in benchmarks/bench_ngram.py agree on a small text."""
    pytest.importorskip("nltk")
    bench = pytest.importorskip("benchmarks.bench_ngram")
    train, val = TEXT * 3, TEXT[::-1]
    for n in (1, 2, 3):
        ppl = bench.ours(train, val, n)
        assert bench.with_dict(train, val, n) == pytest.approx(ppl, rel=1e-9)
        assert bench.with_nltk(train, val, n) == pytest.approx(ppl, rel=1e-9)


def test_symbols_before_the_context_window_are_not_encoded():
    """Regression: prob() encoded the whole context, so an unknown symbol that the model never
    looks at (it lies before the last order-1 tokens) raised."""
    lm = NGramLM(3, "add_k", k=0.5).fit("abcabcabd")
    assert lm.prob("zzab", "c") == lm.prob("ab", "c")
    np.testing.assert_array_equal(lm.distribution("zzab"), lm.distribution("ab"))
    with pytest.raises(ValueError):
        lm.prob("az", "c")  # inside the window an unknown symbol is still an error
