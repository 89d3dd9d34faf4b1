"""spiral.finetune: adapting a pretrained model — freezing, LoRA, and (QLoRA) NF4 bases.

- ``lora.py``: ``LoRALinear`` (W + (α/r)·B A, B zero-initialised), ``inject_lora`` by module
  name, ``merge_lora`` / ``unmerge_lora``, ``trainable_parameters``.
- ``adapters.py``: ``save_adapter`` / ``load_adapter`` (safetensors, peft's key names, a clear
  error on the wrong base).
- ``freeze.py``: ``freeze`` / ``unfreeze`` by module-name pattern, discriminative learning
  rates through parameter groups.
- ``nf4.py``: 4-bit NormalFloat quantization with double-quantized block scales, and
  ``NF4LoRALinear`` (a frozen NF4 base under a LoRA adapter).
- ``memory.py``: training memory of each method, derived from stage 11's graph and measured
  with stage 11's profiler.
- ``spectrum.py``: singular values and effective rank of a fine-tune's ΔW.
- ``recipe.py`` / ``cli.py``: ``spiral finetune`` (full | freeze | lora | qlora).

Chapter: stage 15 (fine-tuning).
"""

from __future__ import annotations

from spiral.finetune.adapters import AdapterMismatchError, load_adapter, save_adapter
from spiral.finetune.freeze import (
    discriminative_param_groups,
    freeze,
    frozen_parameters,
    layerwise_lr,
    unfreeze,
)
from spiral.finetune.lora import (
    LoRALinear,
    inject_lora,
    lora_modules,
    merge_lora,
    trainable_parameters,
    unmerge_lora,
)
from spiral.finetune.memory import predict_finetune_memory, profile_finetune_step
from spiral.finetune.nf4 import (
    NF4,
    NF4Linear,
    NF4LoRALinear,
    NF4Tensor,
    dequantize_nf4,
    inject_qlora,
    quantize_nf4,
)
from spiral.finetune.recipe import FinetuneConfig, FinetuneError, finetune, load_base
from spiral.finetune.spectrum import delta_spectra, effective_rank, energy_rank

__all__ = [
    "NF4", "AdapterMismatchError", "LoRALinear", "NF4LoRALinear", "NF4Linear", "NF4Tensor",
    "dequantize_nf4", "inject_qlora", "quantize_nf4", "discriminative_param_groups", "freeze",
    "frozen_parameters", "inject_lora", "layerwise_lr", "load_adapter", "lora_modules",
    "merge_lora", "save_adapter", "trainable_parameters", "unfreeze", "unmerge_lora",
    "FinetuneConfig", "FinetuneError", "delta_spectra", "effective_rank", "energy_rank",
    "finetune", "load_base", "predict_finetune_memory", "profile_finetune_step",
]
