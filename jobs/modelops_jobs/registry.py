"""Algorithm name -> module, imported lazily.

Each algorithm module exposes `run(spec, ctx) -> AlgorithmResult`. Importing lazily
keeps `python -m modelops_jobs --help` fast and lets the image carry only what the
requested algorithm needs.
"""

import importlib
from types import ModuleType

from modelops_jobs.errors import PermanentError

ALGORITHMS: dict[str, str] = {
    "perp": "modelops_jobs.algorithms.perp_job",
    "unlearn": "modelops_jobs.algorithms.unlearn_job",
    "translora": "modelops_jobs.algorithms.translora_job",
    "adapt": "modelops_jobs.algorithms.adapt_job",
}


def get(name: str) -> ModuleType:
    """The module implementing an algorithm; PermanentError when it is unknown or missing."""
    if name not in ALGORITHMS:
        raise PermanentError(f"unknown algorithm {name!r}", "UnknownAlgorithm")
    module_name = ALGORITHMS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise PermanentError(
                f"algorithm {name!r} is not implemented yet in this jobs image", "NotImplemented"
            ) from exc
        raise
    if not hasattr(module, "run"):
        raise PermanentError(f"algorithm module {module_name} has no run()", "NotImplemented")
    return module
