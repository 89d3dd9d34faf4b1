"""Our quantized weights in llama.cpp's block formats (Q8_0, Q4_0, Q4_1), byte by byte.

llama.cpp (ggml) stores a quantized row as blocks of 32 consecutive weights, each with its
own scale in float16 — our per-group quantization with ``group_size = 32``:

    Q8_0  (34 bytes)  d: f16, q[32]: int8                   w = d·q
    Q4_0  (18 bytes)  d: f16, 16 bytes of nibbles n ∈ 0..15  w = d·(n − 8)
    Q4_1  (20 bytes)  d: f16, m: f16, 16 bytes of nibbles    w = d·n + m

In Q4_0/Q4_1 byte j holds element j in its low nibble and element j + 16 in its high
nibble (not our pairwise packing). Our symmetric codes q ∈ [−7, 7] (or the 3-bit
[−3, 3]) are Q4_0 nibbles n = q + 8 with d = s; our asymmetric codes q ∈ [0, 15] with
ŵ = s·(q − z) are Q4_1 with d = s, m = −s·z; symmetric 5–8-bit codes are Q8_0. The
only change is the scale's (and m's) rounding to float16, which :func:`ggml_type` reports;
:func:`spiral.quant.gguf_io.round_scales_to_fp16` makes our own model use the same values.
Layout reference: ggml's ``block_q8_0``/``block_q4_0``/``block_q4_1``. Chapter: stage 18.
"""

from __future__ import annotations

import numpy as np

from spiral.quant.linear import QuantLinear

QK = 32  # weights per block


def per_weight(layer: QuantLinear) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Codes (out, in), scales and zero points (out, in // g) and the group length g."""
    out, inn = layer.out_features, layer.in_features
    codes = layer.codes().reshape(out, inn).astype(np.int32)
    if layer.granularity == "tensor":
        s = np.full((out, 1), float(np.asarray(layer.scale).ravel()[0]))
        z = np.full((out, 1), int(layer.qtensor().zero_point.ravel()[0]))
        return codes, s, z, inn
    g = inn if layer.granularity == "channel" else layer._rows_shape[1]
    return (codes, np.asarray(layer.scale, np.float64).reshape(out, inn // g),
            layer.qtensor().zero_point.reshape(out, inn // g).astype(np.int32), g)


def ggml_type(layer: QuantLinear) -> str | None:
    """The block format that holds ``layer``'s codes exactly, or None (then written as float)."""
    if per_weight(layer)[3] != QK or layer.act_bits is not None:
        return None
    if layer.symmetric:
        return "Q4_0" if layer.bits <= 4 else "Q8_0"
    return "Q4_1" if layer.bits <= 4 else None


def _f16_bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.astype("<f2")).view(np.uint8).reshape(*a.shape, 2)


def _nibbles(n: np.ndarray) -> np.ndarray:
    """(rows, blocks, 32) values 0..15 -> (rows, blocks, 16) bytes: j low, j + 16 high."""
    n = n.astype(np.uint8)
    return n[..., :16] | (n[..., 16:] << 4)


def encode_blocks(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                  qtype: str) -> np.ndarray:
    """(out, in) codes with per-32 scales (out, in/32) -> (out, in/32 · block bytes) uint8."""
    out, inn = codes.shape
    if inn % QK or scale.shape != (out, inn // QK):
        raise ValueError(f"{qtype} needs rows of a multiple of {QK} with one scale per block, "
                         f"got codes {codes.shape}, scales {scale.shape}")
    q = codes.reshape(out, inn // QK, QK)
    d = _f16_bytes(scale)
    if qtype == "Q8_0":
        body = q.astype(np.int8).view(np.uint8)
        blocks = np.concatenate([d, body], axis=-1)
    elif qtype == "Q4_0":
        blocks = np.concatenate([d, _nibbles(q + 8)], axis=-1)
    elif qtype == "Q4_1":
        m = _f16_bytes(-scale.astype(np.float16).astype(np.float64) * zero_point)
        blocks = np.concatenate([d, m, _nibbles(q)], axis=-1)
    else:
        raise ValueError(f"unsupported block type {qtype!r}")
    return np.ascontiguousarray(blocks.reshape(out, -1).astype(np.uint8))


def block_values(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                 qtype: str) -> np.ndarray:
    """The float32 weights a reader of the blocks gets (scales rounded to float16)."""
    out, inn = codes.shape
    q = codes.reshape(out, inn // QK, QK).astype(np.float32)
    d = scale.astype(np.float16).astype(np.float32)[..., None]
    if qtype == "Q4_1":
        m = (-(d[..., 0].astype(np.float64)) * zero_point).astype(np.float16)
        w = d * q + m.astype(np.float32)[..., None]
    else:
        w = d * q
    return w.reshape(out, inn)
