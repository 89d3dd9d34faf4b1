"""spiral.distributed: data, tensor and pipeline parallelism and ZeRO on real processes.

The transport is ``torch.distributed`` (gloo on CPU, NCCL on GPUs): an optional extra,
``pip install -e ".[distributed]"``, imported lazily — importing this package never imports
torch, and the first call that needs it says what to install. The parallel algorithms are
ours, written on NumPy arrays that cross processes as ``torch.from_numpy`` views:

- ``collectives``: naive and ring all-reduce (reduce-scatter + all-gather) from send/recv;
- ``data_parallel``: DDP semantics with naive, ring or bucketed (backward-overlapped) sync;
- ``tensor_parallel``: column/row-parallel Linear, attention by heads, Megatron's FFN;
- ``pipeline``: naive, GPipe and 1F1B schedules with recorded timelines;
- ``zero`` and ``zero_checkpoint``: ZeRO stages 1–3 and sharded checkpoints;
- ``strategies`` / ``launch``: one run per strategy, checked against one process;
- ``cost``: an α–β model of step time, memory and communication at cluster scale.

Chapter: stage 13 (distributed training).
"""

from spiral.distributed.runtime import INSTALL_HINT, Comm, as_torch, require_torch

__all__ = ["INSTALL_HINT", "Comm", "as_torch", "require_torch"]
