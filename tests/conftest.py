"""Test-wide settings: quiet TensorFlow logs, a headless matplotlib, deterministic-enough threading."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

# Helper modules, not tests. `--doctest-modules` would import each one for its (absent) examples:
# train_script.py, store_helper.py and golden/make_golden.py are scripts (their work sits behind
# `__main__` guards; the tests run them, and import store_helper); helpers_models.py is imported as
# tests.helpers_models, and a second copy named helpers_models would register its Keras serializable
# classes again, over the first; engine_cases.py and reference.py are imported by the tests themselves.
collect_ignore = ["train_script.py", "store_helper.py", "helpers_models.py", "engine_cases.py", "reference.py"]
collect_ignore_glob = ["golden/*"]
