"""The package version (defined here only) and the library versions a run was made with.

``setup.py`` reads :data:`__version__` from this file without importing the package; every run file
records it (the ``library_version`` attribute) together with :func:`library_versions`.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Dict

__version__ = "0.1.0"

_PACKAGES = ("tensorflow", "keras", "numpy", "h5py", "tensorflow-datasets")


def library_versions() -> Dict[str, str]:
    """``{package: version}`` for the packages that shape a measurement, plus Python and platform.

    Example:
        >>> versions = library_versions()
        >>> versions["keras_stiffness"] == __version__, "numpy" in versions
        (True, True)
    """
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "keras_stiffness": __version__}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
