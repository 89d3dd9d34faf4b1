"""``spiral train mlp|gpt`` and ``spiral sample``: train a model into a run directory, sample it.

Each model has its own options, built from its config's fields, so ``spiral train gpt
--help`` shows the GPT's sizes with the chosen preset's values, and an option of the other
model (``spiral train gpt --d-embed 64``) is an error rather than silently ignored. The
recipes themselves live in :mod:`spiral.recipes`. Chapters: stage 4 (MLP), stage 8 (GPT).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np

from spiral import cli_args as ca

# Training-loop options and their types; the GPT's window is its context length.
_TRAIN_TYPES: dict[str, Any] = {
    "max_steps": ca.positive_int, "batch_size": ca.positive_int, "seq_len": ca.positive_int,
    "grad_accum": ca.positive_int, "lr": ca.positive_float, "min_lr_ratio": ca.unit_interval,
    "warmup_steps": ca.nonneg_int, "weight_decay": ca.nonneg_float,
    "grad_clip": ca.nonneg_float, "eval_interval": ca.positive_int,
    "eval_tokens": ca.positive_int, "checkpoint_interval": ca.nonneg_int,
    "threads": ca.positive_int,
}
_TRAIN_CHOICES: dict[str, tuple[str, ...]] = {"schedule": ("cosine", "constant"),
                                               "precision": ("float32", "bfloat16", "float16")}
_MLP_TYPES: dict[str, Any] = {
    "n_context": ca.positive_int, "d_embed": ca.positive_int, "d_hidden": ca.positive_int,
    "n_layers": ca.nonneg_int, "dropout": ca.probability, "head_init_scale": ca.positive_float,
    "context_length": ca.positive_int,
}
_MLP_CHOICES: dict[str, tuple[str, ...]] = {
    "activation": ("relu", "tanh", "gelu", "gelu_tanh", "silu")}
_GPT_TYPES: dict[str, Any] = {
    "context_length": ca.positive_int, "n_layers": ca.positive_int, "n_heads": ca.positive_int,
    "d_model": ca.positive_int, "expansion": ca.positive_float, "dropout": ca.probability,
    "init_std": ca.positive_float,
}
_GPT_CHOICES: dict[str, tuple[str, ...]] = {"placement": ("pre", "post"),
                "positional": ("learned", "sinusoidal", "rope", "rope_halves", "alibi", "none"),
                "checkpoint": ("none", "blocks", "sqrt", "selective"),  # stage 12
                "attention": ("naive", "tiled", "online", "flash"),
                "saved": ("all", "lean")}  # stage 12: what backward keeps


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_options(group: Any, config_cls: Any, defaults: dict[str, Any],
                        types: dict[str, Any], choices: dict[str, tuple[str, ...]],
                        skip: tuple[str, ...], what: str) -> list[str]:
    """One option per field of ``config_cls`` (minus ``skip``); returns the field names."""
    names = []
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        default = defaults.get(f.name)
        shown = f"{what} default {default}"
        if isinstance(default, bool):
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction,
                               default=None, help=shown)
        elif f.name in choices:
            group.add_argument(_flag(f.name), choices=choices[f.name], default=None, help=shown)
        else:
            kind = types.get(f.name) or (ca.positive_int if default is None
                                         else ca.type_for_default(default))
            group.add_argument(_flag(f.name), type=kind, default=None, metavar="N"
                               if kind in (ca.positive_int, ca.nonneg_int) else None, help=shown)
        names.append(f.name)
    return names


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--data", type=ca.corpus, required=True,
                   help="corpus: names | shakespeare | PATH of a UTF-8 text file")
    p.add_argument("--out", default=default_out, help=f"run directory (default: {default_out})")
    p.add_argument("--seed", type=ca.nonneg_int, default=0, help="seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ca.add_data_dir(p)


def _picked(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def _report(res: dict[str, Any], out: str) -> None:
    from spiral.evaluate import LN2

    nats = res["val_nats"]
    print(f"validation: {nats:.4f} nats/char ({nats / LN2:.4f} bits), "
          f"{res['config']['n_parameters']:,} parameters, {res['train_s']:.0f} s")
    print(f"run directory: {out}  (sample it: spiral sample {out})")


def cmd_train_mlp(args: argparse.Namespace) -> int:
    from spiral.recipes.mlp import train_mlp

    ca.apply_data_dir(args)
    res = train_mlp(args.data, args.out, seed=args.seed,
                    model_overrides=_picked(args, args.model_fields),
                    train_overrides=_picked(args, args.train_fields), resume=args.resume,
                    progress=not args.no_progress)
    _report(res, args.out)
    return 0


def cmd_train_gpt(args: argparse.Namespace) -> int:
    from spiral.recipes.gpt import train_gpt

    ca.apply_data_dir(args)
    if getattr(args, "nproc", 1) > 1:  # stage 13: the same model on N processes
        from spiral.distributed.launch import run_train_gpt

        return run_train_gpt(args)
    res = train_gpt(args.data, args.out, preset=args.preset, seed=args.seed,
                    model_overrides=_picked(args, args.model_fields),
                    train_overrides=_picked(args, args.train_fields), resume=args.resume,
                    progress=not args.no_progress)
    _report(res, args.out)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from spiral.generate import check_sampling_options, sample_text
    from spiral.runs import load_run

    check_sampling_options(args.temperature, args.top_k, args.top_p)
    from spiral.hub import is_hub_source

    if is_hub_source(args.run_dir):  # a Hugging Face folder or hub id (the hub extra)
        from spiral.hub import sample as hub_sample

        text = hub_sample(args.run_dir, args.prompt or "", max_new_tokens=args.max_new_tokens,
                          seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p)
        print(text.rstrip("\n"))
        return 0
    model, tok, config = load_run(args.run_dir)
    names = config["data"] == "names"
    prompt = args.prompt if args.prompt is not None else "\n"
    if names and not prompt.startswith("\n"):
        prompt = "\n" + prompt
    missing = sorted(set(prompt) - set(tok.itos))
    if missing:
        raise ValueError(f"the prompt has characters this model never saw: {missing!r} "
                         f"(its vocabulary is {''.join(tok.itos)!r})")
    text = sample_text(model, tok, np.random.default_rng(args.seed), n=args.n, prompt=prompt,
                       names=names, max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    print(text.rstrip("\n"))  # exactly one newline at the end
    return 0


def _train_defaults(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from spiral.train import TrainConfig

    base = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return {**base, **(overrides or {})}


def _add_train_options(p: argparse.ArgumentParser, defaults: dict[str, Any],
                       skip: tuple[str, ...]) -> list[str]:
    from spiral.train import TrainConfig

    g = p.add_argument_group("training loop")
    return _add_config_options(g, TrainConfig, defaults, _TRAIN_TYPES, _TRAIN_CHOICES,
                               skip + ("seed", "progress"), "")


def add_subparser(subparsers: Any) -> None:
    """Register ``train mlp``, ``train gpt`` and ``sample`` on the ``spiral`` command."""
    from spiral.models.gpt import GPTConfig
    from spiral.models.mlp import MLPConfig
    from spiral.recipes.gpt import RECIPES

    t = subparsers.add_parser("train", help="train a model (mlp or gpt) into a run directory",
                              description="Train a model on a corpus's fixed split into a run "
                              "directory (config.json, metrics.jsonl, checkpoint, samples).")
    models = t.add_subparsers(dest="model", metavar="MODEL", required=True)

    m = models.add_parser("mlp", help="the MLP language model (stage 4)",
                          description="Train stage 4's MLP language model. The defaults are "
                          "the recipe the chapter reports.")
    _common(m, "runs/mlp")
    g = m.add_argument_group("model (MLPConfig)")
    mdef = dataclasses.asdict(MLPConfig(vocab_size=1))
    m.set_defaults(model_fields=_add_config_options(g, MLPConfig, mdef, _MLP_TYPES,
                                                    _MLP_CHOICES, ("vocab_size",), ""),
                   train_fields=_add_train_options(m, _train_defaults(), ()),
                   func=cmd_train_mlp)

    gp = models.add_parser("gpt", help="the GPT of stage 8 (nanoGPT's recipes)",
                           description="Train the GPT with nanoGPT's baby (default) or small "
                           "recipe; options override the preset's values shown below.")
    _common(gp, "runs/gpt")
    gp.add_argument("--preset", choices=sorted(RECIPES), default="baby",
                    help="model sizes and training recipe (default: baby)")
    g = gp.add_argument_group("model (GPTConfig; defaults shown are the baby preset's)")
    gdef = dataclasses.asdict(GPTConfig.preset("baby", 1))
    gp.set_defaults(model_fields=_add_config_options(g, GPTConfig, gdef, _GPT_TYPES,
                                                     _GPT_CHOICES, ("vocab_size",), ""),
                    train_fields=_add_train_options(gp, _train_defaults(RECIPES["baby"]),
                                                    ("seq_len",)),
                    func=cmd_train_gpt)
    try:  # stage 13's options; the distributed package needs only numpy until it runs
        from spiral.distributed.launch import add_parallel_arguments
    except ModuleNotFoundError:
        pass
    else:
        add_parallel_arguments(gp)

    s = subparsers.add_parser("sample", help="sample text from a trained run directory",
                              description="Sample names or a passage from a run directory "
                              "written by `spiral train` (MLP or GPT).")
    s.add_argument("run_dir", help="a directory written by `spiral train`, a Hugging Face "
                   "model folder, or a hub id such as openai-community/gpt2 (hub extra)")
    s.add_argument("--prompt", default=None, help="text to continue (names: a name prefix)")
    s.add_argument("--n", type=ca.positive_int, default=10, help="how many names (names corpus)")
    s.add_argument("--max-new-tokens", type=ca.positive_int, default=500)
    s.add_argument("--temperature", type=ca.nonneg_float, default=1.0,
                   help="0 = greedy, 1 = the model's own distribution (default 1)")
    s.add_argument("--top-k", type=ca.positive_int, default=None,
                   help="keep the k most likely tokens (default: all)")
    s.add_argument("--top-p", type=ca.unit_interval, default=None,
                   help="keep the smallest set of tokens with probability >= p, in (0, 1]")
    s.add_argument("--seed", type=ca.nonneg_int, default=0)
    s.set_defaults(func=cmd_sample)
