"""Experiments on quantization: error bounds, outliers, GPTQ, AWQ, QAT, sizes (stage 18)."""
