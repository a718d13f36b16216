"""A user's own code, named by a `module:function` string: a data loader, a model builder,
a trainer.

The string is foreign input and the module foreign code: whatever importing it or
calling the function raises (a syntax error, SystemExit, anything) becomes one line of
the caller's error class naming the string.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from study.errors import UsageError


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


@contextlib.contextmanager
def cwd_on_path() -> Iterator[None]:
    """The module is found on sys.path plus the current directory, as `python -m` would
    find it, without leaving the directory on the path."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def load_function(ref: str, where: str, error: type[UsageError]) -> Callable[..., Any]:
    """The function `ref` ("module:function") names; `error(...)` one line otherwise.

    `where` names the field the string came from ("data.loader", "model.builder",
    "run.trainer").
    """
    named = f"{where}: {ref!r}"
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise error(f"{where}: expected 'module:function', got {ref!r}")
    try:
        with cwd_on_path():
            module = importlib.import_module(module_name.strip())
    except (Exception, SystemExit) as e:
        raise error(f"{named} does not import: {type(e).__name__}: {first_line(e)}") from None
    fn = getattr(module, attr.strip(), None)
    if fn is None:
        raise error(f"{named}: module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise error(f"{named}: {attr!r} is not a function")
    return fn  # type: ignore[no-any-return]


def import_root(target: object, module: str, qualname: str) -> str | None:
    """The directory a fresh process needs on sys.path to import `module:qualname` and
    find `target` itself there (a builder, a trainer); None when it cannot: a function
    of `__main__`, a nested or local one, or one its module no longer holds."""
    if module == "__main__" or "<" in qualname or "." in qualname:
        return None
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if loaded is None or file is None or getattr(loaded, qualname, None) is not target:
        return None
    root = Path(file).resolve().parent
    if Path(file).name == "__init__.py":
        root = root.parent
    for _ in range(module.count(".")):
        root = root.parent
    return str(root)
