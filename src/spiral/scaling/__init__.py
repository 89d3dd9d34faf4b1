"""spiral.scaling: compute counting, scaling-law fits and compute-optimal planning (stage 14).

- ``flops``: matmul FLOPs of the GPT, exactly, and the 6·N·D rule with its attention term.
- ``lbfgs``: the quasi-Newton minimizer (NumPy only).
- ``fit``: L(N) and L(N, D) fitted as Hoffmann et al. (2022) did, with bootstrap intervals.
- ``planner``: C → N*, D* for a fitted law; Chinchilla's published and refitted laws.
"""

from __future__ import annotations

from spiral.scaling.fit import HUBER_DELTA, ScalingFit, fit_scaling_law
from spiral.scaling.flops import (
    approx_training_flops,
    attention_flops_per_token,
    forward_flops,
    matmul_parameters,
    non_embedding_parameters,
    training_flops,
)
from spiral.scaling.lbfgs import LBFGSResult, lbfgs
from spiral.scaling.planner import (
    CHINCHILLA,
    CHINCHILLA_COMPUTE,
    CHINCHILLA_REFIT,
    ComputePlan,
    allocation_exponents,
    compute_optimal,
)

__all__ = ["HUBER_DELTA", "ScalingFit", "fit_scaling_law", "approx_training_flops",
           "attention_flops_per_token", "forward_flops", "matmul_parameters",
           "non_embedding_parameters", "training_flops", "LBFGSResult", "lbfgs", "CHINCHILLA",
           "CHINCHILLA_COMPUTE", "CHINCHILLA_REFIT", "ComputePlan", "allocation_exponents",
           "compute_optimal"]
