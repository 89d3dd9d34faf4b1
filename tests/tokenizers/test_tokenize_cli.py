"""``spiral tokenize train|encode|decode`` through the CLI's own parser."""

from __future__ import annotations

import argparse

import pytest

from spiral.tokenizers.bpe import BPETokenizer
from spiral.tokenizers.cli import add_subparser

pytestmark = pytest.mark.stage10


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spiral")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_train_encode_decode(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 40 + "<|eot|>", encoding="utf-8")
    model = tmp_path / "bpe.json"
    assert run(["tokenize", "train", "--data", str(corpus), "--vocab-size", "265",
                "--out", str(model), "--special", "<|eot|>"]) == 0
    assert "saved" in capsys.readouterr().out
    tok = BPETokenizer.load(model)
    assert tok.vocab_size == 265 and tok.special_tokens == {"<|eot|>": 264}

    assert run(["tokenize", "encode", "--model", str(model), "--text", "the mat<|eot|>"]) == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == tok.encode("the mat<|eot|>", allowed_special="all") and ids[-1] == 264

    assert run(["tokenize", "decode", "--model", str(model), *map(str, ids)]) == 0
    assert capsys.readouterr().out == "the mat<|eot|>"


def test_decode_rejects_non_integers(tmp_path):
    model = tmp_path / "bpe.json"
    BPETokenizer().save(model)
    with pytest.raises(ValueError, match="integers"):
        run(["tokenize", "decode", "--model", str(model), "12", "x"])
