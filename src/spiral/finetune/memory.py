"""Training memory of full, frozen, LoRA and QLoRA fine-tuning: derived, then measured.

Stage 11's peak of a training step, M = P·s + S + G(t) + A(t) + g(t), changes with the method
in four places, and nowhere else:

* weights: P·s for every method, except that QLoRA stores each adapted matrix in NF4
  (≈ 4.127 bits per weight: 4-bit codes, int8 block scales, fp32 scales of the scales);
* gradients and AdamW's two moments: only for trainable parameters, (1 + 2)·P_train·s, where
  P_train is all of P (full), the unfrozen blocks (freeze) or r·(in + out) per adapted matrix;
* activations: a node is recorded only if one of its inputs requires a gradient, so a frozen
  prefix of the network (the embedding and the first norm under LoRA, the frozen blocks under
  freezing) keeps nothing for backward — its outputs live only while a recorded node needs them;
* each adapter (one fused node, :class:`spiral.finetune.lora.LoRAFn`) keeps h = x Aᵀ, N·r·s.

``predict_finetune_memory`` rewrites stage 11's graph of the GPT (:func:`build_gpt_graph`) by
these rules and runs stage 11's simulator on it; ``profile_finetune_step`` is stage 11's profiler
with the NF4 storage counted as parameters (it is not a ``Parameter``, so the hooks miss it).
Papers: Hu et al. (2021), LoRA; Dettmers et al. (2023), QLoRA. Chapter: stage 15.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from spiral.finetune.lora import DEFAULT_TARGETS, lora_modules, matches
from spiral.finetune.nf4 import NF4LoRALinear, nf4_nbytes
from spiral.profiling.memory_graph import Grad, Node, build_gpt_graph
from spiral.profiling.memory_layouts import layout_for
from spiral.profiling.memory_model import Breakdown, simulate_step
from spiral.profiling.memory_profiler import MemoryProfiler, MemoryTimeline, profile_step

METHODS = ("full", "freeze", "lora", "qlora")


def model_name(graph_name: str) -> str:
    """Stage 11's node names (``block0.attn.qkv_proj``) as the model's (``blocks.0.…``)."""
    return re.sub(r"^block(\d+)\.", r"blocks.\1.", graph_name)


def base_trainable(method: str, freeze_blocks: int = 0) -> Callable[[str], bool]:
    """Which of the base's parameters train: all (full), none (LoRA), or those above the
    embeddings and the first ``freeze_blocks`` blocks (freeze)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")

    def trainable(name: str) -> bool:
        if method == "full":
            return True
        if method in ("lora", "qlora"):
            return False
        m = re.match(r"blocks\.(\d+)\.", name)
        frozen = name.startswith(("tok_emb", "pos_emb")) or (m is not None
                                                               and int(m.group(1)) < freeze_blocks)
        return not frozen

    return trainable


def finetune_graph(config: Any, batch: int, context: int, method: str = "full", r: int = 8,
                   target_modules: str | Sequence[str] = DEFAULT_TARGETS,
                   freeze_blocks: int = 0, itemsize: int = 4) -> tuple[list[Node], set[int]]:
    """Stage 11's graph rewritten for a fine-tuning method; returns (nodes, quantized ids)."""
    s, N = itemsize, batch * context
    trainable = base_trainable(method, freeze_blocks)
    old = build_gpt_graph(config, batch, context, itemsize)
    nodes: list[Node] = []
    where: dict[int, int] = {}
    req: list[bool] = []
    quantized: set[int] = set()
    for i, n in enumerate(old):
        parents = [where[p] for p in n.parents]
        grads = list(n.grads)
        saved = n.saved
        adapted = (method in ("lora", "qlora") and not n.param and len(parents) >= 2
                   and nodes[parents[1]].param and nodes[parents[1]].name == n.name + ".weight"
                   and matches(model_name(n.name), target_modules))
        if adapted:
            d_in, d_out = n.grads[0].nbytes // (N * s), n.out // (N * s)  # type: ignore[union-attr]
            for part, numel in (("lora_A", r * d_in), ("lora_B", d_out * r)):
                nodes.append(Node(f"{n.name}.{part}.weight", "param", param=True, numel=numel))
                req.append(True)
                parents.append(len(nodes) - 1)
                grads.append(Grad("new", numel * s))
            saved += N * r * s  # h = x Aᵀ
            if method == "qlora":
                quantized.add(parents[1])
        if n.param:
            needs = trainable(model_name(n.name))
        else:
            needs = any(req[p] for p in parents)
        if n.param:
            node = n
        elif needs:  # recorded: a frozen or no-grad input gets no gradient
            node = replace(n, parents=tuple(parents), saved=saved, grads=tuple(
                g if req[p] else None for p, g in zip(parents, grads)))
        else:  # not recorded: nothing saved; its output lives only while a consumer keeps it
            node = replace(n, parents=tuple(parents), saved=0, scratch=0,
                           grads=tuple(None for _ in parents))
        where[i] = len(nodes)
        nodes.append(node)
        req.append(needs)
    _drop_unkept_outputs(nodes, req)
    return nodes, quantized


