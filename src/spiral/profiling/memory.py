"""spiral.profiling.memory: every byte of a training step, predicted and measured (stage 11).

One import for the stage's tools; the pieces live in sibling modules:

* parameters by component: ``count_by_component(config)`` (sums to
  :func:`spiral.models.gpt.count_parameters` and to ``sum(p.size)``);
* bytes per parameter per optimizer and precision: ``layout_for``, ``bytes_per_parameter``
  (mixed-precision Adam: 2 + 2 + 12 = 16, ZeRO's identity);
* the analytic model: ``predict_training_memory(config, batch, context, optimizer,
  precision) -> Breakdown`` and ``predict_inference_memory(config, batch, context)``; the
  engine's graph on paper is :func:`build_gpt_graph` (one node per autograd node, with the
  bytes it owns, saves, and hands back in backward); ``activations_by_layer`` sums it;
* the profiler: ``profile_step(model, batch, optimizer) -> MemoryTimeline`` (tagged live
  bytes per event, the peak and the op that reached it), ``profile_inference``, and
  ``MemoryProfiler`` for any code;
* the witnesses: ``tracemalloc_step_peak`` (NumPy's own allocation reports) and
  ``torch_step_peak`` (``torch.profiler`` with ``profile_memory=True``);
* the budget: ``largest_batch``, ``largest_context``, ``verify_fit``.

The peak of a training step (P parameters, s bytes each, K bytes of optimizer state per
parameter, A activations) is

    M_peak = P·s + P·K + max_t [ A(t) + G(t) + g(t) ] (+ scratch)

and in our engine it falls in the backward pass of the LAST block's FFN or at the loss's
backward (large vocabularies), not at the end of the forward pass.

Later stages state their savings with this API: a change (checkpointing, flash attention,
mixed precision, ZeRO, a KV cache, quantization) is a new ``Breakdown`` beside the old one,
and a new ``MemoryTimeline`` that measures it.
Papers: Rajbhandari et al. (2020); Korthikanti et al. (2022). Chapter: stage 11.
"""

from __future__ import annotations

from spiral.profiling.memory_batch import largest_batch, largest_context, verify_fit
from spiral.profiling.memory_graph import Grad, Node, activations_by_layer, build_gpt_graph
from spiral.profiling.memory_layouts import (
    OPTIMIZERS,
    PRECISIONS,
    Layout,
    bytes_per_parameter,
    count_by_component,
    famous_configs,
    layout_for,
)
from spiral.profiling.memory_model import (
    Breakdown,
    predict_inference_memory,
    predict_training_memory,
    simulate_step,
)
from spiral.profiling.memory_profiler import (
    TAGS,
    MemoryEvent,
    MemoryProfiler,
    MemoryTimeline,
    profile_inference,
    profile_step,
)
from spiral.profiling.memory_witness import (
    torch_forward_bytes,
    torch_step_peak,
    tracemalloc_step_peak,
)

__all__ = ["Breakdown", "Grad", "Layout", "MemoryEvent", "MemoryProfiler", "MemoryTimeline",
           "activations_by_layer", "Node", "OPTIMIZERS", "PRECISIONS", "TAGS", "build_gpt_graph",
           "bytes_per_parameter", "count_by_component", "famous_configs", "largest_batch",
           "largest_context", "layout_for", "predict_inference_memory",
           "predict_training_memory", "profile_inference", "profile_step", "simulate_step",
           "torch_forward_bytes", "torch_step_peak", "tracemalloc_step_peak", "verify_fit"]
