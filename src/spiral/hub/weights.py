"""Weight-name tables between Hugging Face checkpoints and :class:`spiral.models.gpt.GPT`.

Each row is ``(our parameter, [(HF tensor, rows), ...], transpose)``. Several HF tensors
stack along the rows of one of ours: Llama's separate ``q_proj``, ``k_proj``, ``v_proj``
(H·hd, Hkv·hd, Hkv·hd rows) are our ONE fused ``qkv_proj`` (the same [Q; K; V] row layout,
head h in rows h·hd..(h+1)·hd of each part). ``transpose``: GPT-2's checkpoints store
their linear layers as ``Conv1D`` weights, (in, out) = the transpose of our (out, in).

Loading copies each HF tensor -- a view of the memory-mapped file -- straight into the
rows of our preallocated parameter, so no second copy of the model ever exists; a tensor
of the checkpoint that no row reads is an error (a silent mismatch otherwise), except
buffers that hold no weights (GPT-2's causal-mask ``attn.bias``, RoPE's ``inv_freq``).
Chapter: stage 8 (real weights); stage 14 for the Llama family.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.hub.errors import HubError
from spiral.hub.safetensors_io import Checkpoint
from spiral.models.gpt import GPT, GPTConfig

__all__ = ["weight_table", "load_weights", "export_tensors"]

Row = tuple[str, list[tuple[str, int]], bool]
BUFFERS = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


def weight_table(c: GPTConfig, family: str) -> list[Row]:
    """The explicit mapping for one model: our name, the HF pieces (name, rows), transpose."""
    C, h, hd = c.d_model, c.hidden, c.head_dim
    rows: list[Row] = []
    if family == "gpt2":
        p = "transformer."
        rows += [("tok_emb.weight", [(p + "wte.weight", c.vocab_size)], False),
                 ("pos_emb.weight", [(p + "wpe.weight", c.context_length)], False)]
        for i in range(c.n_layers):
            o, t = f"blocks.{i}.", f"{p}h.{i}."
            for ours, theirs, n, tr in (("ln1", "ln_1", C, False), ("attn.qkv_proj",
                                        "attn.c_attn", 3 * C, True),
                                        ("attn.out_proj", "attn.c_proj", C, True),
                                        ("ln2", "ln_2", C, False), ("ffn.fc", "mlp.c_fc", h, True),
                                        ("ffn.proj", "mlp.c_proj", C, True)):
                rows.append((o + ours + ".weight", [(t + theirs + ".weight", n)], tr))
                rows.append((o + ours + ".bias", [(t + theirs + ".bias", n)], False))
        rows += [("final_norm.weight", [(p + "ln_f.weight", C)], False),
                 ("final_norm.bias", [(p + "ln_f.bias", C)], False)]
    elif family == "llama":
        rows.append(("tok_emb.weight", [("model.embed_tokens.weight", c.vocab_size)], False))
        for i in range(c.n_layers):
            o, t = f"blocks.{i}.", f"model.layers.{i}."
            qkv = [(t + "self_attn.q_proj.weight", c.n_heads * hd),
                   (t + "self_attn.k_proj.weight", c.kv_heads * hd),
                   (t + "self_attn.v_proj.weight", c.kv_heads * hd)]
            rows += [(o + "ln1.weight", [(t + "input_layernorm.weight", C)], False),
                     (o + "attn.qkv_proj.weight", qkv, False),
                     (o + "attn.out_proj.weight", [(t + "self_attn.o_proj.weight", C)], False),
                     (o + "ln2.weight", [(t + "post_attention_layernorm.weight", C)], False),
                     (o + "ffn.w1.weight", [(t + "mlp.gate_proj.weight", h)], False),
                     (o + "ffn.w3.weight", [(t + "mlp.up_proj.weight", h)], False),
                     (o + "ffn.w2.weight", [(t + "mlp.down_proj.weight", C)], False)]
        rows.append(("final_norm.weight", [("model.norm.weight", C)], False))
    else:
        raise HubError(f"no weight table for model_type {family!r}")
    if not c.tie_weights:
        rows.append(("lm_head.weight", [("lm_head.weight", c.vocab_size)], False))
    return rows


def _resolve(ckpt: Checkpoint, name: str) -> str:
    """GPT-2 files saved by the original release lack the ``transformer.`` prefix."""
    if name in ckpt or not name.startswith("transformer."):
        return name
    return name[len("transformer."):]


def load_weights(model: GPT, ckpt: Checkpoint, family: str) -> None:
    """Copy every tensor of ``ckpt`` into ``model`` by :func:`weight_table` (in place)."""
    params = dict(model.named_parameters())
    used: set[str] = set()
    for ours, pieces, transpose in weight_table(model.config, family):
        dest = params[ours].data
        r0 = 0
        for theirs, n in pieces:
            name = _resolve(ckpt, theirs)
            if name not in ckpt:
                raise HubError(f"{ckpt.folder}: the checkpoint has no tensor {theirs!r} "
                               f"(needed for {ours})")
            src = ckpt.get(name)
            src = src.T if transpose else src
            want = (n, *dest.shape[1:])
            if src.shape != want:
                raise HubError(f"{ckpt.folder}: tensor {name!r} has shape {list(src.shape)}, "
                               f"config.json implies {list(want)}")
            dest[r0:r0 + n] = src  # one tensor at a time, straight from the memory map
            r0 += n
            used.add(name)
    extra = [n for n in ckpt.names() if n not in used and not n.endswith(BUFFERS)
             and not (n == "lm_head.weight" and model.config.tie_weights)]
    if extra:
        raise HubError(f"{ckpt.folder}: tensor {extra[0]!r} (and {len(extra) - 1} more) is not "
                       f"used by the {family} mapping; spiral.hub will not ignore weights")


def export_tensors(model: GPT, family: str) -> dict[str, np.ndarray]:
    """Our parameters as the HF tensors of ``family`` (a missing bias -> zeros: GPT-2 has
    biases everywhere, the book's model has none, and a zero bias adds nothing)."""
    params: dict[str, Any] = dict(model.named_parameters())
    out: dict[str, np.ndarray] = {}
    for ours, pieces, transpose in weight_table(model.config, family):
        if ours in params:
            src = np.asarray(params[ours].data, dtype=np.float32)
        else:
            src = np.zeros(sum(n for _, n in pieces), dtype=np.float32)
        r0 = 0
        for theirs, n in pieces:
            part = src[r0:r0 + n]
            out[theirs] = np.ascontiguousarray(part.T if transpose else part)
            r0 += n
    return out
