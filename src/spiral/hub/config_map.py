"""Hugging Face ``config.json`` <-> :class:`spiral.models.gpt.GPTConfig`: explicit tables.

Every field of a checkpoint's config is in exactly one table for its ``model_type``:

* ``*_FIELDS``   maps to a GPTConfig field (HF name -> ours), with HF's default if absent;
* ``*_REQUIRED`` must hold the one value our engine computes (else the logits would differ);
* ``IGNORED``    cannot change the logits (dropout rates, token ids, bookkeeping).

Anything else -- a field we have not read, or a value we do not compute -- is a
:class:`HubError` naming it, never a silent mismatch. GPT-2 (Radford et al., 2019):
learned positions, LayerNorm, GELU with the tanh approximation (``gelu_new``), biases,
tied head. Llama (Touvron et al., 2023): RMSNorm, SwiGLU, RoPE in the split-halves
convention with base ``rope_theta``, grouped-query attention, no biases, tied or untied head.
Chapter: stage 8 (real weights); stage 14 for the Llama family.
"""

from __future__ import annotations

from typing import Any

from spiral.hub.errors import HubError
from spiral.models.gpt import GPTConfig

__all__ = ["to_gpt_config", "from_gpt_config", "family_of", "FAMILIES"]

# HF field -> (GPTConfig field, HF default when the field is absent)
GPT2_FIELDS: dict[str, tuple[str, Any]] = {
    "vocab_size": ("vocab_size", 50257), "n_positions": ("context_length", 1024),
    "n_embd": ("d_model", 768), "n_layer": ("n_layers", 12), "n_head": ("n_heads", 12),
    "n_inner": ("ffn_hidden", None), "layer_norm_epsilon": ("norm_eps", 1e-5),
    "tie_word_embeddings": ("tie_weights", True), "activation_function": ("gelu_approximate",
                                                                          "gelu_new"),
}
GPT2_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
GPT2_REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                 "reorder_and_upcast_attn": False, "add_cross_attention": False}
GPT2_IGNORED = {"attn_pdrop", "embd_pdrop", "resid_pdrop", "n_ctx", "summary_activation",
                "summary_first_dropout", "summary_proj_to_labels", "summary_type",
                "summary_use_proj", "task_specific_params"}

LLAMA_FIELDS: dict[str, tuple[str, Any]] = {
    "vocab_size": ("vocab_size", 32000), "max_position_embeddings": ("context_length", 2048),
    "hidden_size": ("d_model", 4096), "num_hidden_layers": ("n_layers", 32),
    "num_attention_heads": ("n_heads", 32), "num_key_value_heads": ("n_kv_heads", None),
    "intermediate_size": ("ffn_hidden", 11008), "rms_norm_eps": ("norm_eps", 1e-6),
    "tie_word_embeddings": ("tie_weights", False), "rope_theta": ("rope_theta", 10000.0),
    "rope_scaling": ("rope_scaling", None),
}
LLAMA_REQUIRED = {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
                  "pretraining_tp": 1, "rope_interleaved": False}
LLAMA_IGNORED = {"attention_dropout", "is_llama_config", "head_dim", "rope_parameters"}

IGNORED = {"architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
           "use_cache", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
           "_name_or_path", "output_hidden_states", "output_attentions", "return_dict",
           "id2label", "label2id", "problem_type", "chunk_size_feed_forward",
           "is_encoder_decoder", "tokenizer_class", "torchscript", "use_return_dict",
           "tie_encoder_decoder", "prefix", "sep_token_id", "decoder_start_token_id",
           "finetuning_task", "max_length", "num_labels"}

FAMILIES: dict[str, tuple[dict[str, tuple[str, Any]], dict[str, Any], set[str]]] = {
    "gpt2": (GPT2_FIELDS, GPT2_REQUIRED, GPT2_IGNORED),
    "llama": (LLAMA_FIELDS, LLAMA_REQUIRED, LLAMA_IGNORED)}


def family_of(hf: dict[str, Any]) -> str:
    kind = hf.get("model_type")
    if kind not in FAMILIES:
        raise HubError(f"config.json: model_type {kind!r} is not supported by spiral.hub "
                       f"(supported: {', '.join(FAMILIES)})")
    return str(kind)


LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings")


