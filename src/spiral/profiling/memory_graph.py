"""The GPT's autograd graph on paper: every node's output, saved arrays and gradients, in bytes.

One :class:`Node` per node our engine records for a GPT training step, in creation order,
with the bytes its output owns (0 for a view), the extra arrays its backward closure saves,
and, per parent, how its local backward hands back the gradient (a new array of so many
bytes, the incoming gradient itself, or a slice of it). The numbers are the derivation of
stage 3's backward formulas read as storage (N = B·T tokens, s bytes per element):

    linear      y = x Wᵀ          keeps x (its parent's array)    dX: N·in·s, dW: out·in·s
    layer norm  y = x̂ w + b        keeps x̂ (N·C·s) and rstd (N·s)  dX: N·C·s
    GELU        y = x Φ(x)         keeps x and Φ(x) (N·h·s)        dX: N·h·s
    attention   O = softmax(S) V   keeps q, k, v and P (B·H·T²·s)  dQ, dK, dV: N·C·s each
    cross-ent.  L = −log p_y       keeps p (N·V·s)                 dlogits: N·V·s

``scratch`` is what lives only inside a backward kernel (attention's dP and the rowsum
product, layer norm's dx̂): the profiler's hooks never see it; tracemalloc does.
Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Node", "Grad", "build_gpt_graph", "activations_by_layer", "SUPPORTED"]

# ALiBi adds its (H, T, T) bias to the scores inside the kernel and keeps nothing: in memory
# it is the same graph as no positional encoding at all
SUPPORTED = "MHA/GQA; layernorm|rmsnorm; gelu|swiglu; any positional encoding"


@dataclass(frozen=True)
class Grad:
    """How a backward hands a parent its gradient: ``new`` bytes, ``alias`` or ``slice``."""

    kind: str  # "new" | "alias" | "slice"
    nbytes: int = 0  # bytes of a new array; for a slice, the parent's full gradient size


@dataclass
class Node:
    name: str
    layer: str
    out: int = 0  # bytes the output array owns (0: a view of a parent's array)
    saved: int = 0  # extra bytes the backward closure keeps (arrays no node owns)
    parents: tuple[int, ...] = ()
    grads: tuple[Grad | None, ...] = ()  # one per parent; None: that parent gets none
    scratch: int = 0  # bytes alive only inside the backward kernel (invisible to hooks)
    param: bool = False
    numel: int = 0  # parameters: the element count
    extra: dict[str, Any] = field(default_factory=dict)


class _Builder:
    def __init__(self, s: int) -> None:
        self.s = s
        self.nodes: list[Node] = []

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def param(self, name: str, numel: int) -> int:
        return self.add(Node(name, "param", param=True, numel=numel))

    def linear(self, layer: str, x: int, n: int, d_in: int, d_out: int, bias: bool,
               name: str) -> int:
        s = self.s
        w = self.param(f"{name}.weight", d_in * d_out)
        parents, grads = [x, w], [Grad("new", n * d_in * s), Grad("new", d_in * d_out * s)]
        if bias:
            parents.append(self.param(f"{name}.bias", d_out))
            grads.append(Grad("new", d_out * s))
        return self.add(Node(name, layer, out=n * d_out * s, parents=tuple(parents),
                             grads=tuple(grads)))

    def norm(self, layer: str, x: int, n: int, c: int, kind: str, bias: bool, name: str) -> int:
        s = self.s
        w = self.param(f"{name}.weight", c)
        parents, grads = [x, w], [Grad("new", n * c * s), Grad("new", c * s)]
        if bias and kind == "layernorm":
            parents.append(self.param(f"{name}.bias", c))
            grads.append(Grad("new", c * s))
        # x̂ (N·C) and rstd (N) are kept; the backward makes dx̂ and one product of N·C
        return self.add(Node(name, layer, out=n * c * s, saved=n * c * s + n * s,
                             parents=tuple(parents), grads=tuple(grads),
                             scratch=2 * n * c * s))

    def view(self, layer: str, x: int, name: str, copy_bytes: int = 0,
             grad: Grad | None = None) -> int:
        """reshape/permute/transpose: a view (0 bytes) or, non-contiguous, a copy."""
        return self.add(Node(name, layer, out=copy_bytes, parents=(x,),
                             grads=(grad or Grad("alias"),)))

    def add_op(self, layer: str, a: int, b: int, nbytes: int, name: str,
               gb: Grad | None = None) -> int:
        return self.add(Node(name, layer, out=nbytes, parents=(a, b),
                             grads=(Grad("alias"), gb or Grad("alias"))))

    def dropout(self, layer: str, x: int, nbytes: int, p: float, name: str) -> int:
        if p <= 0.0:
            return x
        # x * mask: the float mask (a constant tensor) is saved by the product's closure
        return self.add(Node(name, layer, out=nbytes, saved=nbytes, parents=(x,),
                             grads=(Grad("new", nbytes),)))


def build_gpt_graph(config: Any, batch: int, context: int, itemsize: int = 4,
                    training: bool = True) -> list[Node]:
    """The nodes of ``GPT(config)``'s forward pass plus the cross-entropy loss, in order."""
    c = config
    if context > c.context_length:
        raise ValueError(f"context {context} exceeds context_length {c.context_length}")
    s, B, T, C, H, V = itemsize, batch, context, c.d_model, c.n_heads, c.vocab_size
    N, p = B * T, (c.dropout if training else 0.0)
    hd = C // H
    hid = int(getattr(c, "hidden", max(1, int(round(c.expansion * C)))))
    norm_type = getattr(c, "norm_type", "layernorm")
    ffn_type = getattr(c, "ffn_type", "gelu")
    g = _Builder(s)
    tok = g.param("tok_emb.weight", V * C)
    x = g.add(Node("tok_emb", "embed", out=N * C * s, parents=(tok,),
                   grads=(Grad("new", V * C * s),)))
    if c.positional == "learned":
        pos_w = g.param("pos_emb.weight", c.context_length * C)
        pe = g.add(Node("pos_emb", "embed", out=T * C * s, saved=T * 8, parents=(pos_w,),
                        grads=(Grad("new", c.context_length * C * s),)))
        x = g.add_op("embed", x, pe, N * C * s, "embed_add", Grad("new", T * C * s))
    elif c.positional == "sinusoidal":
        x = g.add(Node("embed_add", "embed", out=N * C * s, saved=T * C * s, parents=(x,),
                       grads=(Grad("alias"),)))
    x = g.dropout("embed", x, N * C * s, p, "embed_drop")
    for i in range(c.n_layers):
        x = _block(g, c, x, f"block{i}", B, T, N, C, H, hd, hid, p, norm_type, ffn_type)
    if c.placement == "pre" and c.norm:
        x = g.norm("head", x, N, C, norm_type, c.bias, "final_norm")
    if c.tie_weights:
        head = g.add(Node("lm_head", "head", out=N * V * s, parents=(x, tok),
                          grads=(Grad("new", N * C * s), Grad("new", V * C * s))))
    else:
        head = g.linear("head", x, N, C, V, False, "lm_head")
    # the loss: a 0-d output; p (N·V), the targets as int64 and the validity mask are kept
    g.add(Node("cross_entropy", "loss", out=s, saved=N * V * s + 9 * N, parents=(head,),
               grads=(Grad("new", N * V * s),)))
    return g.nodes


