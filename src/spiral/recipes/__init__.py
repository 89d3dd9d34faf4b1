"""Training recipes the command line, the tour and the experiments share.

- :mod:`spiral.recipes.mlp` — the MLP language model of stage 4;
- :mod:`spiral.recipes.gpt` — nanoGPT's baby (and small) GPT recipe of stage 8.

They live in the library (not in :mod:`spiral.experiments`) because the CLI uses them, and
the library never imports the experiments.
"""
