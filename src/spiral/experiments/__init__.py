"""Experiments that produce every figure and number of the book, one module per concept.

Each module exports ``EXPERIMENT`` (:class:`spiral.experiments.framework.Experiment`);
:func:`spiral.experiments.framework.discover` finds them all.
"""
