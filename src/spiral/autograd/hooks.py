"""Allocation hooks: let a memory profiler watch every Tensor's array come and go.

Stage 11's memory profiler needs the live-bytes curve of a training step: activations pile
up through the forward pass and are released during the backward pass. A hook registered
here is called as ``hook(event, nbytes, tensor_id)`` with ``event == "alloc"`` when a
``Tensor`` is created and ``event == "free"`` when it is garbage collected (a
``weakref.finalize`` callback).

``nbytes`` counts memory the tensor's array owns: a view (``reshape``, ``transpose``, basic
indexing, ``broadcast_to``, ``detach``) shares its base's buffer and reports 0 bytes, so
summing ``alloc`` minus ``free`` gives live bytes without double counting.

Cost: when no hook is registered, tensor creation pays one truthiness test of a list.

Stage 11: a hook object may also define ``on_tensor(tensor)`` (called with each new tensor,
so a profiler can tag its array by op and role) and ``on_grads(node, arrays)`` (called by
the backward sweep with the gradient arrays it allocates, which are plain arrays, not
Tensors). Plain functions need neither.

Chapter: stage 2 (memory cost of stored activations); used by stage 11.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

AllocationHook = Callable[[str, int, int], None]

# The live registry; tensor.py tests `if _HOOKS:` on every tensor it creates.
_HOOKS: list[AllocationHook] = []


class RemovableHandle:
    """Returned by :func:`register_allocation_hook`; ``handle.remove()`` unregisters."""

    __slots__ = ("_hook",)

    def __init__(self, hook: AllocationHook) -> None:
        self._hook = hook

    def remove(self) -> None:
        """Stop calling the hook (idempotent)."""
        if self._hook in _HOOKS:
            _HOOKS.remove(self._hook)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def register_allocation_hook(hook: AllocationHook) -> RemovableHandle:
    """Call ``hook(event, nbytes, tensor_id)`` on every Tensor allocation and free.

    >>> events = []
    >>> handle = register_allocation_hook(lambda e, n, i: events.append((e, n)))
    >>> handle.remove()
    """
    _HOOKS.append(hook)
    return RemovableHandle(hook)


def _owned_nbytes(array: Any) -> int:
    """Bytes the array owns (0 for a view of another array's buffer)."""
    return int(array.nbytes) if array.base is None else 0


def _notify_free(nbytes: int, tensor_id: int) -> None:
    for hook in tuple(_HOOKS):
        hook("free", nbytes, tensor_id)


def notify_alloc(tensor: Any, shared: bool = False) -> None:
    """Report a new tensor to every hook and arrange the matching ``free`` event."""
    nbytes = 0 if shared else _owned_nbytes(tensor.data)
    tensor_id = id(tensor)
    for hook in tuple(_HOOKS):
        hook("alloc", nbytes, tensor_id)
        on_tensor = getattr(hook, "on_tensor", None)
        if on_tensor is not None:
            on_tensor(tensor)
    weakref.finalize(tensor, _notify_free, nbytes, tensor_id)


def notify_grads(node: Any, arrays: Any) -> None:
    """Report gradient arrays the backward sweep allocated while processing ``node``."""
    for hook in tuple(_HOOKS):
        on_grads = getattr(hook, "on_grads", None)
        if on_grads is not None:
            on_grads(node, arrays)


# --------------------------------------------------------------------------- gradient hooks
# Stage 13: a hook run when a leaf's gradient is final during backward (PyTorch's
# ``register_post_accumulate_grad_hook``), so data parallelism can start all-reducing a
# bucket of gradients while the rest of the backward pass still runs. Keyed by id(tensor);
# the engine tests ``if _GRAD_HOOKS:`` once per leaf.
GradHook = Callable[[Any], None]
_GRAD_HOOKS: dict[int, list[GradHook]] = {}


class GradHookHandle:
    """Returned by :func:`register_post_accumulate_grad_hook`; ``remove()`` unregisters."""

    __slots__ = ("_key", "_hook")

    def __init__(self, key: int, hook: GradHook) -> None:
        self._key, self._hook = key, hook

    def remove(self) -> None:
        """Stop calling the hook (idempotent)."""
        hooks = _GRAD_HOOKS.get(self._key, [])
        if self._hook in hooks:
            hooks.remove(self._hook)
        if not hooks:
            _GRAD_HOOKS.pop(self._key, None)


def register_post_accumulate_grad_hook(tensor: Any, hook: GradHook) -> GradHookHandle:
    """Call ``hook(tensor)`` each time backward has finished accumulating ``tensor.grad``."""
    key = id(tensor)
    _GRAD_HOOKS.setdefault(key, []).append(hook)
    weakref.finalize(tensor, _GRAD_HOOKS.pop, key, None)
    return GradHookHandle(key, hook)


def run_grad_hooks(tensor: Any) -> None:
    """Called by the engine once a leaf's gradient is final."""
    for hook in tuple(_GRAD_HOOKS.get(id(tensor), ())):
        hook(tensor)
