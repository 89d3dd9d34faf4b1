"""Module/Parameter: registration, traversal, state_dict round trips, modes, param groups."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.nn import (
    Dropout,
    Embedding,
    Linear,
    Module,
    ModuleList,
    Parameter,
    ReLU,
    Sequential,
    param_groups,
)

pytestmark = pytest.mark.stage4


class Net(Module):
    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.emb = Embedding(7, 4, rng=rng)
        self.blocks = ModuleList([Linear(4, 4, rng=rng), Linear(4, 4, rng=rng)])
        self.head = Linear(4, 7, rng=rng)
        self.drop = Dropout(0.5, rng=rng)
        self.register_buffer("count", np.zeros(2))
        self.register_buffer("scratch", np.ones(3), persistent=False)

    def forward(self, ids: np.ndarray) -> Tensor:
        x = self.emb(ids)
        for b in self.blocks:
            x = b(x).relu()
        return self.head(self.drop(x))


def test_named_parameters_in_registration_order() -> None:
    net = Net(np.random.default_rng(0))
    names = [n for n, _ in net.named_parameters()]
    assert names == ["emb.weight", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                     "blocks.1.bias", "head.weight", "head.bias"]
    assert net.num_parameters() == 7 * 4 + 2 * (16 + 4) + 4 * 7 + 7
    assert [n for n, _ in net.named_modules()] == ["", "emb", "blocks", "blocks.0", "blocks.1",
                                                   "head", "drop"]


def test_shared_parameter_listed_once() -> None:
    rng = np.random.default_rng(0)
    a = Linear(3, 3, rng=rng)
    seq = Sequential(a, ReLU(), a)
    assert len(list(seq.parameters())) == 2


def test_state_dict_round_trip_includes_persistent_buffers_only() -> None:
    src, dst = Net(np.random.default_rng(0)), Net(np.random.default_rng(1))
    src.count[...] = [3.0, 4.0]
    sd = src.state_dict()
    assert "count" in sd and "scratch" not in sd
    dst.load_state_dict(sd)
    for (k, a), (_, b) in zip(dst.state_dict().items(), sd.items()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    sd["head.bias"][...] = 99.0  # state_dict returns copies
    assert not np.any(src.head.bias.data == 99.0)


def test_load_state_dict_strict_errors_name_the_keys() -> None:
    net = Net(np.random.default_rng(0))
    sd = net.state_dict()
    del sd["head.bias"]
    sd["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match="head.bias.*extra"):
        net.load_state_dict(sd)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert missing == ["head.bias"] and unexpected == ["extra"]
    bad = net.state_dict()
    bad["head.weight"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="head.weight.*\\(2, 2\\)"):
        net.load_state_dict(bad)


def test_train_eval_and_dropout() -> None:
    net = Net(np.random.default_rng(0))
    ids = np.arange(7)[None, :]
    assert net.training and net.drop.training
    net.eval()
    assert not any(m.training for m in net.modules())
    np.testing.assert_array_equal(net(ids).data, net(ids).data)  # deterministic in eval
    net.train()
    assert all(m.training for m in net.modules())


def test_dropout_keeps_expectation() -> None:
    d = Dropout(0.3, rng=np.random.default_rng(0))
    y = d(Tensor(np.ones((200, 500))))
    assert abs(float(y.data.mean()) - 1.0) < 0.01
    assert abs(float((y.data == 0).mean()) - 0.3) < 0.01


def test_zero_grad_requires_grad_and_apply() -> None:
    net = Net(np.random.default_rng(0)).eval()
    net(np.arange(5)[None]).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    seen: list[str] = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 3


def test_param_groups_exempt_biases_and_embeddings() -> None:
    net = Net(np.random.default_rng(0))
    decay, keep = param_groups(net, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net.blocks[0].weight),
                                                id(net.blocks[1].weight), id(net.head.weight)}
    assert len(decay["params"]) + len(keep["params"]) == len(list(net.parameters()))


def test_parameter_is_a_leaf_that_requires_grad() -> None:
    p = Parameter(np.ones(3, dtype=np.float32))
    assert p.requires_grad and p.is_leaf
    assert not Parameter(np.ones(3), requires_grad=False).requires_grad


class Tied(Module):
    """An embedding and an output head that share one matrix (Press & Wolf weight tying)."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.emb = Embedding(5, 3, rng=rng)
        self.head = Linear(3, 5, bias=False, rng=rng)
        self.head.weight = self.emb.weight


def test_state_dict_keeps_tied_aliases_like_torch() -> None:
    """Regression: state_dict dropped 'head.weight', so torch's state dict of the same tied
    model failed to load ("unexpected keys ['head.weight']")."""
    torch = pytest.importorskip("torch")
    ours = Tied(np.random.default_rng(0))
    ref = torch.nn.Module()
    ref.emb, ref.head = torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False)
    ref.head.weight = ref.emb.weight
    sd = ours.state_dict()
    assert list(sd) == list(ref.state_dict()) == ["emb.weight", "head.weight"]
    assert sd["emb.weight"] is sd["head.weight"]  # one tensor under two names, as in torch
    assert [n for n, _ in ours.named_parameters()] == ["emb.weight"]  # still trained once
    # torch's state dict (both keys) loads strictly, and ours loads into torch
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    np.testing.assert_array_equal(ours.head.weight.data, ref.emb.weight.detach().numpy())
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    # a file that stored the tied tensor once still loads; disagreeing aliases do not
    fresh = Tied(np.random.default_rng(1))
    assert fresh.load_state_dict({"emb.weight": sd["emb.weight"]}) == ([], [])
    np.testing.assert_array_equal(fresh.head.weight.data, sd["emb.weight"])
    with pytest.raises(ValueError, match="tied"):
        fresh.load_state_dict({"emb.weight": sd["emb.weight"], "head.weight": -sd["emb.weight"]})


def test_module_used_twice_is_saved_under_both_paths_like_torch() -> None:
    torch = pytest.importorskip("torch")
    a = Linear(3, 3, rng=np.random.default_rng(0))
    ta = torch.nn.Linear(3, 3)
    ours, ref = Sequential(a, ReLU(), a), torch.nn.Sequential(ta, torch.nn.ReLU(), ta)
    assert list(ours.state_dict()) == list(ref.state_dict())  # 0.weight ... 2.bias
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    np.testing.assert_array_equal(a.weight.data, ta.weight.detach().numpy())


def test_checkpoint_round_trip_of_a_tied_model(tmp_path) -> None:
    from spiral import checkpoint

    src, dst = Tied(np.random.default_rng(0)), Tied(np.random.default_rng(1))
    checkpoint.save(tmp_path / "c.safetensors", src)
    checkpoint.load(tmp_path / "c.safetensors", dst)
    np.testing.assert_array_equal(dst.emb.weight.data, src.emb.weight.data)
    assert dst.head.weight is dst.emb.weight  # loading keeps the tie