def _rope(hf: dict[str, Any]) -> dict[str, Any]:
    """Transformers 5 writes ``rope_parameters`` = {rope_type, rope_theta, ...}; older files
    write ``rope_theta`` and ``rope_scaling``. Plain RoPE or Llama 3's scaling (rope_type
    "llama3"); any other rope_type or key is an error."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    if "rope_theta" in hf and "rope_theta" not in params:
        params["rope_theta"] = hf["rope_theta"]
    kind = params.pop("rope_type", params.pop("type", "default"))
    theta = {"rope_theta": params.pop("rope_theta")} if "rope_theta" in params else {}
    if kind == "default" and not params:
        return {**theta, "rope_scaling": None}
    if kind == "llama3" and set(params) == set(LLAMA3_KEYS):
        scaling = {"rope_type": "llama3", **{k: float(params[k]) for k in LLAMA3_KEYS[:3]},
                   LLAMA3_KEYS[3]: int(params[LLAMA3_KEYS[3]])}
        return {**theta, "rope_scaling": scaling}
    raise HubError(f"config.json: RoPE with rope_type {kind!r} and {sorted(params)} is not "
                   "supported by spiral.hub (supported: 'default'; 'llama3' with "
                   f"{', '.join(LLAMA3_KEYS)})")


def to_gpt_config(hf: dict[str, Any]) -> GPTConfig:
    """A checkpoint's config.json (as a dict) -> the GPTConfig that computes the same logits."""
    family = family_of(hf)
    fields, required, ignored = FAMILIES[family]
    hf = {**hf, **(_rope(hf) if family == "llama" else {})}
    for key, value in hf.items():
        if key in fields or key in ignored or key in IGNORED:
            continue
        if key not in required:
            raise HubError(f"config.json: field {key!r} (= {value!r}) of model_type {family} "
                           "is not supported by spiral.hub")
        if value != required[key] and not (value is None and key == "rope_interleaved"):
            raise HubError(f"config.json: {key} = {value!r} is not supported by spiral.hub "
                           f"(it computes {key} = {required[key]!r})")
    ours = {mine: hf.get(theirs, default) for theirs, (mine, default) in fields.items()}
    if family == "gpt2":
        act = ours["gelu_approximate"]
        if act not in GPT2_ACTIVATIONS:
            raise HubError(f"config.json: activation_function = {act!r} is not supported by "
                           f"spiral.hub (supported: {', '.join(GPT2_ACTIVATIONS)})")
        ours.update(gelu_approximate=GPT2_ACTIVATIONS[act], bias=True, positional="learned")
    else:
        hd = hf.get("head_dim")
        if hd is not None and hd * ours["n_heads"] != ours["d_model"]:
            raise HubError(f"config.json: head_dim = {hd} is not supported by spiral.hub (it "
                           f"needs head_dim = hidden_size / num_attention_heads = "
                           f"{ours['d_model'] // ours['n_heads']})")
        ours.update(norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves",
                    bias=False, rope_theta=float(ours["rope_theta"]))
    try:
        return GPTConfig(dropout=0.0, **ours)
    except (TypeError, ValueError) as err:
        raise HubError(f"config.json describes a model GPTConfig cannot build: {err}") from None


def from_gpt_config(c: GPTConfig, family: str) -> dict[str, Any]:
    """Our GPTConfig -> a config.json for ``family`` ("gpt2" or "llama"); refuses any
    switch the family cannot express."""
    if family not in FAMILIES:
        raise HubError(f"export family must be one of {', '.join(FAMILIES)}, got {family!r}")
    fixed = dict(placement="pre", residual=True, norm=True, ffn=True)
    if family == "gpt2":
        fixed.update(norm_type="layernorm", ffn_type="gelu", positional="learned")
    else:
        fixed.update(norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves",
                     bias=False)
    for key, want in fixed.items():
        if getattr(c, key) != want:
            raise HubError(f"cannot export as {family}: the model has {key} = "
                           f"{getattr(c, key)!r}, the {family} format needs {want!r}")
    if family == "gpt2" and c.kv_heads != c.n_heads:
        raise HubError(f"cannot export as gpt2: n_kv_heads = {c.n_kv_heads} (GPT-2 has no GQA)")
    fields = FAMILIES[family][0]
    out: dict[str, Any] = {theirs: getattr(c, mine) for theirs, (mine, _) in fields.items()}
    if family == "gpt2":
        act = {"tanh": "gelu_new", "none": "gelu"}[c.gelu_approximate]
        out.update(n_inner=c.hidden, activation_function=act, **GPT2_REQUIRED)
        out.update(attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
        arch = "GPT2LMHeadModel"
    else:
        out.update(num_key_value_heads=c.kv_heads, intermediate_size=c.hidden,
                   head_dim=c.head_dim, **{k: v for k, v in LLAMA_REQUIRED.items()
                                           if k != "rope_interleaved"})
        out["rope_scaling"] = None if c.rope_scaling is None else dict(c.rope_scaling)
        arch = "LlamaForCausalLM"
    return {"architectures": [arch], "model_type": family, **out,
            "bos_token_id": None, "eos_token_id": None, "dtype": "float32"}
