"""Computational graphs of a neuron and of a two-layer MLP, drawn with values and gradients.

The neuron is ``o = tanh(x₁w₁ + x₂w₂ + b)``; the MLP is 2 → 3 (ReLU) → 1 with the squared
error ``L = (ŷ - t)²``. After ``backward()`` every box shows ∂o/∂v (or ∂L/∂v), and the check
compares every leaf's gradient with a central finite difference in float64, so the picture
is also a test. Chapter: stage 2, "Computational graphs".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd.graph import draw_graph
from spiral.autograd.value import Value, graph_size, topological_order
from spiral.experiments.framework import Experiment


@dataclass(frozen=True)
class Config:
    hidden: int = 3
    target: float = 1.0
    fd_step: float = 1e-6


def _leaf(x: float, name: str) -> Value:
    v = Value(float(x))
    v.label = name
    return v


def neuron(params: dict[str, float]) -> tuple[Value, list[Value]]:
    """o = tanh(x₁w₁ + x₂w₂ + b) from named numbers; returns (o, leaves)."""
    leaves = {k: _leaf(v, k) for k, v in params.items()}
    n = leaves["x1"] * leaves["w1"] + leaves["x2"] * leaves["w2"] + leaves["b"]
    n.label = "n"
    o = n.tanh()
    o.label = "o = tanh"
    return o, list(leaves.values())


def mlp(params: dict[str, float], hidden: int, target: float) -> tuple[Value, list[Value]]:
    """L = (ŷ - t)² for a 2 → hidden (ReLU) → 1 network; returns (L, leaves)."""
    leaves = {k: _leaf(v, k) for k, v in params.items()}
    hs = []
    for j in range(hidden):
        a = leaves["x1"] * leaves[f"W{j}1"] + leaves["x2"] * leaves[f"W{j}2"] + leaves[f"b{j}"]
        h = a.relu()
        h.label = f"h{j} = relu"
        hs.append(h)
    y = leaves["c"]
    for j, h in enumerate(hs):
        y = y + h * leaves[f"v{j}"]
    y.label = "ŷ"
    loss = (y - target) ** 2
    loss.label = "L = (ŷ-t)²"
    return loss, list(leaves.values())


def _numbers(values: list[Value]) -> dict[str, float]:
    return {str(v.label): float(v.data) for v in values}


def _fd_error(build: Any, params: dict[str, float], grads: dict[str, float], h: float) -> float:
    worst = 0.0
    for k in params:
        up, down = dict(params), dict(params)
        up[k] += h
        down[k] -= h
        fd = (build(up)[0].data - build(down)[0].data) / (2 * h)
        worst = max(worst, abs(fd - grads[k]))
    return worst


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {}
    p_neuron = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0,
                "b": round(float(6.0 + rng.uniform(0.5, 1.0)), 4)}
    w = rng.normal(0.0, 1.0, size=(config.hidden, 3)).round(3)
    v = rng.normal(0.0, 1.0, size=config.hidden).round(3)
    p_mlp = {"x1": 0.5, "x2": -1.0}
    for j in range(config.hidden):
        # positive biases keep most ReLUs alive, so the picture shows gradients flowing
        p_mlp.update({f"W{j}1": w[j, 0], f"W{j}2": w[j, 1], f"b{j}": abs(w[j, 2]) + 0.1,
                      f"v{j}": v[j]})
    p_mlp["c"] = 0.1
    p_mlp = {k: float(x) for k, x in p_mlp.items()}
    builders = {
        "neuron": lambda p: neuron(p),
        "mlp": lambda p: mlp(p, config.hidden, config.target),
    }
    for name, params in (("neuron", p_neuron), ("mlp", p_mlp)):
        root, leaves = builders[name](params)
        root.backward()
        grads = {str(leaf.label): leaf.grad for leaf in leaves}
        nodes, edges = graph_size(root)
        out[name] = {
            "params": params,
            "output": root.data,
            "grads": grads,
            "nodes": nodes,
            "edges": edges,
            "ops": sum(1 for u in topological_order(root) if u._prev),
            "max_fd_error": _fd_error(builders[name], params, grads, config.fd_step),
            "table": {"columns": ["leaf", "value", "gradient"],
                      "rows": [[k, params[k], round(g, 6)] for k, g in grads.items()]},
        }
    out["config_hidden"] = config.hidden
    out["config_target"] = config.target
    return out


def backward_snapshots(root: Value) -> list[dict[Value, float]]:
    """Every node's .grad after each step of the backward sweep (step 0: only ∂root/∂root)."""
    order = topological_order(root)
    for v in order:
        v.grad = 0.0
    root.grad = 1.0
    snaps = [{v: v.grad for v in order}]
    for v in reversed(order):  # the same sweep as Value.backward, one node at a time
        if not v._prev:
            continue
        for p, d in zip(v._prev, v._local):
            p.grad += d * v.grad
        snaps.append({u: u.grad for u in order})
    return snaps


