"""Test-wide settings: quiet TensorFlow logs, a headless matplotlib, deterministic-enough threading."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