def _block(g: _Builder, c: Any, x: int, L: str, B: int, T: int, N: int, C: int, H: int,
           hd: int, hid: int, p: float, norm_type: str, ffn_type: str) -> int:
    s = g.s
    nc = N * C * s
    pre = c.placement == "pre"

    def norm(z: int, name: str) -> int:
        return g.norm(L, z, N, C, norm_type, c.bias, f"{L}.{name}") if c.norm else z

    def sublayer(z: int, f: Any, name: str) -> int:
        if pre:
            h = f(norm(z, name))
            return g.add_op(L, z, h, nc, f"{L}.add_{name}") if c.residual else h
        h = f(z)
        r = g.add_op(L, z, h, nc, f"{L}.add_{name}") if c.residual else h
        return norm(r, name)

    def attention(z: int) -> int:
        kv = getattr(c, "kv_heads", H)
        nkv = N * kv * hd * s
        rope = c.positional in ("rope", "rope_halves")
        qkv = g.linear(L, z, N, C, (H + 2 * kv) * hd, c.bias, f"{L}.attn.qkv_proj")
        # backward: the three slice gradients fill one array, whose transposed view is not
        # contiguous, so reshaping it back copies the whole N·(H + 2·Hkv)·hd·s
        full = nc + 2 * nkv
        v5 = g.view(L, qkv, f"{L}.attn.reshape", grad=Grad("new", full))
        perm = g.view(L, v5, f"{L}.attn.permute")
        q, k, v = (g.add(Node(f"{L}.attn.{n}", L, parents=(perm,),
                              grads=(Grad("slice", full),))) for n in "qkv")
        if rope:  # cos/sin (T, hd/2) live in the module's cache, not in the step
            q = g.add(Node(f"{L}.attn.rope_q", L, out=nc, parents=(q,), grads=(Grad("new", nc),)))
            k = g.add(Node(f"{L}.attn.rope_k", L, out=nkv, parents=(k,),
                           grads=(Grad("new", nkv),)))
        if kv != H:  # GQA: q as (B, Hkv, G, T, hd), k and v as (B, Hkv, 1, T, hd): views
            q = g.view(L, q, f"{L}.attn.group_q")
            k = g.view(L, k, f"{L}.attn.group_k")
            v = g.view(L, v, f"{L}.attn.group_v")
        scores = B * H * T * T * s
        keep = scores if p > 0 else 0
        # inside backward (beside the returned dQ, dK, dV): dP, dS and the rowsum product
        # next to dV, then dP and dS next to dQ, dK; under GQA dK and dV are first built
        # per query head (N·C each) and then summed over the group
        pre = 2 * nc if kv != H else 0
        scratch = max(3 * scores - 2 * nkv, 2 * scores + pre) + keep
        att = g.add(Node(f"{L}.attn.sdpa", L, out=nc, saved=scores + keep, parents=(q, k, v),
                         grads=(Grad("new", nc), Grad("new", nkv), Grad("new", nkv)),
                         scratch=scratch))
        y = g.view(L, att, f"{L}.attn.reshape_heads")
        y = g.view(L, y, f"{L}.attn.transpose")
        y = g.view(L, y, f"{L}.attn.merge", copy_bytes=nc)  # non-contiguous: a copy
        out = g.linear(L, y, N, C, C, c.bias, f"{L}.attn.out_proj")
        return g.dropout(L, out, nc, p, f"{L}.attn.resid_drop")

    def ffn(z: int) -> int:
        nh = N * hid * s
        if ffn_type == "swiglu":
            a = g.linear(L, z, N, C, hid, False, f"{L}.ffn.w1")
            sig = g.add(Node(f"{L}.ffn.sigmoid", L, out=nh, parents=(a,),
                             grads=(Grad("new", nh),), scratch=nh))
            act = g.add(Node(f"{L}.ffn.silu", L, out=nh, parents=(a, sig),
                             grads=(Grad("new", nh), Grad("new", nh))))
            b = g.linear(L, z, N, C, hid, False, f"{L}.ffn.w3")
            gate = g.add(Node(f"{L}.ffn.gate", L, out=nh, parents=(act, b),
                              grads=(Grad("new", nh), Grad("new", nh))))
            out = g.linear(L, gate, N, hid, C, False, f"{L}.ffn.w2")
        else:
            a = g.linear(L, z, N, C, hid, c.bias, f"{L}.ffn.fc")
            act = g.add(Node(f"{L}.ffn.gelu", L, out=nh, saved=nh, parents=(a,),
                             grads=(Grad("new", nh),)))
            out = g.linear(L, act, N, hid, C, c.bias, f"{L}.ffn.proj")
        return g.dropout(L, out, nc, p, f"{L}.ffn.drop")

    x = sublayer(x, attention, "ln1")
    if c.ffn:
        x = sublayer(x, ffn, "ln2")
    return x


def activations_by_layer(config: Any, batch: int, context: int, itemsize: int = 4
                         ) -> dict[str, int]:
    """Bytes each layer holds for backward at the end of the forward pass (outputs + saved):
    ``embed``, ``block0`` .. ``block{L-1}``, ``head`` and ``loss``."""
    out: dict[str, int] = {}
    for n in build_gpt_graph(config, batch, context, itemsize):
        if not n.param:
            out[n.layer] = out.get(n.layer, 0) + n.out + n.saved
    return out
