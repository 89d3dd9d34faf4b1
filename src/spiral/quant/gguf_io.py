"""Export a (quantized) Llama-style GPT as GGUF, the file format llama.cpp reads; read it back.

GGUF (ggml's format) is a header of typed key–value metadata, a table of tensors (name,
shape, ggml type, offset) and the aligned tensor data. We write llama.cpp's ``llama``
architecture: its metadata keys (``llama.embedding_length``, ``llama.block_count``,
``llama.attention.head_count_kv``, ``llama.rope.freq_base``, ...) and its tensor names
(``token_embd``, ``blk.N.attn_q``/``attn_k``/``attn_v``/``attn_output``, ``attn_norm``,
``ffn_gate``/``ffn_up``/``ffn_down``, ``ffn_norm``, ``output_norm``, ``output``). Our fused
``qkv_proj`` is split into Q, K, V; llama.cpp's ``llama`` rotates interleaved pairs, so
for a model trained with the halves convention Q and K rows are permuted per head
(row 2i ← i, row 2i + 1 ← hd/2 + i), as llama.cpp's converter does for Hugging Face
checkpoints. Quantized layers are written in the ggml block format that holds their codes
(:mod:`spiral.quant.ggml_blocks`); any other layer (per-channel, group ≠ 32, W8A8,
asymmetric 8-bit) is written dequantized, in F32 (or F16). A byte tokenizer is written as a
``gpt2``-style vocabulary of the 256 bytes with no merges (not tried in llama.cpp here).
Extra keys ``spiral.config`` and ``spiral.sha256`` (llama.cpp ignores them) let
:func:`read_gguf` rebuild our model and detect a flipped byte, which GGUF itself cannot.
Chapter: stage 18.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from spiral.models.gpt import GPT, GPTConfig
from spiral.quant.ggml_blocks import block_values, encode_blocks, ggml_type, per_weight
from spiral.quant.io import QuantFileError
from spiral.quant.linear import QuantLinear
from spiral.quant.uniform import dequantize

PARTS = {"ln1": "attn_norm", "attn.out_proj": "attn_output", "ln2": "ffn_norm",
         "ffn.w1": "ffn_gate", "ffn.w3": "ffn_up", "ffn.w2": "ffn_down"}


def _byte_vocab() -> list[str]:
    """GPT-2's printable stand-in for each byte (bytes_to_unicode), in byte order."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _to_interleaved(w: np.ndarray, heads: int) -> np.ndarray:
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def _to_halves(w: np.ndarray, heads: int) -> np.ndarray:
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def _pieces(model: GPT) -> list[tuple[str, str, slice | None, int]]:
    """(our module or parameter, GGUF name, rows, heads to permute or 0)."""
    c = model.config
    if c.norm_type != "rmsnorm" or c.ffn_type != "swiglu" or c.bias or c.positional not in (
            "rope", "rope_halves"):
        raise ValueError("GGUF export writes llama.cpp's 'llama' architecture: it needs "
                         "RMSNorm, SwiGLU, RoPE and no biases")
    hq, hk, perm = c.n_heads * c.head_dim, c.kv_heads * c.head_dim, c.positional == "rope_halves"
    out: list[tuple[str, str, slice | None, int]] = [("tok_emb.weight", "token_embd.weight",
                                                      None, 0)]
    for i in range(c.n_layers):
        b, g = f"blocks.{i}.", f"blk.{i}."
        out += [(b + "attn.qkv_proj", g + "attn_q.weight", slice(0, hq), c.n_heads * perm),
                (b + "attn.qkv_proj", g + "attn_k.weight", slice(hq, hq + hk), c.kv_heads * perm),
                (b + "attn.qkv_proj", g + "attn_v.weight", slice(hq + hk, hq + 2 * hk), 0)]
        out += [(b + ours, g + theirs + ".weight", None, 0) for ours, theirs in PARTS.items()]
    out.append(("final_norm.weight", "output_norm.weight", None, 0))
    if model.lm_head is not None:
        out.append(("lm_head", "output.weight", None, 0))
    return out


def _tensor(model: GPT, ours: str, rows: slice | None, heads: int, float_type: str
            ) -> tuple[np.ndarray, str, Any]:
    """The bytes or floats to write, the type's name and the gguf type (None: plain float)."""
    import gguf

    mods, params = dict(model.named_modules()), dict(model.named_parameters())
    m = mods.get(ours)
    fix = (lambda a: _to_interleaved(a, heads)) if heads else (lambda a: a)
    rows = rows or slice(None)
    if isinstance(m, QuantLinear) and ggml_type(m):
        codes, s, z, _ = per_weight(m)
        qt = str(ggml_type(m))
        data = encode_blocks(fix(codes[rows]), fix(s[rows]), fix(z[rows]), qt)
        return data, qt, gguf.GGMLQuantizationType[qt]
    if isinstance(m, QuantLinear):
        w = dequantize(m.qtensor())
    else:
        w = (params[ours] if ours in params else params[ours + ".weight"]).data
    w = fix(np.asarray(w)[rows] if np.ndim(w) == 2 else np.asarray(w))
    ftype = float_type if np.ndim(w) == 2 else "F32"  # norms stay F32, as llama.cpp writes
    return np.ascontiguousarray(w.astype(np.float16 if ftype == "F16" else np.float32)), ftype, None


