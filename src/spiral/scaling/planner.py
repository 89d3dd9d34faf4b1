"""The compute-optimal model: given C FLOPs, which N and D minimize L(N, D)?

With C = 6·N·D, substitute D = C/(6N) into L = E + A/N^α + B/D^β and set ∂L/∂N = 0:

    −α A N^(−α−1) + β B (C/6)^(−β) N^(β−1) = 0   ⇒   N^(α+β) = (αA / βB) · (C/6)^β

    N*(C) = G · (C/6)^a,   D*(C) = G⁻¹ · (C/6)^b,   G = (αA/(βB))^(1/(α+β)),
    a = β/(α+β),   b = α/(α+β),   a + b = 1                      (Hoffmann et al., 2022, eq. 4)

With the published Approach-3 fit (E 1.69, A 406.4, B 410.7, α 0.34, β 0.28) this gives
a = 0.45 and b = 0.55 — Table 2's 0.46 / 0.54 — and about 93 tokens per parameter at
Chinchilla's 5.76·10²³ FLOPs, NOT the ≈ 20 of the model they trained (70 B parameters, 1.4 T
tokens), which comes from their Approaches 1 and 2 (a ≈ b ≈ 0.5). Besiroglu et al. (2024,
"Chinchilla Scaling: A replication attempt") refit Approach 3 on the paper's own data and
got E 1.82, A 482.01, B 2085.43, α 0.3478, β 0.3658: a = 0.51 and ≈ 18 tokens per parameter,
consistent with the other two approaches. Both parameter sets are here; the tests check each
statement. Chapter: stage 14 (designing a model for a compute budget).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CHINCHILLA", "CHINCHILLA_REFIT", "ComputePlan", "allocation_exponents",
           "compute_optimal", "CHINCHILLA_COMPUTE"]

CHINCHILLA: dict[str, float] = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
CHINCHILLA_REFIT: dict[str, float] = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478,
                                      "beta": 0.3658}
CHINCHILLA_COMPUTE = 5.76e23  # FLOPs of Chinchilla's training run (Hoffmann et al., Table 3)


@dataclass(frozen=True)
class ComputePlan:
    compute: float
    n_params: float
    tokens: float
    loss: float

    @property
    def tokens_per_parameter(self) -> float:
        return self.tokens / self.n_params


def _check(law: dict[str, float]) -> None:
    missing = {"E", "A", "B", "alpha", "beta"} - set(law)
    if missing:
        raise ValueError(f"the planner needs L(N, D)'s E, A, B, alpha, beta; missing "
                         f"{sorted(missing)}")
    if law["alpha"] <= 0 or law["beta"] <= 0:
        raise ValueError("alpha and beta must be positive for a finite optimum")


def allocation_exponents(law: dict[str, float]) -> tuple[float, float]:
    """(a, b) with N* ∝ C^a and D* ∝ C^b: (β/(α+β), α/(α+β)).

    >>> [round(v, 2) for v in allocation_exponents(CHINCHILLA)]
    [0.45, 0.55]
    """
    _check(law)
    s = law["alpha"] + law["beta"]
    return law["beta"] / s, law["alpha"] / s


def compute_optimal(compute: float | np.ndarray, law: dict[str, float]) -> ComputePlan:
    """N*, D* and the predicted loss for a budget of ``compute`` FLOPs (C = 6·N·D)."""
    _check(law)
    c = np.asarray(compute, dtype=np.float64)
    if np.any(c <= 0):
        raise ValueError(f"compute must be positive, got {compute}")
    al, be = law["alpha"], law["beta"]
    g = (al * law["A"] / (be * law["B"])) ** (1.0 / (al + be))
    a, b = allocation_exponents(law)
    n = g * (c / 6.0) ** a
    d = (c / 6.0) ** b / g
    loss = law["E"] + law["A"] / n ** al + law["B"] / d ** be
    return ComputePlan(compute=c, n_params=n, tokens=d, loss=loss)  # type: ignore[arg-type]
