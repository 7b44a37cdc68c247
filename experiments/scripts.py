"""Import a script of ``algos/`` as a module.

``algos/`` is a folder of CleanRL-style scripts, not a package: each script puts its own folder on
``sys.path`` and imports ``run_utils`` beside it. Tests, benchmarks and experiments that call a script's
functions (``train``, ``Args``, ``evaluate``) load it with :func:`load_script`, the one loader of the
repository.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ALGOS = Path(__file__).resolve().parents[1] / "algos"


def load_script(name: str, module_name: str | None = None) -> ModuleType:
    """Execute ``algos/<name>.py`` as a fresh module named ``module_name`` (default: ``name``).

    The module is registered in ``sys.modules`` under that name because tyro and dataclasses resolve a
    class's module by name. Each call executes the file again: a distinct ``module_name`` gives a copy
    whose module-level state is its own.
    """
    path = ALGOS / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no script {path}")
    spec = importlib.util.spec_from_file_location(module_name or name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