def mode_orders(root: Value, seed: Value) -> tuple[dict[Value, tuple[int, float]],
                                                      dict[Value, tuple[int, float]]]:
    """For every node: (step, tangent ∂v/∂seed) in forward mode and (step, adjoint ∂root/∂v)
    in reverse mode. Forward mode visits nodes in topological order, reverse mode in reverse."""
    order = topological_order(root)
    fwd: dict[Value, tuple[int, float]] = {}
    tangent: dict[Value, float] = {}
    for step, v in enumerate(order):
        tangent[v] = 1.0 if v is seed else sum(d * tangent[p] for p, d in zip(v._prev, v._local))
        fwd[v] = (step + 1, tangent[v])
    adjoint = dict.fromkeys(order, 0.0)
    adjoint[root] = 1.0
    rev: dict[Value, tuple[int, float]] = {}
    for step, v in enumerate(reversed(order)):
        rev[v] = (step + 1, adjoint[v])
        for p, d in zip(v._prev, v._local):
            adjoint[p] += d * adjoint[v]
    return fwd, rev


def plot(results: dict[str, Any]) -> dict[str, Any]:
    o, _ = neuron(results["neuron"]["params"])
    o.backward()
    loss, _ = mlp(results["mlp"]["params"], results["config_hidden"], results["config_target"])
    loss.backward()
    from spiral.plotting import new_figure

    o2, _ = neuron(results["neuron"]["params"])
    snaps = backward_snapshots(o2)
    picks = [0, 1, 2, len(snaps) - 1]
    flow, axes = new_figure(2, 2, width=9.0, height=6.0)
    for ax, k in zip(axes.flat, picks):
        for v, g in snaps[k].items():
            v.grad = g
        draw_graph(o2, ax=ax, title=f"after {k} backward step{'s' if k != 1 else ''}",
                   fontsize=5.5)
    o3, leaves3 = neuron(results["neuron"]["params"])
    w1 = next(v for v in leaves3 if v.label == "w1")
    fwd, rev = mode_orders(o3, w1)
    modes, (ax_f, ax_r) = new_figure(1, 2, width=10.0, height=3.4)

    def name(v: Value) -> str:
        return getattr(v, "label", "") or v._op

    draw_graph(o3, ax=ax_f, fontsize=5.5, title="forward mode, seed w1: left to right",
               text=lambda v: f"{name(v)}\nstep {fwd[v][0]}\n∂·/∂w1 = {fwd[v][1] + 0.0:.3g}")
    draw_graph(o3, ax=ax_r, fontsize=5.5, title="reverse mode: right to left",
               text=lambda v: f"{name(v)}\nstep {rev[v][0]}\n∂o/∂· = {rev[v][1] + 0.0:.3g}")
    # the MLP graph on a page-width canvas (its natural size is twice as wide, which the book
    # would shrink until the labels are unreadable)
    mlp_fig, mlp_ax = new_figure(width=10.0, height=5.6)
    draw_graph(loss, ax=mlp_ax, title="2-3-1 MLP, L = (ŷ - t)²: data and ∂L/∂·", fontsize=6.0)
    return {
        "mode_order": modes,
        "gradient_flow": flow,
        "neuron_graph": draw_graph(o, title="o = tanh(x₁w₁ + x₂w₂ + b): data and ∂o/∂·"),
        "mlp_graph": mlp_fig,
    }


def check(results: dict[str, Any]) -> None:
    for name in ("neuron", "mlp"):
        r = results[name]
        assert r["max_fd_error"] < 1e-6, (name, r["max_fd_error"])
    n = results["neuron"]
    # o = tanh(n): ∂o/∂b = 1 - o², and ∂o/∂w₁ = x₁(1 - o²)
    assert abs(n["grads"]["b"] - (1 - n["output"] ** 2)) < 1e-12
    assert abs(n["grads"]["w1"] - n["params"]["x1"] * (1 - n["output"] ** 2)) < 1e-12
    # a leaf that multiplies a zero input gets a zero gradient
    assert n["grads"]["w2"] == 0.0
    # the neuron: 5 leaves + 2 products + 2 sums + tanh
    assert (n["nodes"], n["edges"]) == (10, 9)
    # forward mode seeded at w1 ends with ∂o/∂w1; reverse mode gives it to w1 directly
    o, leaves = neuron(n["params"])
    w1 = next(v for v in leaves if v.label == "w1")
    fwd, rev = mode_orders(o, w1)
    assert abs(fwd[o][1] - n["grads"]["w1"]) < 1e-15 and abs(rev[w1][1] - n["grads"]["w1"]) < 1e-15
    # the step-by-step sweep ends where backward() ends
    o, leaves = neuron(n["params"])
    final = backward_snapshots(o)[-1]
    assert all(abs(final[leaf] - n["grads"][str(leaf.label)]) < 1e-15 for leaf in leaves)


EXPERIMENT = Experiment(
    name="autodiff_graphs", stage=2, title="Computational graphs with values and gradients",
    quick=Config(), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("neuron nodes", r["neuron"]["nodes"]), ("mlp nodes", r["mlp"]["nodes"]),
                       ("max |grad - finite diff|", max(r["neuron"]["max_fd_error"],
                                                         r["mlp"]["max_fd_error"]))],
)
