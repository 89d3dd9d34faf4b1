"""Module and Parameter: the containers that turn functions into trainable models.

A :class:`Module` owns named :class:`Parameter` tensors (trained), named buffers (state
that is saved but not trained, e.g. running statistics) and named sub-modules, and finds
them by walking its attributes, as ``torch.nn.Module`` does. Everything an optimizer,
a checkpoint or a training loop needs follows from that one tree:

    parameters()  = every Parameter in the tree, each once, in registration order
    state_dict()  = {"dotted.name": array} for parameters and persistent buffers

``param_groups`` builds torch-style optimizer groups that exempt biases, norm gains and
embeddings from weight decay (Loshchilov & Hutter, 2019, decouple the decay). Which tensors
to exempt is a design choice: minGPT exempts embeddings, as we do (decay only matrices that
multiply activations); nanoGPT decays every tensor with two or more dimensions, embeddings
included.
Chapter: stage 4 (the neural language model).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from spiral.autograd import Tensor


def _as_array(value: Any) -> np.ndarray:
    return np.asarray(value.data if isinstance(value, Tensor) else value)


class Parameter(Tensor):
    """A tensor that is a trainable part of a Module (``requires_grad=True`` by default).

    >>> p = Parameter(np.zeros(3, dtype=np.float32))
    >>> p.requires_grad
    True
    """

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(np.asarray(data), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class of every layer and model: ``forward`` plus a tree of named state."""

    training: bool
    _parameters: OrderedDict[str, Parameter | None]
    _buffers: OrderedDict[str, Any]
    _non_persistent: set[str]
    _modules: OrderedDict[str, Module]

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("call Module.__init__() before assigning attributes")
        if name in self._buffers and (value is None or isinstance(value, np.ndarray)):
            self._buffers[name] = value  # reassigning a buffer keeps it a buffer
            object.__setattr__(self, name, value)
            return
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Any, persistent: bool = True) -> None:
        """Non-trained state (an ndarray) saved in ``state_dict`` unless not persistent."""
        self._buffers[name] = None if array is None else np.asarray(array)
        if not persistent:
            self._non_persistent.add(name)
        object.__setattr__(self, name, self._buffers[name])

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            object.__setattr__(self, name, None)
            return
        setattr(self, name, param)

    # ------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(name, module) for self and every descendant, each module once, depth first."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items()]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter); a parameter shared by two modules is listed once."""
        seen: set[int] = set()
        for mname, m in self.named_modules(prefix):
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for mname, m in self.named_modules():
            for bname, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def num_parameters(self) -> int:
        """Total number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout on); returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (dropout off); same as ``train(False)``."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (None by default, as in torch 2.x)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call ``fn`` on every sub-module (children first, then self), as torch does."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ state
    def _state_slots(self) -> list[tuple[str, Module, str, bool]]:
        """(name, owner, attribute, is_parameter) of every saved tensor by EVERY path to it:
        torch's ``state_dict`` order (parameters, then persistent buffers), tied tensors and
        modules used twice listed under each of their names (``named_parameters`` lists once)."""
        paths: list[tuple[str, Module]] = []

        def walk(name: str, m: Module) -> None:
            paths.append((name, m))
            for k, c in m._modules.items():
                walk(f"{name}.{k}" if name else k, c)

        walk("", self)
        params = [(f"{n}.{k}" if n else k, m, k, True) for n, m in paths
                  for k, p in m._parameters.items() if p is not None]
        return params + [(f"{n}.{k}" if n else k, m, k, False) for n, m in paths
                         for k, b in m._buffers.items()
                         if b is not None and k not in m._non_persistent]

    def state_dict(self) -> dict[str, np.ndarray]:
        """{dotted name: array copy} for every parameter and persistent buffer.

        A shared (tied) tensor appears under every name that reaches it, and all its names
        hold the same array object, as in torch (where they share storage).
        """
        out: dict[str, np.ndarray] = OrderedDict()
        copies: dict[int, np.ndarray] = {}
        for key, m, name, is_param in self._state_slots():
            obj = m._parameters[name] if is_param else m._buffers[name]
            if id(obj) not in copies:
                copies[id(obj)] = np.array(obj.data if is_param else obj, copy=True)  # type: ignore[union-attr]
            out[key] = copies[id(obj)]
        return out

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> tuple[list[str],
                                                                                  list[str]]:
        """Copy arrays into parameters and buffers in place; returns (missing, unexpected).

        With ``strict`` a missing or unexpected key raises; a shape mismatch always raises.
        A tied tensor is satisfied by any one of its names (a file that stored it once
        loads); two of its names with different values are an error.
        """
        slots = {key: (m, name, is_param) for key, m, name, is_param in self._state_slots()}
        aliases: dict[int, list[str]] = {}
        for key, (m, name, is_param) in slots.items():
            obj = m._parameters[name] if is_param else m._buffers[name]
            aliases.setdefault(id(obj), []).append(key)
        missing, unexpected = [], [k for k in state if k not in slots]
        for names in aliases.values():
            given = [k for k in names if k in state]
            if not given:
                missing.extend(names)
            for k in given[1:]:
                if not np.array_equal(_as_array(state[k]), _as_array(state[given[0]])):
                    raise ValueError(f"load_state_dict: {given[0]!r} and {k!r} name one tied "
                                     "tensor but hold different values")
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict for {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        for key, (m, name, is_param) in slots.items():  # model order: first mismatch named
            if key not in state:
                continue
            arr = _as_array(state[key])
            target = m._parameters[name].data if is_param else m._buffers[name]  # type: ignore[union-attr]
            if arr.shape != target.shape:
                raise ValueError(
                    f"load_state_dict: shape mismatch for {key!r}: checkpoint has {arr.shape}, "
                    f"model has {target.shape}"
                )
            target[...] = arr
        return missing, unexpected

    # ------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


class ModuleList(Module):
    """A list of modules whose parameters are registered (names "0", "1", ...)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied in order: ``Sequential(a, b)(x) == b(a(x))``."""

    def __init__(self, *modules: Module) -> None:
        super().__init__(modules)

    def forward(self, x: Any) -> Any:
        for m in self:
            x = m(x)
        return x


def param_groups(model: Module, weight_decay: float,
                 no_decay: Callable[[str, Parameter], bool] | None = None
                 ) -> list[dict[str, Any]]:
    """Torch-style optimizer groups: decay matrices, not biases, norm gains or embeddings.

    By default a parameter is exempt when it has fewer than 2 dimensions (biases, norm
    gains) or belongs to an Embedding (a lookup table is not a linear map of activations).
    Frozen parameters (``requires_grad=False``) are left out of every group.
    """
    from spiral.nn.layers import Embedding

    embedding_params = {id(p) for m in model.modules() if isinstance(m, Embedding)
                        for p in m._parameters.values()}

    def default(name: str, p: Parameter) -> bool:
        return p.ndim < 2 or id(p) in embedding_params

    exempt = no_decay or default
    decay: list[Parameter] = []
    keep: list[Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:  # frozen: no optimizer slot, no state (stage 15)
            continue
        (keep if exempt(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": keep, "weight_decay": 0.0}]
