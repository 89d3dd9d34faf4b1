"""``spiral train mlp`` and ``spiral sample``: train a model into a run directory, sample it.

A run directory holds ``config.json`` (model + training config, corpus, vocabulary),
``metrics.jsonl`` (one line per evaluation), ``checkpoint.safetensors`` and ``samples.txt``.
The defaults of :class:`~spiral.models.mlp.MLPConfig` and :class:`~spiral.train.TrainConfig`
are the recipe the chapter reports, so ``spiral train mlp --data names --out runs/mlp`` is
the measured run. Chapter: stage 4 (the training toolkit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from spiral.models.mlp import MLPConfig, MLPLanguageModel

# command-line flag -> (config class, field)
_MODEL_FLAGS = ("n_context", "d_embed", "d_hidden", "n_layers", "activation", "dropout")
_TRAIN_FLAGS = ("max_steps", "batch_size", "seq_len", "grad_accum", "lr", "weight_decay",
                "grad_clip", "eval_interval", "warmup_steps", "schedule")


def train_mlp(data_name: str, out_dir: str | Path | None = None, *, seed: int = 0,
              model_overrides: dict[str, Any] | None = None,
              train_overrides: dict[str, Any] | None = None, resume: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Train the MLP LM on a corpus's fixed split; returns config, final val loss, history."""
    from spiral import checkpoint, data
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW
    from spiral.tokenizers.char import CharTokenizer
    from spiral.train import TrainConfig, TrainState, train

    splits = data.get_splits(data_name)
    tok = CharTokenizer.from_text(splits.train)
    train_ids, val_ids = tok.encode_array(splits.train), tok.encode_array(splits.val)
    mcfg = MLPConfig(vocab_size=tok.vocab_size, **(model_overrides or {}))
    tcfg = TrainConfig(seed=seed, progress=progress, **(train_overrides or {}))
    rng = np.random.default_rng(seed)
    model = MLPLanguageModel(mcfg, rng=rng)
    opt = AdamW(param_groups(model, tcfg.weight_decay), lr=tcfg.lr)
    config = {"model": "mlp", "data": str(data_name), "model_config": mcfg.to_dict(),
              "train_config": tcfg.to_dict(), "vocab": "".join(tok.itos),
              "n_parameters": model.num_parameters()}
    state = TrainState()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        ckpt = out / "checkpoint.safetensors"
        if resume and ckpt.is_file():
            header = checkpoint.load(ckpt, model, opt, rng)
            state = TrainState(step=header["step"], history=header["history"])
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.jsonl").unlink(missing_ok=True)
        (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    t0 = time.perf_counter()
    state = train(model, opt, train_ids, val_ids, tcfg, rng, out_dir=out, state=state,
                  checkpoint_meta=config)
    wall = time.perf_counter() - t0
    result = {"config": config, "val_nats": state.history[-1]["val_loss"],
              "train_s": wall, "history": state.history, "model": model, "tokenizer": tok}
    if out is not None:
        start = "\n" if "\n" in tok.stoi else splits.train[0]
        text = sample_text(model, tok, np.random.default_rng(seed), n=20, prompt=start,
                           names=splits.name == "names")
        (out / "samples.txt").write_text(text + "\n")
    return result


def fit_text(train_text: str, rng: np.random.Generator, *,
             model_overrides: dict[str, Any] | None = None,
             train_overrides: dict[str, Any] | None = None) -> MLPLanguageModel:
    """The default recipe trained on any text (for ``spiral tour``'s MLP rung).

    Ids are ``CharTokenizer.from_text(train_text)``'s. Periodic validation uses the last
    10 % of ``train_text`` (a monitor only; the caller scores its own validation split).
    """
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW
    from spiral.tokenizers.char import CharTokenizer
    from spiral.train import TrainConfig, train

    tok = CharTokenizer.from_text(train_text)
    ids = tok.encode_array(train_text)
    model = MLPLanguageModel(MLPConfig(vocab_size=tok.vocab_size, **(model_overrides or {})),
                             rng=rng)
    tcfg = TrainConfig(progress=False, **(train_overrides or {}))
    opt = AdamW(param_groups(model, tcfg.weight_decay), lr=tcfg.lr)
    train(model, opt, ids, ids[-len(ids) // 10:], tcfg, rng)
    return model


def sample_text(model: Any, tok: Any, rng: np.random.Generator, *, n: int = 20,
                prompt: str = "\n", names: bool = True, max_new_tokens: int = 500,
                temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None) -> str:
    """``n`` names (one per line) or one passage of ``max_new_tokens`` characters."""
    from spiral.generate import generate

    start = tok.encode(prompt)
    if names:
        nl = tok.encode("\n")[0]
        out = []
        for _ in range(n):
            ids = generate(model, start, 40, rng, temperature=temperature, top_k=top_k,
                           top_p=top_p, stop_token=nl)
            out.append(prompt.lstrip("\n") + tok.decode(ids).rstrip("\n"))
        return "\n".join(out)
    ids = generate(model, start, max_new_tokens, rng, temperature=temperature, top_k=top_k,
                   top_p=top_p)
    return prompt + tok.decode(ids)


def load_run(run_dir: str | Path) -> tuple[MLPLanguageModel, Any, dict[str, Any]]:
    """(model, tokenizer, config) of a run directory written by ``spiral train``."""
    from spiral import checkpoint
    from spiral.tokenizers.char import CharTokenizer

    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text())
    model = MLPLanguageModel(MLPConfig(**config["model_config"]), rng=np.random.default_rng(0))
    checkpoint.load(run / "checkpoint.safetensors", model)
    return model, CharTokenizer(list(config["vocab"])), config


def cmd_train(args: argparse.Namespace) -> int:
    model_over = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k) is not None}
    train_over = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if args.model == "gpt":
        return _cmd_train_gpt(args, train_over)
    res = train_mlp(args.data, args.out, seed=args.seed, model_overrides=model_over,
                    train_overrides=train_over, resume=args.resume,
                    progress=not args.no_progress)
    from spiral.evaluate import LN2

    nats = res["val_nats"]
    print(f"validation: {nats:.4f} nats/char ({nats / LN2:.4f} bits), "
          f"{res['config']['n_parameters']:,} parameters, {res['train_s']:.0f} s")
    print(f"run directory: {args.out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    model, tok, config = load_run(args.run_dir)
    names = config["data"] == "names"
    prompt = args.prompt if args.prompt is not None else "\n"
    if names and not prompt.startswith("\n"):
        prompt = "\n" + prompt
    print(sample_text(model, tok, np.random.default_rng(args.seed), n=args.n, prompt=prompt,
                      names=names, max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, top_k=args.top_k, top_p=args.top_p))
    return 0


def add_subparser(subparsers: Any) -> None:
    """Register ``train`` and ``sample`` on the ``spiral`` command's subparsers."""
    mdef, tdef = MLPConfig(vocab_size=1), _train_defaults()
    t = subparsers.add_parser("train", help="train a model into a run directory")
    t.add_argument("model", choices=["mlp", "gpt"], help="which model (stage 4: mlp, stage 8: gpt)")
    t.add_argument("--data", required=True, help="names | shakespeare | PATH to a text file")
    t.add_argument("--out", default="runs/mlp", help="run directory (default: runs/mlp)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    for name in _MODEL_FLAGS:
        default = getattr(mdef, name)
        t.add_argument("--" + name.replace("_", "-"), type=type(default), default=None,
                       help=f"model: {name} (default {default})")
    for name in _TRAIN_FLAGS:
        default = tdef[name]
        t.add_argument("--" + name.replace("_", "-"), type=type(default), default=None,
                       help=f"training: {name} (default {default})")
    t.add_argument("--config", default="baby", help="gpt: preset (baby | small; default baby)")
    t.set_defaults(func=cmd_train)

    s = subparsers.add_parser("sample", help="sample text from a trained run directory")
    s.add_argument("run_dir", help="a directory written by `spiral train`")
    s.add_argument("--prompt", default=None, help="text to continue (names: a name prefix)")
    s.add_argument("--n", type=int, default=10, help="how many names (names corpus)")
    s.add_argument("--max-new-tokens", type=int, default=500)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sample)


def _train_defaults() -> dict[str, Any]:
    from spiral.train import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


# --- stage 8: `spiral train gpt --config baby` (the nanoGPT recipe; the MLP flags do not apply)
def _cmd_train_gpt(args: argparse.Namespace, train_over: dict[str, Any]) -> int:
    from spiral.evaluate import LN2
    from spiral.experiments.transformer_recipe import train_gpt

    out = "runs/gpt" if args.out == "runs/mlp" else args.out
    res = train_gpt(args.data, out, preset=args.config, seed=args.seed,
                    train_overrides=train_over, progress=not args.no_progress)
    nats = res["val_nats"]
    print(f"validation: {nats:.4f} nats/char ({nats / LN2:.4f} bits), "
          f"{res['config']['n_parameters']:,} parameters, {res['train_s']:.0f} s")
    print(f"run directory: {out}")
    return 0
