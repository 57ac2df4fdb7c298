"""Repository-wide pytest setup: collect the doctests of ``cli/`` under its installed name.

The folder ``cli/`` is installed as the subpackage ``keras_stiffness.cli`` (``package_dir`` in setup.py)
and the package never claims the bare name ``cli``. ``testpaths`` lists ``cli`` so that
``--doctest-modules`` runs its docstring examples, but pytest imports a collected file by its path:
``cli/main.py`` would be imported a second time, as a separate module ``cli.main``. Before pytest imports
a file of ``cli/``, this hook imports the installed module and registers it under the name pytest will
ask for, so pytest reuses it: the examples run against ``keras_stiffness.cli.*`` itself and no second
copy is made. When the installed module is not this very file (a non-editable install), nothing is
registered and pytest imports the file as usual.
"""

import importlib
import pathlib
import sys

CLI_FOLDER = pathlib.Path(__file__).resolve().parent / "cli"


def pytest_collect_file(file_path, parent):
    path = pathlib.Path(file_path).resolve()
    if path.suffix != ".py" or path.parent != CLI_FOLDER:
        return None
    names = [("cli", "keras_stiffness.cli")]
    if path.stem != "__init__":
        names.append((f"cli.{path.stem}", f"keras_stiffness.cli.{path.stem}"))
    for bare, installed in names:
        try:
            module = importlib.import_module(installed)
        except ImportError:
            return None  # pytest's own import of the file reports the error
        if pathlib.Path(module.__file__).resolve().parent != CLI_FOLDER:
            return None
        sys.modules.setdefault(bare, module)
    return None