def _drop_unkept_outputs(nodes: list[Node], req: list[bool]) -> None:
    """An unrecorded output that no recorded node (or kept view of it) holds is transient."""
    kept = [False] * len(nodes)
    for c in range(len(nodes) - 1, -1, -1):
        n = nodes[c]
        if n.param:
            continue
        for p in n.parents:
            if req[c] or (n.out == 0 and kept[c]):
                kept[p] = True
    for i, n in enumerate(nodes):
        if not n.param and not req[i] and not kept[i] and n.out:
            nodes[i] = replace(n, out=0, parents=())


def predict_finetune_memory(config: Any, batch: int, context: int | None = None,
                            method: str = "full", r: int = 8,
                            target_modules: str | Sequence[str] = DEFAULT_TARGETS,
                            freeze_blocks: int = 0, optimizer: str = "adamw") -> Breakdown:
    """Peak bytes of one fine-tuning step (fp32) and its terms, as stage 11 predicts them."""
    T = config.context_length if context is None else context
    lay = layout_for(optimizer, "fp32")
    s = lay.param_bytes
    nodes, quantized = finetune_graph(config, batch, T, method, r, target_modules,
                                      freeze_blocks, s)
    params = sum(nf4_nbytes(n.numel) if i in quantized else n.numel * s
                 for i, n in enumerate(nodes) if n.param)
    train = [i for i, n in enumerate(nodes) if n.param and _is_trainable(nodes, i)]
    p_train = sum(nodes[i].numel for i in train)
    state = p_train * lay.state_bytes
    inputs = 2 * batch * T * 8
    biggest = max(nodes[i].numel for i in train)
    sim, a_fwd = simulate_step(nodes, params + state + inputs, lay.step_scratch * biggest)
    _, visible, at, phase, grads, flight = sim.best_visible
    grads_at_peak = p_train * lay.grad_bytes if phase == "step" else grads
    acts = visible - params - state - inputs - grads_at_peak - flight
    return Breakdown(params=params, grads=grads_at_peak, optimizer_state=state, activations=acts,
                     in_flight=flight, inputs=inputs, scratch=sim.best[0] - visible,
                     peak=sim.best[0], peak_visible=visible, peak_at=at, peak_phase=phase,
                     peak_total_at=sim.best[2], activations_end_of_forward=a_fwd)


def _is_trainable(nodes: list[Node], i: int) -> bool:
    return any(g is not None and i == p for n in nodes if not n.param
               for p, g in zip(n.parents, n.grads))


def profile_finetune_step(model: Any, batch: tuple[Any, Any], optimizer: Any) -> MemoryTimeline:
    """Stage 11's ``profile_step`` (after one warm-up step) with NF4 storage counted as params."""

    def track_nf4(prof: MemoryProfiler) -> None:
        for _, m in lora_modules(model):
            if isinstance(m, NF4LoRALinear):
                q = m.base_weight()
                for arr in (q.packed, q.qscale, q.scale_absmax):
                    prof.track(arr, "param", "resident")

    return profile_step(model, batch, optimizer, track_extra=track_nf4)
