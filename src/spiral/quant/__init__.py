"""Stage 18: quantization — uniform RTN, quantized linear layers, GPTQ.

Chapter: stage 18 (Quantization). NumPy only.
"""

from spiral.quant.gptq import gptq_quantize, hessian
from spiral.quant.linear import QuantLinear, quantize_model
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

__all__ = ["QTensor", "QuantLinear", "calibrate", "dequantize", "gptq_quantize",
           "hessian", "pack_int4", "qrange",
           "quantize", "quantize_model", "scale_zero_point", "unpack_int4"]
