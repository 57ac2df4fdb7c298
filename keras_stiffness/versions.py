"""Versions of the libraries a run was made with (stored in every run file)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Dict

_PACKAGES = ("keras_stiffness", "tensorflow", "keras", "numpy", "h5py", "tensorflow-datasets")


def library_versions() -> Dict[str, str]:
    """``{package: version}`` for the packages that shape a measurement, plus Python and platform.

    Example:
        >>> "numpy" in library_versions()
        True
    """
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
