"""Stage 18: quantization — uniform RTN, quantized linear layers, GPTQ, safetensors I/O.

Chapter: stage 18 (Quantization). NumPy only.
"""

from spiral.quant.gptq import gptq_model, gptq_quantize, hessian
from spiral.quant.io import QuantFileError, load_quantized, save_quantized
from spiral.quant.linear import QuantLinear, nbytes, quantize_model
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

__all__ = ["QTensor", "QuantFileError", "QuantLinear", "calibrate", "dequantize", "gptq_model",
           "gptq_quantize", "hessian", "load_quantized", "nbytes", "pack_int4", "qrange",
           "quantize", "quantize_model", "save_quantized", "scale_zero_point",
           "unpack_int4"]
