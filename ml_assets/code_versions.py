"""Code versions of the assets, from the source of the `core` modules whose logic makes their values.

Dagster marks a materialization stale when its asset's code version changed since: the UI then shows
which months' values older code made. The version is a hash of each module's syntax tree without
docstrings, so a reworded comment or docstring does not mark everything stale; a changed statement does.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
from types import ModuleType


def _logic(module: ModuleType) -> str:
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            if isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def code_version(*modules: ModuleType) -> str:
    """A short hash of what `modules` do."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(_logic(module).encode())
    return digest.hexdigest()[:12]
