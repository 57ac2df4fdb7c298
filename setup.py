"""Install keras_stiffness and its `kstiff` command.

The command-line code lives in the top-level folder ``cli/`` but is installed as the
subpackage ``keras_stiffness.cli`` so the package never claims the bare name ``cli``.
"""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
# The version is defined once, in keras_stiffness/version.py; read it without importing the package.
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "keras_stiffness" / "version.py").read_text(encoding="utf-8"), re.M
).group(1)

setup(
    name="keras_stiffness",
    version=VERSION,
    description=(
        "Measure stiffness (per-example gradient alignment) of TensorFlow/Keras models "
        "during and after training."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    license="Apache-2.0",
    packages=find_packages(include=["keras_stiffness", "keras_stiffness.*"]) + ["keras_stiffness.cli"],
    package_dir={"keras_stiffness.cli": "cli"},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        "tensorboard>=2.16",
        "click>=8.1",
        "h5py>=3.10",
        "numpy>=1.26",
        "matplotlib>=3.8",
        "scikit-learn>=1.3",
    ],
    extras_require={"test": ["pytest>=8", "ruff", "xarray", "h5netcdf"]},
    entry_points={"console_scripts": ["kstiff=keras_stiffness.cli.main:main"]},
)
