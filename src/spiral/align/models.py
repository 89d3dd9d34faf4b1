"""The policy, the reference, the reward model and the critic: one small GPT, two heads.

The SFT policy is a GPT trained on the training names with the book's training loop
(:func:`spiral.train.train`); it is also the frozen reference π_ref of every method. The
reward model and PPO's value model are :class:`ScalarHeadGPT`: the same trunk with a linear
head d_model → 1 in place of the vocabulary head,

    s(x)_t = w · h_t + b          h = GPT trunk's final hidden states (B, T, d_model),

read at the end marker for a reward, at every position for a value. Both start from the
SFT weights (Ouyang et al., 2022; Stiennon et al., 2020). Chapter: stage 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from spiral import checkpoint, data
from spiral.align.task import NamesTask
from spiral.autograd import Tensor
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn.layers import Linear
from spiral.nn.module import Module
from spiral.train import TrainConfig, train


@dataclass(frozen=True)
class SFTConfig:
    """The reference policy: a small GPT and a short run of the shared training loop."""

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    max_steps: int = 1500
    batch_size: int = 32
    seq_len: int = 16
    lr: float = 3e-3
    seed: int = 0

    def gpt_config(self, task: NamesTask) -> GPTConfig:
        return GPTConfig(vocab_size=task.tokenizer.vocab_size, context_length=task.seq_len,
                         n_layers=self.n_layers, n_heads=self.n_heads, d_model=self.d_model)


def train_sft(config: SFTConfig, task: NamesTask, out_dir: str | Path | None = None) -> GPT:
    """Train the SFT policy on the training names with :func:`spiral.train.train`.

    With ``out_dir`` the loop writes ``metrics.jsonl`` and ``checkpoint.safetensors``
    (whose metadata holds the GPT config, so :func:`load_policy` can rebuild it).
    """
    s = data.names_splits()
    tok = task.tokenizer
    train_ids = np.array(tok.encode(data.names_stream(s.train)), dtype=np.int64)
    val_ids = np.array(tok.encode(data.names_stream(s.val)), dtype=np.int64)
    rng = np.random.default_rng(config.seed)
    model = GPT(config.gpt_config(task), rng=rng)
    tc = TrainConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                     seq_len=config.seq_len, lr=config.lr, warmup_steps=50,
                     eval_interval=config.max_steps, eval_tokens=5000, progress=False)
    state = train(model, model.configure_optimizer(lr=config.lr), train_ids, val_ids, tc, rng,
                  out_dir=out_dir, checkpoint_meta={"gpt": model.config.to_dict()})
    _SFT_VAL[config] = float(state.history[-1]["val_loss"])
    return model


@lru_cache(maxsize=4)
def _sft_state(config: SFTConfig) -> tuple[tuple[str, np.ndarray], ...]:
    model = train_sft(config, NamesTask.build())
    return tuple((k, v.copy()) for k, v in model.state_dict().items())


def load_policy(path: str | Path) -> GPT:
    """A GPT from a checkpoint whose metadata holds its config (``meta["gpt"]``)."""
    _, header = checkpoint.read(path)
    gpt = header.get("meta", {}).get("gpt")
    if gpt is None:
        raise checkpoint.CheckpointError(f"{path} does not record a GPT config (meta['gpt'])")
    model = GPT(GPTConfig(**gpt))
    checkpoint.load(path, model)
    return model


_SFT_VAL: dict[SFTConfig, float] = {}


def sft_policy(config: SFTConfig, task: NamesTask) -> GPT:
    """A fresh copy of the SFT policy (trained once per config and process, then cached)."""
    model = GPT(config.gpt_config(task), rng=np.random.default_rng(config.seed))
    model.load_state_dict(dict(_sft_state(config)))
    return model


def sft_val_loss(config: SFTConfig) -> float:
    """Validation loss (nats per token, names stream) of the SFT policy of ``config``."""
    _sft_state(config)
    return _SFT_VAL[config]


class ScalarHeadGPT(Module):
    """GPT trunk + linear head to one scalar per position: (B, T) ids -> (B, T) scores."""

    def __init__(self, config: GPTConfig, *, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.trunk = GPT(config, rng=rng)
        self.head = Linear(config.d_model, 1, rng=rng)
        self.context_length = config.context_length

    @classmethod
    def from_policy(cls, policy: GPT, rng: np.random.Generator) -> ScalarHeadGPT:
        """A scalar model whose trunk starts as a copy of ``policy``."""
        m = cls(policy.config, rng=rng)
        m.trunk.load_state_dict(policy.state_dict())
        return m

    def forward(self, idx: np.ndarray) -> Tensor:
        h, _ = self.trunk.hidden(idx)
        return self.head(h).squeeze(-1)

    def score(self, tokens: np.ndarray, lengths: np.ndarray) -> Tensor:
        """(B,) score at each row's end marker; ``lengths`` = letters in the name + 2."""
        s = self(tokens)
        idx = np.asarray(lengths, dtype=np.int64) - 1
        return s.gather(-1, idx[:, None]).squeeze(-1)
