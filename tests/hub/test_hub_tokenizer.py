"""tokenizer.json (byte-level BPE) -> our BPETokenizer: ids equal to Hugging Face tokenizers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spiral import hub
from spiral.tokenizers.pretokenize import GPT4_PATTERN

tokenizers = pytest.importorskip("tokenizers")

pytestmark = pytest.mark.stage8

DATA = Path(os.environ.get("SPIRAL_DATA_DIR", "/work/shared/data"))
SPECIALS = ["<|endoftext|>", "<|im_start|>"]
KINDS = ["gpt2", "llama3", "smollm"]
STRESS = [
    "Hello, world! It's 2026; we've 3.14159 reasons & they'll DON'T care.",
    "naïve café — Ünïcödé 日本語のテキスト, 한국어, العربية, emoji 🙂👍🏽 and e\u0301 combining",
    "   leading spaces, trailing   \n\n\n\ttabs\t\t and   runs     of  whitespace   ",
    "digits 1234567890 0000 12 345 6789 -42 +7 1e10 ١٢٣ (Arabic-Indic) Ⅻ ½ x²",
    "a  1  b\t\t2\n\n3 x 4\u00a05 6  ",
    "special<|endoftext|>tokens<|im_start|>inline <|endoftext|> spaced<|endoftext|>",
    "\r\n windows\r\nline endings\n \n",
    "",
    " ",
    "x" * 300 + " " + "ab" * 100,
]


def _shakespeare() -> str:
    path = DATA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip("tiny Shakespeare is not available (set SPIRAL_DATA_DIR)")
    return path.read_text(encoding="utf-8")


def train_hf(text: str, path: Path, *, llama3: bool = False, vocab_size: int = 700,
             digits: bool = False) -> Path:
    """A byte-level BPE trained offline by Hugging Face tokenizers: GPT-2's layout, Llama
    3's (a Split regex + ByteLevel without its own regex, ignore_merges), or SmolLM's
    (single digits split off before GPT-2's ByteLevel)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=llama3))
    if llama3:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text], trainer)
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def shakespeare_files(tmp_path_factory):
    text = _shakespeare()
    d = tmp_path_factory.mktemp("tok")
    return text, {kind: train_hf(text, d / f"{kind}.json", llama3=kind == "llama3",
                                 digits=kind == "smollm")
                  for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_ids_equal_hf_on_tiny_shakespeare(shakespeare_files, kind):
    text, files = shakespeare_files
    ref = tokenizers.Tokenizer.from_file(str(files[kind]))
    ours = hub.load_hf_tokenizer(files[kind])
    expected = ref.encode(text).ids
    assert len(expected) < 0.6 * len(text.encode())  # the merges do compress
    assert ours.encode(text, allowed_special="all") == expected
    assert ours.decode(expected) == text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", STRESS)
def test_ids_equal_hf_on_the_stress_set(shakespeare_files, kind, text):
    _, files = shakespeare_files
    ref = tokenizers.Tokenizer.from_file(str(files[kind]))
    ours = hub.load_hf_tokenizer(files[kind])
    assert ours.encode(text, allowed_special="all") == ref.encode(text).ids
    assert ours.decode(ref.encode(text).ids) == text


def test_special_tokens_keep_their_file_ids(shakespeare_files):
    _, files = shakespeare_files
    ours = hub.load_hf_tokenizer(files["gpt2"])
    ref = tokenizers.Tokenizer.from_file(str(files["gpt2"]))
    assert ours.special_tokens == {s: ref.token_to_id(s) for s in SPECIALS}
    with pytest.raises(ValueError, match="allowed_special"):  # tiktoken's safe default
        ours.encode("a<|endoftext|>")


@pytest.mark.parametrize("edit,match", [
    (lambda s: s["model"].update(type="WordPiece"), "model.type"),
    (lambda s: s.update(normalizer={"type": "NFC"}), "normalizer"),
    (lambda s: s.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer Whitespace"),
    (lambda s: s["model"].update(byte_fallback=True), "byte_fallback"),
])
def test_unsupported_tokenizers_are_clear_errors(shakespeare_files, tmp_path, edit, match):
    _, files = shakespeare_files
    spec = json.loads(files["gpt2"].read_text(encoding="utf-8"))
    edit(spec)
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(hub.HubError, match=match):
        hub.load_hf_tokenizer(bad)