def export_gguf(model: GPT, path: str | Path, *, tokenizer: Any = None, name: str = "spiral",
                float_type: str = "F32") -> dict[str, str]:
    """Write ``model`` to ``path`` as a llama GGUF; returns {tensor name: ggml type written}."""
    import gguf

    if float_type not in ("F32", "F16"):
        raise ValueError(f"float_type must be 'F32' or 'F16', got {float_type!r}")
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(c.context_length)
    w.add_embedding_length(c.d_model)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.hidden)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.kv_heads)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if tokenizer is not None and type(tokenizer).__name__ == "ByteTokenizer":
        w.add_tokenizer_model("gpt2")
        w.add_token_list(_byte_vocab())
    written, sums = {}, {}
    tensors = [(g, *_tensor(model, o, r, h, float_type)) for o, g, r, h in _pieces(model)]
    for g, data, tname, _ in tensors:
        written[g], sums[g] = tname, hashlib.sha256(data.tobytes()).hexdigest()
    w.add_string("spiral.config", json.dumps(c.to_dict()))
    w.add_string("spiral.sha256", json.dumps(sums))
    for g, data, _, raw in tensors:
        w.add_tensor(g, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, tuple[str, np.ndarray]]]:
    """(metadata, {tensor name: (ggml type, stored array)}) of a GGUF file, checked.

    A missing, truncated or unparsable file, and a tensor whose bytes fail the SHA-256 we
    wrote, are one-line :class:`~spiral.quant.io.QuantFileError`.
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise QuantFileError(f"no GGUF file at {path}")
    try:
        reader = gguf.GGUFReader(str(path))
        meta = {f.name: f.contents() for f in reader.fields.values()}
        tensors = {t.name: (t.tensor_type.name, np.array(t.data)) for t in reader.tensors}
    except Exception as e:  # the reader raises ValueError, IndexError, ... on bad bytes
        raise QuantFileError(f"{path} is not a readable GGUF file (truncated or corrupt?): "
                             f"{type(e).__name__}: {e}") from e
    try:
        sums = json.loads(meta.get("spiral.sha256") or "{}")
    except json.JSONDecodeError as e:
        raise QuantFileError(f"{path}: 'spiral.sha256' is not valid JSON: {e}") from e
    for k, (_, a) in tensors.items():
        if k in sums and hashlib.sha256(a.tobytes()).hexdigest() != sums[k]:
            raise QuantFileError(f"{path}: tensor {k!r} fails its SHA-256 check (corrupt file)")
    return meta, tensors


def gguf_values(qtype: str, data: np.ndarray) -> np.ndarray:
    """The float32 values a GGUF tensor stands for (ggml blocks decoded by ``gguf``)."""
    import gguf

    if qtype in ("F32", "F16"):
        return np.asarray(data, dtype=np.float32)
    return np.asarray(gguf.quants.dequantize(data, gguf.GGMLQuantizationType[qtype]),
                      dtype=np.float32)


def load_gguf(path: str | Path) -> GPT:
    """A float32 GPT holding the weights a GGUF file we wrote stands for."""
    meta, tensors = read_gguf(path)
    if "spiral.config" not in meta:
        raise QuantFileError(f"{path} has no 'spiral.config': not written by export_gguf")
    model = GPT(GPTConfig(**json.loads(meta["spiral.config"])), rng=np.random.default_rng(0))
    params = dict(model.named_parameters())
    for ours, g, rows, heads in _pieces(model):
        if g not in tensors:
            raise QuantFileError(f"{path}: tensor {g!r} is missing")
        v = gguf_values(*tensors[g])
        v = _to_halves(v, heads) if heads else v
        p = params[ours if ours in params else ours + ".weight"]
        target = p.data[rows] if rows is not None else p.data
        if target.shape != v.shape:
            raise QuantFileError(f"{path}: tensor {g!r} has shape {v.shape}, expected "
                                 f"{target.shape}")
        target[...] = v
    model.eval()
    return model


def round_scales_to_fp16(model: Any) -> None:
    """Round every QuantLinear's scales to float16 values (in place), as GGUF blocks store
    them, so that our model and its GGUF export hold the same weights bit for bit."""
    for _, m in model.named_modules():
        if isinstance(m, QuantLinear):
            m.scale[...] = m.scale.astype(np.float16).astype(m.scale.dtype)


__all__ = ["block_values", "export_gguf", "gguf_values", "load_gguf", "read_gguf",
           "round_scales_to_fp16"]
