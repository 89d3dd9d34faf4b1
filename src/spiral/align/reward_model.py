"""Training a reward model on preference pairs with the Bradley–Terry loss.

    θ ← AdamW(θ, ∇ mean −log σ(s_θ(y_w) − s_θ(y_l)))

A reward is defined only up to an additive constant (the loss sees differences), so the
accuracy on held-out pairs — does s(y_w) > s(y_l)? — is the number to report, next to the
Bayes-optimal accuracy of the labelling model itself. Chapter: stage 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spiral.align.evaluation import RewardFn, write_metrics
from spiral.align.models import ScalarHeadGPT
from spiral.align.objectives import bradley_terry_loss
from spiral.align.preferences import Pairs
from spiral.align.task import NamesTask, bayes_accuracy, expected_accuracy
from spiral.autograd import no_grad
from spiral.optim import AdamW, clip_grad_norm_


@dataclass(frozen=True)
class RMConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 50        # with validation pairs: keep the weights of the best check


def scores(rm: ScalarHeadGPT, tokens: np.ndarray, lengths: np.ndarray,
           batch_size: int = 512) -> np.ndarray:
    """(B,) reward-model scores without gradients."""
    out = []
    rm.eval()
    with no_grad():
        for i in range(0, len(tokens), batch_size):
            out.append(rm.score(tokens[i:i + batch_size], lengths[i:i + batch_size]).data)
    rm.train()
    return np.concatenate(out).astype(np.float64)


def evaluate_rm(rm: ScalarHeadGPT, pairs: Pairs, temperature: float) -> dict[str, float]:
    """Held-out accuracy (on the drawn labels and in expectation) and the Bayes ceiling."""
    lw, ll = pairs.lengths()
    sw, sl = scores(rm, pairs.chosen, lw), scores(rm, pairs.rejected, ll)
    return {"accuracy": float(np.mean(sw > sl)),
            "expected_accuracy": expected_accuracy(sw, sl, pairs.r_chosen, pairs.r_rejected,
                                                   temperature),
            "bayes_accuracy": bayes_accuracy(pairs.r_chosen, pairs.r_rejected, temperature)}


def validation_loss(rm: ScalarHeadGPT, pairs: Pairs) -> float:
    """Mean Bradley–Terry loss on ``pairs`` (no gradients)."""
    lw, ll = pairs.lengths()
    margin = scores(rm, pairs.chosen, lw) - scores(rm, pairs.rejected, ll)
    return float(np.mean(np.logaddexp(0.0, -margin)))


def train_reward_model(rm: ScalarHeadGPT, pairs: Pairs, config: RMConfig,
                       rng: np.random.Generator, out_dir: str | Path | None = None,
                       val_pairs: Pairs | None = None) -> list[dict[str, float]]:
    """Minimise the Bradley–Terry loss on ``pairs``; returns (and writes) the loss history.

    With ``val_pairs`` (held out from ``pairs``, never the test pairs) the validation loss
    is measured every ``eval_every`` steps and the best weights are kept: early stopping,
    since a reward model overfits its pairs within a few epochs.
    """
    opt = AdamW(rm.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    lw, ll = pairs.lengths()
    history: list[dict[str, float]] = []
    best = (validation_loss(rm, val_pairs), rm.state_dict()) if val_pairs else None
    for step in range(1, config.steps + 1):
        idx = rng.integers(0, len(pairs), size=min(config.batch_size, len(pairs)))
        loss = bradley_terry_loss(rm.score(pairs.chosen[idx], lw[idx]),
                                  rm.score(pairs.rejected[idx], ll[idx]))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(list(rm.parameters()), 1.0)
        opt.step()
        history.append({"step": step, "loss": float(loss.item())})
        if best is not None and val_pairs is not None and step % config.eval_every == 0:
            v = validation_loss(rm, val_pairs)
            history[-1]["val_loss"] = v
            if v < best[0]:
                best = (v, rm.state_dict())
    if best is not None:
        rm.load_state_dict(best[1])
    if out_dir is not None:
        write_metrics(out_dir, history)
    return history


def rm_reward_fn(rm: ScalarHeadGPT, task: NamesTask) -> RewardFn:
    """A reward function (tokens, mask) -> (B,) scores of the learned reward model."""
    def fn(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return scores(rm, tokens, task.prompt_len + mask.sum(1).astype(np.int64))
    return fn
