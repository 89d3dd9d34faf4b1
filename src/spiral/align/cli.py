"""``spiral align sft|rm|ppo|dpo|grpo``: each step of the alignment pipeline into a run folder.

Every command writes ``metrics.jsonl`` and a safetensors checkpoint (``spiral.checkpoint``)
into ``--out``. ``rm``, ``ppo``, ``dpo`` and ``grpo`` start from the SFT checkpoint given by
``--sft`` (a ``spiral align sft`` run's ``checkpoint.safetensors``); ``ppo --reward-model``
optimises a learned reward model instead of the true reward. Chapter: stage 16.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from spiral import checkpoint
from spiral import cli_args as ca

COMMANDS = ("sft", "rm", "ppo", "dpo", "grpo")


def add_parser(subparsers: Any) -> None:
    """Register ``align`` on the ``spiral`` command (its handler is :func:`run`)."""
    p = subparsers.add_parser("align", help="alignment on the names task (stage 16)",
                              description="SFT, reward model, PPO, DPO and GRPO on names whose "
                              "true reward (share of vowels) a program computes.")
    p.add_argument("step", choices=COMMANDS, help="which stage of the pipeline to run")
    p.add_argument("--out", type=Path, required=True, help="run folder (created)")
    p.add_argument("--sft", type=Path, help="SFT checkpoint (needed by rm, ppo, dpo, grpo)")
    p.add_argument("--reward-model", type=Path, help="ppo: optimise this reward model")
    p.add_argument("--steps", type=ca.positive_int, help="training steps / iterations")
    p.add_argument("--pairs", type=ca.positive_int, default=4000, help="preference pairs")
    p.add_argument("--temperature", type=ca.positive_float, default=0.1,
                   help="Bradley–Terry labelling temperature τ")
    p.add_argument("--beta", type=ca.positive_float, help="DPO β or the PPO/GRPO KL coefficient")
    p.add_argument("--loss-type", choices=("sigmoid", "ipo", "hinge"), default="sigmoid")
    p.add_argument("--seed", type=ca.nonneg_int, default=0)
    ca.add_data_dir(p)
    p.set_defaults(func=run)


def _need_sft(args: argparse.Namespace) -> Path:
    if args.sft is None:
        raise SystemExit(f"spiral align {args.step}: --sft PATH (an SFT checkpoint) is required")
    return Path(args.sft)


def run(args: argparse.Namespace) -> int:
    """Run one step of the pipeline; returns the exit status."""
    from dataclasses import replace

    from spiral import align
    from spiral.align.evaluation import true_reward_fn, write_metrics
    from spiral.align.models import load_policy, train_sft
    from spiral.align.reward_model import rm_reward_fn

    ca.apply_data_dir(args)
    task = align.NamesTask.build()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    if args.step == "sft":
        cfg = align.SFTConfig(seed=args.seed)
        train_sft(replace(cfg, max_steps=args.steps or cfg.max_steps), task, out_dir=out)
        return 0
    ref = load_policy(_need_sft(args))
    if args.step in ("rm", "dpo"):
        pairs = align.make_pairs(ref, task, args.pairs, args.temperature, rng)
    if args.step == "rm":
        n_test = max(1, len(pairs) // 5)
        train_pairs, test_pairs = pairs.subset(slice(n_test, None)), pairs.subset(slice(0, n_test))
        rm = align.ScalarHeadGPT.from_policy(ref, rng)
        rc = align.RMConfig()
        align.train_reward_model(rm, train_pairs, replace(rc, steps=args.steps or rc.steps), rng,
                                 out_dir=out)
        write_metrics(out, [{"held_out": align.evaluate_rm(rm, test_pairs, args.temperature)}])
        checkpoint.save(out / "reward_model.safetensors", rm, step=args.steps or rc.steps,
                        meta={"gpt": ref.config.to_dict()})
        return 0
    policy = load_policy(args.sft)
    if args.step == "dpo":
        dc = align.DPOConfig(loss_type=args.loss_type)
        dc = replace(dc, steps=args.steps or dc.steps, beta=args.beta or dc.beta)
        align.train_dpo(policy, ref, pairs, task, dc, rng, out_dir=out)
    elif args.step == "grpo":
        gc = align.GRPOConfig()
        gc = replace(gc, iterations=args.steps or gc.iterations, kl_coef=args.beta or gc.kl_coef)
        align.train_grpo(policy, ref, task, true_reward_fn(task), gc, rng, out_dir=out)
    else:
        pc = align.PPOConfig()
        pc = replace(pc, iterations=args.steps or pc.iterations, kl_coef=args.beta or pc.kl_coef)
        reward = true_reward_fn(task)
        if args.reward_model is not None:
            rm = align.ScalarHeadGPT(ref.config)
            checkpoint.load(args.reward_model, rm)
            reward = rm_reward_fn(rm, task)
        critic = align.ScalarHeadGPT.from_policy(ref, rng)
        align.train_ppo(policy, ref, critic, task, reward, pc, rng,
                        proxy=None if args.reward_model is None else reward, out_dir=out)
    return 0
