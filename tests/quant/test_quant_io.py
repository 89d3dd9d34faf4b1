"""Quantized weights in safetensors: a bit-exact round trip; truncated or corrupt files are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spiral.models.gpt import GPT, GPTConfig
from spiral.quant.io import QuantFileError, load_quantized, save_quantized
from spiral.quant.linear import QuantLinear, quantize_model

pytestmark = pytest.mark.stage18


def _gpt(seed: int = 0) -> GPT:
    cfg = GPTConfig(vocab_size=19, context_length=8, n_layers=1, n_heads=2, d_model=16,
                    tie_weights=False)
    return GPT(cfg, rng=np.random.default_rng(seed))


def _saved(tmp_path: Path) -> tuple[GPT, Path]:
    m = _gpt()
    quantize_model(m, 4, granularity="group", group_size=8, precision={"*.fc": 8},
                   exclude=("lm_head",))
    path = tmp_path / "q.safetensors"
    save_quantized(m, path)
    return m, path


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    m, path = _saved(tmp_path)
    fresh = _gpt(seed=1)  # different float weights: everything must come from the file
    names = load_quantized(fresh, path)
    assert names == [n for n, x in m.named_modules() if isinstance(x, QuantLinear)]
    a, b = m.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    ids = np.random.default_rng(2).integers(0, 19, (2, 8))
    np.testing.assert_array_equal(m(ids).data, fresh(ids).data)


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    for cut in (4, 100, len(data) - 7):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(QuantFileError, match="truncated or corrupt"):
            load_quantized(_gpt(), bad)


def test_flipped_byte_in_the_data_is_caught_by_the_checksum(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's bytes; the header stays valid
    path.write_bytes(bytes(data))
    with pytest.raises(QuantFileError, match="SHA-256"):
        load_quantized(_gpt(), path)


def test_missing_file_foreign_file_and_wrong_model_are_clear_errors(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    with pytest.raises(QuantFileError, match="no quantized-weights file"):
        load_quantized(_gpt(), tmp_path / "absent.safetensors")
    foreign = tmp_path / "plain.safetensors"
    save_file({"x": np.zeros(3)}, str(foreign))
    with pytest.raises(QuantFileError, match="metadata"):
        load_quantized(_gpt(), foreign)
    _, path = _saved(tmp_path)
    big = GPT(GPTConfig(vocab_size=19, context_length=8, n_layers=2, n_heads=2, d_model=16,
                        tie_weights=False), rng=np.random.default_rng(0))
    before = {n: type(x) for n, x in big.named_modules()}
    with pytest.raises(QuantFileError, match="does not fit"):
        load_quantized(big, path)
    assert {n: type(x) for n, x in big.named_modules()} == before  # left as it was
    for layers, message in (({"nope": {}}, "does not exist"),
                            ({"blocks.0.ffn.fc": {}}, "malformed")):
        header = {"format": "spiral.quant", "version": 1, "layers": layers, "sha256": {}}
        odd = tmp_path / "odd.safetensors"
        save_file({}, str(odd), metadata={"spiral.quant": json.dumps(header)})
        with pytest.raises(QuantFileError, match=message):
            load_quantized(_gpt(), odd)


def test_asymmetric_layers_round_trip_with_their_zero_points(tmp_path: Path) -> None:
    m = _gpt()
    quantize_model(m, 4, symmetric=False, granularity="group", group_size=8,
                   precision={"*.fc": 8}, exclude=("lm_head",))
    save_quantized(m, tmp_path / "a.safetensors")
    fresh = _gpt(seed=1)
    load_quantized(fresh, tmp_path / "a.safetensors")
    zps = [x.zero_point for _, x in fresh.named_modules() if isinstance(x, QuantLinear)]
    assert zps and all(z is not None and z.dtype == np.uint8 and z.any() for z in zps)
    ids = np.random.default_rng(3).integers(0, 19, (2, 8))
    np.testing.assert_array_equal(m(ids).data, fresh(ids).data)
