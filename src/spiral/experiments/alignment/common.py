"""What the alignment experiments share: the SFT recipes (tiny for quick runs) and load."""

from __future__ import annotations

import os

from spiral.align.models import SFTConfig

FULL_SFT = SFTConfig(max_steps=1000)  # 2 layers x 64 wide, 1,000 steps on the training names
QUICK_SFT = SFTConfig(n_layers=1, n_heads=2, d_model=16, max_steps=150, batch_size=16)
TEMPERATURE = 0.1       # the Bradley–Terry labelling temperature τ


def load_average() -> float:
    """The 1-minute load average (timings in the results are labelled with it)."""
    return float(os.getloadavg()[0])
