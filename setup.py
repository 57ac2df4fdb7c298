"""Install keras_stiffness and its `kstiff` command.

The command-line code lives in the top-level folder ``cli/`` but is installed as the
subpackage ``keras_stiffness.cli`` so the package never claims the bare name ``cli``.
"""

from setuptools import setup

setup(
    name="keras_stiffness",
    version="0.1.0",
    description=(
        "Measure stiffness (per-example gradient alignment) of TensorFlow/Keras models "
        "during and after training."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "keras_stiffness",
        "keras_stiffness.engine",
        "keras_stiffness.engine.rules",
        "keras_stiffness.cli",
    ],
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
    extras_require={"test": ["pytest>=8", "xarray", "h5netcdf"]},
    entry_points={"console_scripts": ["kstiff=keras_stiffness.cli.main:main"]},
)
