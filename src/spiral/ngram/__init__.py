"""Stage 1: n-gram language models — Markov chains fitted by counting.

``NGramLM`` estimates ``P(x_t | x_{t-n+1} .. x_{t-1})`` by maximum likelihood (counting),
add-k / Laplace smoothing (the Dirichlet posterior mean) or interpolated Kneser–Ney, scores
text by cross-entropy and perplexity, and samples text. Counting is vectorised: n-grams are
integers in base |V| (:mod:`spiral.ngram.counts`). Chapter: stages/stage-01-ngrams.
"""

from __future__ import annotations

from spiral.ngram.counts import CountTable, window_codes
from spiral.ngram.model import SMOOTHINGS, NGramLM

__all__ = ["SMOOTHINGS", "CountTable", "NGramLM", "window_codes"]
