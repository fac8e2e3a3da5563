"""The Python callables that run a model's function calls: loaded from a user's module.

(The schemas the model sees are fcmistral.format.schemas; OpenAI calls those "tools".)
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any, Callable

from fcmistral.errors import UserError


def load_callables_module(path: str | Path) -> tuple[dict[str, Callable[..., Any]], list[dict[str, Any]] | None]:
    """The public functions defined in a user's module, and its ``FUNCTIONS`` schemas if it has one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--callables module {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"fcmistral_user_tools_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise UserError(f"cannot import {str(path)!r}: {type(err).__name__}: {err}") from err
    callables = {
        name: obj for name, obj in vars(module).items()
        if inspect.isfunction(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
    }
    return callables, getattr(module, "FUNCTIONS", None)


def check_callables_cover(functions: list[dict[str, Any]], callables: dict[str, Callable[..., Any]]) -> None:
    missing = [f["name"] for f in functions if f["name"] not in callables]
    if missing:
        raise UserError(f"no Python function for the schemas {missing} (functions found: {sorted(callables)})")
