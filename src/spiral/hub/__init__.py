"""spiral.hub: real checkpoints in and out -- Hugging Face GPT-2 and Llama models on our engine.

    model, tok = spiral.hub.load("openai-community/gpt2")   # or a local folder
    spiral.hub.export(model, "out/", family="gpt2")          # transformers loads it back

A Hugging Face causal LM is config.json + safetensors weights + tokenizer.json. The config
maps field by field onto :class:`spiral.models.gpt.GPTConfig` (:mod:`.config_map`), the
weights name by name onto our parameters (:mod:`.weights`; GPT-2's Conv1D weights are
transposed, Llama's q/k/v stack into our fused projection), and the tokenizer onto our
:class:`spiral.tokenizers.bpe.BPETokenizer` with an id permutation (:mod:`.tokenizer`).
Reading never unpickles and never runs code from the checkpoint (:mod:`.safetensors_io`).
``huggingface_hub`` (the ``hub`` extra) is imported only to download by id.
Chapter: stage 8, "Running real pretrained weights on your engine"; stage 14 (Llama).
"""

from spiral.hub.api import (
    export,
    is_hub_folder,
    is_hub_source,
    load,
    load_model,
    load_tokenizer,
    resolve,
    sample,
)
from spiral.hub.errors import HubError
from spiral.hub.tokenizer import HFTokenizer, load_hf_tokenizer

__all__ = ["load", "load_model", "load_tokenizer", "load_hf_tokenizer", "export", "resolve",
           "is_hub_folder", "is_hub_source", "sample", "HubError", "HFTokenizer"]
