"""GGUF export: llama.cpp's names and keys, a bit-exact round trip through ``gguf``'s reader,
llama.cpp's block layouts, and clear errors for truncated or corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.models.gpt import GPT, GPTConfig
from spiral.quant import QuantFileError, quantize_model
from spiral.quant.ggml_blocks import block_values, encode_blocks, per_weight
from spiral.quant.gguf_io import (
    export_gguf,
    gguf_values,
    load_gguf,
    read_gguf,
    round_scales_to_fp16,
)
from spiral.tokenizers import ByteTokenizer

pytestmark = pytest.mark.stage18
gguf = pytest.importorskip("gguf")


def _llama(seed: int = 0, tie: bool = False) -> GPT:
    cfg = GPTConfig(vocab_size=256, context_length=16, n_layers=2, n_heads=4, n_kv_heads=2,
                    d_model=64, norm_type="rmsnorm", ffn_type="swiglu",
                    positional="rope_halves", ffn_hidden=96, tie_weights=tie)
    return GPT(cfg, rng=np.random.default_rng(seed))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_our_blocks_decode_with_ggufs_own_dequantizer(qtype: str) -> None:
    rng = np.random.default_rng(0)
    signed = qtype != "Q4_1"
    lo, hi = {"Q8_0": (-127, 127), "Q4_0": (-7, 7), "Q4_1": (0, 15)}[qtype]
    codes = rng.integers(lo, hi + 1, (3, 64))
    scale = rng.uniform(0.01, 0.2, (3, 2))
    zp = np.zeros((3, 2), np.int32) if signed else rng.integers(0, 16, (3, 2))
    data = encode_blocks(codes, scale, zp, qtype)
    theirs = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[qtype])
    np.testing.assert_array_equal(theirs, block_values(codes, scale, zp, qtype))
    exact = np.repeat(scale.astype(np.float16).astype(np.float64), 32, 1) * (
        codes - np.repeat(zp, 32, 1))
    tol = 0 if signed else 1e-3 * np.abs(exact).max()  # Q4_1 stores m = −s·z in float16
    np.testing.assert_allclose(theirs, exact, rtol=0, atol=tol + 1e-7 * np.abs(exact).max())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 5), blocks=st.integers(1, 4),
       qtype=st.sampled_from(["Q8_0", "Q4_0", "Q4_1"]))
def test_any_codes_and_scales_survive_ggufs_decoder(seed: int, rows: int, blocks: int,
                                                    qtype: str) -> None:
    rng = np.random.default_rng(seed)
    lo, hi = {"Q8_0": (-127, 127), "Q4_0": (-8, 7), "Q4_1": (0, 15)}[qtype]
    codes = rng.integers(lo, hi + 1, (rows, 32 * blocks))
    scale = np.exp(rng.uniform(-9, 2, (rows, blocks)))  # float16's normal range and below
    zp = rng.integers(0, 16, (rows, blocks)) if qtype == "Q4_1" else np.zeros((rows, blocks))
    data = encode_blocks(codes, scale, zp.astype(np.int32), qtype)
    assert data.shape == (rows, blocks * {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}[qtype])
    np.testing.assert_array_equal(
        gguf.quants.dequantize(data, gguf.GGMLQuantizationType[qtype]),
        block_values(codes, scale, zp.astype(np.int32), qtype))


@pytest.mark.parametrize("bits,qtype", [(4, "Q4_0"), (8, "Q8_0")])
def test_export_round_trip_is_bit_exact_and_the_model_computes_the_same(
        tmp_path: Path, bits: int, qtype: str) -> None:
    m = _llama()
    quantize_model(m, bits, granularity="group", group_size=32, exclude=("lm_head",))
    round_scales_to_fp16(m)
    path = tmp_path / "m.gguf"
    written = export_gguf(m, path, tokenizer=ByteTokenizer())
    meta, tensors = read_gguf(path)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 2 and meta["llama.attention.head_count_kv"] == 2
    assert meta["llama.embedding_length"] == 64 and meta["llama.feed_forward_length"] == 96
    assert len(meta["tokenizer.ggml.tokens"]) == 256
    assert {n: t for n, (t, _) in tensors.items()} == written
    assert written["blk.0.attn_q.weight"] == qtype and written["output.weight"] == "F32"
    assert written["blk.1.ffn_down.weight"] == qtype and written["token_embd.weight"] == "F32"
    # the stored bytes are exactly what our encoder produced for that layer
    q = dict(m.named_modules())["blocks.1.ffn.w2"]
    np.testing.assert_array_equal(tensors["blk.1.ffn_down.weight"][1],
                                  encode_blocks(*per_weight(q)[:3], qtype))  # type: ignore[arg-type]
    np.testing.assert_array_equal(gguf_values(*tensors["blk.1.ffn_down.weight"]),
                                  q.weight.data)
    back = load_gguf(path)
    ids = np.random.default_rng(1).integers(0, 256, (2, 16))
    np.testing.assert_array_equal(back(ids).data, m(ids).data)


def test_float_and_tied_models_and_the_rope_permutation(tmp_path: Path) -> None:
    m = _llama(tie=True)
    written = export_gguf(m, tmp_path / "f.gguf", float_type="F16")
    assert "output.weight" not in written and written["blk.0.attn_q.weight"] == "F16"
    assert written["blk.0.attn_norm.weight"] == "F32"
    _, tensors = read_gguf(tmp_path / "f.gguf")
    wq = m.blocks[0].attn.qkv_proj.weight.data[:64]  # type: ignore[union-attr]
    stored = tensors["blk.0.attn_q.weight"][1].astype(np.float32)
    hd = 16  # llama.cpp's rotation pairs rows (2i, 2i+1) = our (i, hd/2 + i) in each head
    np.testing.assert_array_equal(stored[1], wq[hd // 2].astype(np.float16))
    np.testing.assert_array_equal(stored[2], wq[1].astype(np.float16))
    export_gguf(m, tmp_path / "f32.gguf")
    ids = np.random.default_rng(1).integers(0, 256, (2, 16))
    np.testing.assert_array_equal(load_gguf(tmp_path / "f32.gguf")(ids).data, m(ids).data)


def test_truncated_corrupt_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    m = _llama()
    quantize_model(m, 4, granularity="group", group_size=32)
    path = tmp_path / "m.gguf"
    export_gguf(m, path)
    data = path.read_bytes()
    for cut in (3, 200, len(data) - 5):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(QuantFileError, match="truncated or corrupt"):
            read_gguf(bad)
    flipped = bytearray(data)
    flipped[-2] ^= 0x10  # inside the last tensor's data; the header still parses
    path.write_bytes(bytes(flipped))
    with pytest.raises(QuantFileError, match="SHA-256"):
        read_gguf(path)
    with pytest.raises(QuantFileError, match="no GGUF file"):
        read_gguf(tmp_path / "absent.gguf")


def test_a_non_llama_model_is_refused(tmp_path: Path) -> None:
    gpt2 = GPT(GPTConfig(vocab_size=16, context_length=8, n_layers=1, n_heads=2, d_model=8),
               rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="llama"):
        export_gguf(gpt2, tmp_path / "x.gguf")


def test_the_file_computes_our_model_under_llama_cpps_interleaved_rope(tmp_path: Path) -> None:
    """Independent of our reader's inverse permutation: load the GGUF tensors as they are
    into a model that rotates interleaved pairs (llama.cpp's 'llama' convention); it must
    compute what our halves-convention model computes."""
    from dataclasses import replace

    m = _llama()
    export_gguf(m, tmp_path / "m.gguf")
    meta, tensors = read_gguf(tmp_path / "m.gguf")
    inter = GPT(replace(m.config, positional="rope"), rng=np.random.default_rng(5))
    params = dict(inter.named_parameters())
    get = lambda n: gguf_values(*tensors[n])  # noqa: E731
    params["tok_emb.weight"].data[...] = get("token_embd.weight")
    params["final_norm.weight"].data[...] = get("output_norm.weight")
    params["lm_head.weight"].data[...] = get("output.weight")
    for i in range(meta["llama.block_count"]):
        b, g = f"blocks.{i}.", f"blk.{i}."
        params[b + "attn.qkv_proj.weight"].data[...] = np.concatenate(
            [get(g + "attn_q.weight"), get(g + "attn_k.weight"), get(g + "attn_v.weight")])
        for ours, theirs in (("ln1", "attn_norm"), ("attn.out_proj", "attn_output"),
                             ("ln2", "ffn_norm"), ("ffn.w1", "ffn_gate"),
                             ("ffn.w3", "ffn_up"), ("ffn.w2", "ffn_down")):
            params[b + ours + ".weight"].data[...] = get(g + theirs + ".weight")
    ids = np.random.default_rng(1).integers(0, 256, (2, 16))
    np.testing.assert_allclose(inter(ids).data, m(ids).data, rtol=0, atol=1e-5)
