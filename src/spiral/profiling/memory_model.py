"""The analytic memory model of a training step: the engine's own rules, run on paper.

Live bytes at any moment of a training step are

    M(t) = P·s  +  S  +  G(t)  +  A(t)  +  g(t)  [+ scratch(t)]

parameters, optimizer state (per optimizer: SGD 0, momentum P·s, Adam 2·P·s), the leaves'
gradients, the activations the graph still holds, and the gradients in flight. The forward
pass grows A to Σ (out + saved) over the nodes of :mod:`spiral.profiling.memory_graph`; the
backward pass, in the engine's reverse topological order, allocates each node's input
gradients, then releases the node's output, its saved arrays and its incoming gradient. The
peak is the maximum of M over that walk, then of P·s + S + P·s + one scratch array in
``optimizer.step()``. Nothing here is fitted: each size is a formula of (B, T, C, H, V, L).

API (reused by stages 12-18): ``predict_training_memory(config, batch, context, optimizer,
precision) -> Breakdown``, ``predict_inference_memory(config, batch, context)``.
Papers: Rajbhandari et al., *ZeRO* (2020); Korthikanti et al., *Reducing Activation
Recomputation in Large Transformer Models* (2022). Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spiral.profiling.memory_graph import Grad, Node, build_gpt_graph
from spiral.profiling.memory_layouts import layout_for

__all__ = ["Breakdown", "predict_training_memory", "predict_inference_memory",
           "simulate_step"]


@dataclass
class Breakdown:
    """Bytes by term at the predicted peak of a step, plus where the peak falls."""

    params: int
    grads: int
    optimizer_state: int
    activations: int
    in_flight: int
    inputs: int
    scratch: int  # peak - peak_visible: what kernels hold inside backward at the true peak
    peak: int  # everything, scratch included (what tracemalloc sees)
    peak_visible: int  # without kernel scratch (what the allocation hooks see); the terms
    # above (params ... inputs) add up to it, at ``peak_at``
    peak_at: str
    peak_phase: str
    peak_total_at: str = ""  # where the peak with scratch falls (may differ from peak_at)
    activations_end_of_forward: int = 0
    timeline: list[tuple[str, str, int]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("timeline")
        return d


class _Buf:
    __slots__ = ("nbytes", "refs", "owned")

    def __init__(self, nbytes: int, owned: bool = False) -> None:
        self.nbytes, self.refs, self.owned = nbytes, 0, owned


class _Slice:
    """Stands for the engine's unmaterialized slice gradient: it holds the incoming array."""

    __slots__ = ("buf", "full")

    def __init__(self, buf: _Buf, full: int) -> None:
        self.buf, self.full = buf, full


class _Sim:
    def __init__(self, resident: int) -> None:
        self.live = resident
        self.grads = 0
        self.in_flight = 0
        self.best = (resident, 0, "", "", 0, 0)  # total, visible, node, phase, grads, flight
        self.best_visible = (resident, 0, "", "", 0, 0)  # the same at the largest visible
        self.timeline: list[tuple[str, str, int]] = []

    def new(self, nbytes: int, owned: bool = False) -> _Buf:
        self.live += nbytes
        self.in_flight += nbytes
        return _Buf(nbytes, owned)

    def inc(self, b: Any) -> None:
        if b is not None:
            (b.buf if isinstance(b, _Slice) else b).refs += 1

    def dec(self, b: Any) -> None:
        if b is None:
            return
        buf = b.buf if isinstance(b, _Slice) else b
        buf.refs -= 1
        if buf.refs == 0:
            self.live -= buf.nbytes
            self.in_flight -= buf.nbytes

    def mark(self, node: str, phase: str, scratch: int = 0) -> None:
        self.timeline.append((phase, node, self.live))
        here = (self.live + scratch, self.live, node, phase, self.grads, self.in_flight)
        if here[0] > self.best[0]:
            self.best = here
        if self.live > self.best_visible[1]:
            self.best_visible = here


