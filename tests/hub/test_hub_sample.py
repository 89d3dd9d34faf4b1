"""``spiral sample`` on a Hugging Face folder: greedy continuation equals transformers'."""

from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
from spiral import hub  # noqa: E402
from spiral.models.gpt import GPT, GPTConfig  # noqa: E402
from tests.hub.test_hub_tokenizer import train_hf  # noqa: E402

pytestmark = pytest.mark.stage8

TEXT = "To be, or not to be, that is the question:\n" * 20 + "Whether 'tis nobler in the mind"


def test_greedy_sample_equals_transformers_generate(tmp_path):
    import torch

    tok_file = train_hf(TEXT, tmp_path / "tokenizer.json", vocab_size=300)
    ours = GPT(GPTConfig(vocab_size=300, context_length=32, n_layers=2, n_heads=2, d_model=32,
                         bias=True, gelu_approximate="tanh"), rng=np.random.default_rng(0))
    folder = hub.export(ours, tmp_path / "model", family="gpt2", tokenizer_json=tok_file)
    assert hub.is_hub_source(folder) and not hub.is_hub_source(tmp_path)
    assert hub.is_hub_source("openai-community/gpt2")
    prompt = "To be, or not"
    text = hub.sample(folder, prompt, max_new_tokens=12, top_k=1)
    tok = hub.load_tokenizer(folder)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder)
    start = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        out = theirs.generate(start, max_new_tokens=12, do_sample=False, pad_token_id=0,
                              eos_token_id=None)
    assert text == prompt + tok.decode(out[0, start.shape[1]:].tolist())


def test_sample_without_a_tokenizer_is_a_clear_error(tmp_path):
    ours = GPT(GPTConfig(vocab_size=40, context_length=8, n_layers=1, n_heads=2, d_model=8),
               rng=np.random.default_rng(0))
    hub.export(ours, tmp_path, family="gpt2")
    with pytest.raises(hub.HubError, match="no tokenizer.json"):
        hub.sample(tmp_path, "hi")
