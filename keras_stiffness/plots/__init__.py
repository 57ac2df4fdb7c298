"""Matplotlib figures of run files: one run's figures and the learning-rate sweep.

matplotlib is imported inside the functions, with the Agg canvas, so no display is needed.
"""
