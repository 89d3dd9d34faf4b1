"""The verifiable task: names whose true reward a program computes, and preferences drawn from it.

A prompt is a start marker and a first letter; a completion is the rest of a name and the
end marker. The true reward of a finished name y is its share of vowels,

    r*(y) = #{letters of y in "aeiou"} / len(y)         (0 for an empty name),

so every method's success is a number. Preferences between two completions of one prompt
are drawn from the Bradley–Terry model at a known temperature τ (Bradley & Terry, 1952):

    P(y₁ ≻ y₂) = σ((r*(y₁) − r*(y₂)) / τ).

Because the labelling model is known, the best any reward model can do on a pair is to
predict the more probable label, so the Bayes-optimal accuracy is computed exactly:
E[max(p, 1 − p)] with p = σ(Δr*/τ). Chapter: stage 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spiral import data
from spiral.tokenizers.char import CharTokenizer

VOWELS = frozenset("aeiou")
END = "\n"


def true_reward(name: str) -> float:
    """r*(y): the fraction of the name's letters that are vowels (0.0 for an empty name)."""
    if not name:
        return 0.0
    return sum(c in VOWELS for c in name) / len(name)


def true_rewards(names: list[str]) -> np.ndarray:
    """r* of each name, as a float64 array."""
    return np.array([true_reward(n) for n in names], dtype=np.float64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, computed without overflow."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def preference_probability(r1: np.ndarray, r2: np.ndarray, temperature: float) -> np.ndarray:
    """Bradley–Terry P(y₁ ≻ y₂) = σ((r₁ − r₂)/τ)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return sigmoid((np.asarray(r1) - np.asarray(r2)) / temperature)


def bayes_accuracy(r1: np.ndarray, r2: np.ndarray, temperature: float) -> float:
    """Expected accuracy of the best possible predictor on these pairs: mean max(p, 1 − p)."""
    p = preference_probability(r1, r2, temperature)
    return float(np.mean(np.maximum(p, 1.0 - p)))


def expected_accuracy(score1: np.ndarray, score2: np.ndarray, r1: np.ndarray, r2: np.ndarray,
                      temperature: float) -> float:
    """Accuracy of predicting 'y₁ wins' when score1 > score2, in expectation over the labels.

    A prediction that agrees with the sign of Δr* is right with probability max(p, 1 − p),
    one that disagrees with min(p, 1 − p); a tie in the scores counts one half.
    """
    p = preference_probability(r1, r2, temperature)
    s = np.sign(np.asarray(score1, dtype=np.float64) - np.asarray(score2, dtype=np.float64))
    return float(np.mean(np.where(s > 0, p, np.where(s < 0, 1.0 - p, 0.5))))


@dataclass(frozen=True)
class NamesTask:
    """Tokenizer, prompt distribution and encoding of the names task."""

    tokenizer: CharTokenizer
    first_letters: np.ndarray   # first letters of the training names (the prompt distribution)
    max_len: int = 15           # longest name in the corpus: 15 letters

    @classmethod
    def build(cls) -> NamesTask:
        s = data.names_splits()
        tok = CharTokenizer.from_text(data.names_stream(s.train))
        firsts = np.array([tok.stoi[n[0]] for n in s.train], dtype=np.int64)
        return cls(tok, firsts, max(len(n) for n in s.train + s.val + s.test))

    @property
    def end_id(self) -> int:
        return self.tokenizer.stoi[END]

    @property
    def prompt_len(self) -> int:
        return 2  # [END, first letter]: the end marker doubles as the start marker

    @property
    def seq_len(self) -> int:
        return 1 + self.max_len + 1  # start, letters, end

    def sample_prompts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 2) prompts [start, first letter], first letters drawn as in the training names."""
        firsts = self.first_letters[rng.integers(0, self.first_letters.size, size=n)]
        return np.stack([np.full(n, self.end_id, dtype=np.int64), firsts], axis=1)

    def decode(self, tokens: np.ndarray) -> list[str]:
        """(B, T) rows [start, letters..., end, pad...] -> the names (text up to the end)."""
        out = []
        for row in np.asarray(tokens):
            text = self.tokenizer.decode([int(t) for t in row[1:]])
            out.append(text.split(END, 1)[0])
        return out

    def encode(self, names: list[str]) -> np.ndarray:
        """Names -> (B, seq_len) rows [start, letters, end] padded with the end marker."""
        rows = np.full((len(names), self.seq_len), self.end_id, dtype=np.int64)
        for i, n in enumerate(names):
            if not 0 < len(n) <= self.max_len:
                raise ValueError(f"name {n!r} must have 1 to {self.max_len} letters")
            rows[i, 1:1 + len(n)] = self.tokenizer.encode(n)
        return rows
