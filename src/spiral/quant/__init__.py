"""Stage 18: quantization — uniform RTN, quantized linear layers, GPTQ, AWQ, QAT, file I/O
(safetensors; GGUF in :mod:`spiral.quant.gguf_io`, which needs the ``gguf`` extra).

Chapter: stage 18 (Quantization). NumPy only.
"""

from spiral.quant.awq import awq_model, awq_search
from spiral.quant.gptq import gptq_model, gptq_quantize, hessian
from spiral.quant.io import QuantFileError, load_quantized, save_quantized
from spiral.quant.linear import QuantLinear, nbytes, quantize_model
from spiral.quant.qat import FakeQuantize, QATLinear, convert, fake_quantize, prepare_qat
from spiral.quant.uniform import (
    QTensor,
    calibrate,
    dequantize,
    pack_int4,
    qrange,
    quantize,
    scale_zero_point,
    unpack_int4,
)

__all__ = ["FakeQuantize", "QATLinear", "QTensor", "QuantFileError", "QuantLinear", "awq_model",
           "awq_search", "calibrate", "convert", "dequantize", "fake_quantize", "gptq_model",
           "gptq_quantize", "hessian", "load_quantized", "nbytes", "pack_int4", "prepare_qat",
           "qrange", "quantize", "quantize_model", "save_quantized", "scale_zero_point",
           "unpack_int4"]