def _topo(nodes: list[Node], root: int) -> list[int]:
    """The engine's iterative depth-first post-order (so the same processing order)."""
    topo: list[int] = []
    seen: set[int] = set()
    stack = [(root, False)]
    while stack:
        i, expanded = stack.pop()
        if expanded:
            topo.append(i)
            continue
        if i in seen:
            continue
        seen.add(i)
        stack.append((i, True))
        stack.extend((p, False) for p in nodes[i].parents if p not in seen)
    return topo


def simulate_step(nodes: list[Node], resident: int, step_scratch: int = 0,
                  grad_bytes: int | None = None) -> tuple[_Sim, int]:
    """Walk forward, backward and the optimizer step; returns the simulator and A_forward."""
    sim = _Sim(resident)
    base: dict[int, _Buf] = {}  # node -> the buffer its output lives in
    acts = 0
    for i, n in enumerate(nodes):
        if n.param:
            continue
        if n.out or not n.parents:
            base[i] = _Buf(n.out)
        else:
            base[i] = base[n.parents[0]]  # a view keeps its base's buffer alive
        base[i].refs += 1
        sim.live += n.out + n.saved
        acts += n.out + n.saved
        sim.mark(n.name, "forward")
    activations_fwd = acts

    def release(i: int) -> None:
        b = base[i]
        b.refs -= 1
        if b.refs == 0:
            sim.live -= b.nbytes
        sim.live -= nodes[i].saved

    pending: dict[int, Any] = {len(nodes) - 1: sim.new(0)}
    sim.inc(pending[len(nodes) - 1])
    g_var: Any = None
    pgs: list[Any] = []
    prev: int | None = None
    for i in reversed(_topo(nodes, len(nodes) - 1)):
        n = nodes[i]
        if prev is not None and not nodes[prev].param:
            release(prev)
        got = pending.pop(i, None)
        sim.dec(g_var)
        g_var = got
        if isinstance(g_var, _Slice):
            full = sim.new(g_var.full, owned=True)
            full.refs += 1
            sim.dec(g_var)
            g_var = full
        prev = i
        if g_var is None:
            continue
        if n.param:  # the leaf keeps g if the engine made it, else a private copy
            if g_var.owned:
                g_var.refs += 1
                sim.in_flight -= g_var.nbytes
            else:
                sim.live += g_var.nbytes  # g.copy(); g itself goes at the next node
            sim.grads += g_var.nbytes
            sim.mark(n.name, "backward")
            continue
        outs: list[Any] = []
        for spec in n.grads:
            outs.append(_make_grad(sim, spec, g_var))
        for o in outs:
            sim.inc(o)
        sim.mark(n.name, "backward", n.scratch)
        for o in pgs:
            sim.dec(o)
        pgs = outs
        for p, o in zip(n.parents, outs):
            if o is None:
                continue
            old = pending.get(p)
            if old is None:
                pending[p] = o
                sim.inc(o)
                continue
            if isinstance(old, _Buf) and old.owned:
                continue  # summed in place
            size = old.full if isinstance(old, _Slice) else (
                o.full if isinstance(o, _Slice) else old.nbytes)
            acc = sim.new(size, owned=True)
            pending[p] = acc
            sim.inc(acc)
            sim.mark(nodes[p].name, "backward")
            sim.dec(old)
    if prev is not None and not nodes[prev].param:
        release(prev)
    sim.dec(g_var)
    for o in pgs:
        sim.dec(o)
    sim.mark("loss.backward() done", "backward")
    sim.in_flight = 0
    sim.mark("optimizer.step", "step", step_scratch)
    return sim, activations_fwd


def _make_grad(sim: _Sim, spec: Grad | None, g: _Buf) -> Any:
    if spec is None:
        return None
    if spec.kind == "alias":
        return g
    if spec.kind == "slice":
        return _Slice(g, spec.nbytes)
    return sim.new(spec.nbytes)


