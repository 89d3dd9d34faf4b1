"""The book's model: a byte-level Llama-style GPT pretrained on tiny Shakespeare.

One model that stages 15–18 fine-tune, align, serve and quantize. Choices, and why:

* **Bytes, not characters or BPE.** 256 ids encode any text (names, prompts typed at a
  server, other languages), and tiny Shakespeare is ASCII, so one byte is one character and
  nats per byte compare directly with the Kneser–Ney baselines' nats per character. A BPE
  vocabulary learned on 1 MB would spend parameters on rare merges.
* **The modern block** (RMSNorm, SwiGLU at the 8/3·d width, RoPE, no biases) with grouped
  KV heads (6 query heads share 3 KV heads), so stage 17's cache is half an MHA cache.
* **Size from the budget.** d = 192, 6 layers, context 256: 2.5 M parameters (10 MB in
  float32). Per token the step costs ≈ 6N + 12·L·T·d FLOPs; at 0.37 ms per token on one
  quiet core (timed before the run; lab notes) 2,000 steps of 16 × 256 tokens (8 epochs of
  the training split) take about an hour of one core.

The run writes checkpoints to a run folder and resumes from it (``resume=True`` in the
config); the final weights go through :func:`spiral.models.pretrained.save_pretrained`
(safetensors + config + tokenizer + training record + SHA256SUMS). Chapter: stage 14.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    name: str = "spiral-book"
    d_model: int = 192
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int = 3
    context_length: int = 256
    batch_size: int = 16
    max_steps: int = 2000
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    eval_interval: int = 250
    eval_tokens: int = 40_000
    seed: int = 0
    run_dir: str = "runs/spiral-book"     # checkpoints (gitignored); "" = a temp folder
    out_dir: str = "models"               # where the pretrained folder goes; "" = temp
    resume: bool = True
    sample_chars: int = 400


def model_config(c: Config) -> Any:
    from spiral.models.gpt import GPTConfig

    return GPTConfig(vocab_size=256, context_length=c.context_length, n_layers=c.n_layers,
                     n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, d_model=c.d_model,
                     norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves",
                     bias=False, dropout=0.0)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral import data
    from spiral.evaluate import evaluate
    from spiral.generate import generate
    from spiral.models.gpt import GPT
    from spiral.models.pretrained import load_pretrained, save_pretrained
    from spiral.optim import AdamW
    from spiral.records import git_sha
    from spiral.scaling.flops import training_flops
    from spiral.tokenizers import ByteTokenizer
    from spiral.train import TrainConfig, TrainState, train
    from spiral.train import resume as resume_run

    tmp = tempfile.TemporaryDirectory() if not (config.run_dir and config.out_dir) else None
    run_dir = Path(config.run_dir or os.path.join(tmp.name, "run"))  # type: ignore[union-attr]
    out_root = Path(config.out_dir or os.path.join(tmp.name, "models"))  # type: ignore[union-attr]
    tok = ByteTokenizer()
    splits = data.get_splits("shakespeare")
    train_ids = np.array(tok.encode(splits.train), dtype=np.int64)
    val_ids = np.array(tok.encode(splits.val), dtype=np.int64)
    mcfg = model_config(config)
    model = GPT(mcfg, rng=np.random.default_rng(config.seed))
    tcfg = TrainConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                       seq_len=config.context_length, lr=config.lr,
                       warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
                       eval_interval=config.eval_interval, eval_tokens=config.eval_tokens,
                       checkpoint_interval=config.eval_interval, seed=config.seed,
                       progress=False)
    opt = AdamW(model.param_groups(tcfg.weight_decay), lr=tcfg.lr, betas=(0.9, 0.99))
    meta = {"experiment": "architectures_book_model", "model_config": mcfg.to_dict(),
            "train_config": tcfg.to_dict()}
    train_rng = np.random.default_rng(config.seed + 1000)
    state = TrainState()
    ckpt = run_dir / "checkpoint.safetensors"
    if config.resume and ckpt.is_file():
        state = resume_run(ckpt, model, opt, train_rng, meta=meta)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = train(model, opt, train_ids, val_ids, tcfg, train_rng, out_dir=run_dir,
                  state=state, checkpoint_meta=meta)
    model.eval()
    val = evaluate(model, val_ids).nats
    n_params = model.num_parameters()
    tokens = tcfg.max_steps * tcfg.batch_size * tcfg.seq_len
    train_flops = training_flops(mcfg, tokens, seq_len=tcfg.seq_len)
    fpt = train_flops / tokens
    prompt = "ROMEO:\n"
    ids = generate(model, tok.encode(prompt), config.sample_chars,
                   np.random.default_rng(config.seed), temperature=0.8)
    sample = prompt + tok.decode(ids)
    record = {"corpus": "shakespeare", "split": "train (90 %); validation scored on the "
              "whole validation split", "tokenizer": "byte", "seed": config.seed,
              "train_config": tcfg.to_dict(), "betas": [0.9, 0.99],
              "history": state.history, "val_nats": val, "n_parameters": n_params,
              "tokens_seen": tokens, "epochs": tokens / len(train_ids),
              "flops_per_token": fpt, "git_sha": git_sha()}
    folder = save_pretrained(out_root / config.name, model, tok, record)
    loaded = load_pretrained(folder)  # the checksum-verified round trip
    reloaded_val = evaluate(loaded.model, val_ids[:20_000]).nats
    direct_val = evaluate(model, val_ids[:20_000]).nats
    sums = (folder / "SHA256SUMS").read_text(encoding="utf-8")
    if tmp is not None:
        tmp.cleanup()
    return {"config": asdict(config), "model_config": mcfg.to_dict(), "val_nats": val,
            "n_parameters": n_params, "bytes_float32": 4 * n_params,
            "tokens_seen": tokens, "epochs": tokens / len(train_ids),
            "train_bytes": int(len(train_ids)), "flops_per_token": fpt,
            "train_flops": train_flops, "history": state.history, "sample": sample,
            "reload_gap": abs(reloaded_val - direct_val), "sha256sums": sums,
            "train_loss_final": state.history[-1]["train_loss"]}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    """Periodic estimates score the FIRST ``eval_tokens`` validation bytes (a fixed slice,
    easier than the rest); the final point scores the whole split — drawn apart."""
    h = results["history"]
    periodic = [r for r in h if not r.get("val_full")]
    n_eval = results["config"]["eval_tokens"]
    fig, ax = new_figure(width=5.6, height=3.0)
    ax.plot([r["step"] for r in h], [r["train_loss"] for r in h], "o-", ms=3,
            color=PALETTE[0], label="training batches (mean since the last point)")
    ax.plot([r["step"] for r in periodic], [r["val_loss"] for r in periodic], "o-", ms=3,
            color=PALETTE[1], label=f"validation, first {n_eval:,} bytes")
    ax.plot([h[-1]["step"]], [results["val_nats"]], "*", ms=10, color=PALETTE[2],
            label=f"final, whole validation split: {results['val_nats']:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per byte")
    ax.set_ylim(top=min(3.0, max(r["val_loss"] for r in h) + 0.1))
    ax.legend(fontsize=7)
    return {"book_model_curve": fig}


def check(results: dict[str, Any]) -> None:
    """The model learned (validation below the uniform ln 256 and below its first
    evaluation) and the saved folder loads back to the same predictions."""
    assert results["val_nats"] < np.log(256) - 0.5, results["val_nats"]
    assert results["val_nats"] < results["history"][0]["val_loss"], results["history"][0]
    assert results["reload_gap"] < 1e-6, results["reload_gap"]


EXPERIMENT = Experiment(
    name="architectures_book_model", stage=14, title="The book's model",
    quick=Config(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, context_length=32,
                 batch_size=16, max_steps=60, lr=3e-3, warmup_steps=10, eval_interval=30,
                 eval_tokens=4096, run_dir="", out_dir="", sample_chars=60),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("validation nats/byte", f"{r['val_nats']:.3f}"),
                       ("parameters", f"{r['n_parameters']:,}"),
                       ("epochs", f"{r['epochs']:.1f}")],
)
