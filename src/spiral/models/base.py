"""The one way a neural language model meets the shared evaluator.

Every neural model in the book maps token ids (B, T) to next-token logits (B, T, V). The
evaluator (:mod:`spiral.evaluate`) asks for the negative log-likelihood of each window's
tokens given the tokens before them, ``-log softmax(logits)[target]``, in nats; this class
computes it once for all of them, in evaluation mode and without building a graph.
"""

from __future__ import annotations

import numpy as np

from spiral.autograd import no_grad
from spiral.nn import functional as F
from spiral.nn.module import Module


class CausalLM(Module):
    """A module whose ``forward(ids)`` returns next-token logits (B, T, vocab_size)."""

    context_length: int

    def window_nll(self, windows: np.ndarray) -> np.ndarray:
        """Evaluator protocol: (B, L) ids -> (B, L - 1) NLL (nats) of windows[:, 1:]."""
        windows = np.asarray(windows, dtype=np.int64)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                logits = self.forward(windows[:, :-1])  # (B, L - 1, V)
                logp = F.log_softmax(logits, dim=-1).data.astype(np.float64)
        finally:
            self.train(was_training)
        return -np.take_along_axis(logp, windows[:, 1:, None], axis=-1)[..., 0]  # (B, L - 1)