def predict_training_memory(config: Any, batch: int, context: int | None = None,
                            optimizer: str = "adamw", precision: str = "fp32") -> Breakdown:
    """Peak bytes of one steady-state training step of ``GPT(config)`` and its terms.

    ``optimizer``: sgd | momentum | adam | adamw; ``precision``: fp32 | fp16 | bf16 (pure)
    | mixed (half weights/grads/activations, fp32 master weights and Adam moments).
    """
    T = config.context_length if context is None else context
    lay = layout_for(optimizer, precision)
    nodes = build_gpt_graph(config, batch, T, itemsize=lay.activation_bytes)
    P = sum(n.numel for n in nodes if n.param)
    biggest = max(n.numel for n in nodes if n.param)
    inputs = 2 * batch * T * 8
    resident = P * (lay.param_bytes + lay.master_bytes + lay.state_bytes) + inputs
    sim, a_fwd = simulate_step(nodes, resident, lay.step_scratch * biggest)
    total = sim.best[0]
    _, visible, where, phase, grads, flight = sim.best_visible
    params = P * (lay.param_bytes + lay.master_bytes)
    state = P * lay.state_bytes
    grads_at_peak = P * lay.grad_bytes if phase == "step" else grads
    acts = visible - params - state - inputs - grads_at_peak - flight
    return Breakdown(params=params, grads=grads_at_peak, optimizer_state=state,
                     activations=acts, in_flight=flight, inputs=inputs,
                     scratch=total - visible, peak=total, peak_visible=visible,
                     peak_at=where, peak_phase=phase, peak_total_at=sim.best[2],
                     activations_end_of_forward=a_fwd,
                     timeline=sim.timeline)


def predict_inference_memory(config: Any, batch: int, context: int | None = None,
                             precision: str = "fp32") -> Breakdown:
    """Peak of one no-grad forward pass as the hooks see it: weights + the widest moment.

    Without a graph an op's output dies as soon as its consumer returns, so at most a few
    arrays are alive: in attention the residual x, the norm's output, the fused qkv (kept
    by the q/k/v views), the head-merged copy and the projection (4·N·C + qkv); in the GELU FFN
    the block's input (its caller still holds it), x, the norm's output, the fc output and
    the GELU output (3·N·C + 2·N·h); SwiGLU holds three N·h arrays at once; at the head
    the final hidden states and the logits.
    Kernel scratch (the B·H·T² scores and probabilities inside attention) comes on top.
    """
    T = config.context_length if context is None else context
    s = layout_for("sgd", precision).activation_bytes
    nodes = build_gpt_graph(config, 1, 1, s)
    P = sum(n.numel for n in nodes if n.param)
    B, C, H, V = batch, config.d_model, config.n_heads, config.vocab_size
    N = B * T
    kv = getattr(config, "kv_heads", H)
    hid = int(getattr(config, "hidden", round(config.expansion * C)))
    swiglu = getattr(config, "ffn_type", "gelu") == "swiglu"
    qkv = N * (H + 2 * kv) * (C // H)
    attn = (4 * N * C + qkv) * s
    ffn = (3 * N * C + (3 if swiglu else 2) * N * hid) * s if config.ffn else 0
    head = (N * C + N * V) * s
    widest = max(attn, ffn, head)
    where = {attn: "attention", ffn: "ffn", head: "lm_head"}[widest]
    scores = B * H * T * T * s
    scratch = max(0, 2 * scores + T * T * s + (5 * N * C + qkv - 4 * N * C) * s - widest)
    inputs = N * 8
    return Breakdown(params=P * s, grads=0, optimizer_state=0, activations=widest,
                     in_flight=0, inputs=inputs, scratch=scratch,
                     peak=P * s + inputs + widest + scratch,
                     peak_visible=P * s + inputs + widest, peak_at=where,
                     peak_phase="forward")
