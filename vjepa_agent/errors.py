"""User-facing errors: one sentence that says what was wrong and what to do."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from functools import wraps


class UserError(ValueError):
    """Bad input from the user (path, config value, env). Scripts print it as one line and exit 2."""


def require(condition: bool, message: str) -> None:
    """Raise `UserError(message)` unless `condition` holds."""
    if not condition:
        raise UserError(message)


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Raise a one-line `UserError` naming the pip extra that installs `module` unless it is
    installed (checked without importing it). `purpose` says what needs it: "pretraining logs to
    TensorBoard"."""
    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"{purpose}, but {module} is not installed: pip install 'vjepa_agent[{extra}]'"
        )


def cli_entry(main: Callable[[], object]) -> Callable[[], object]:
    """Wrap a script's `main` so a `UserError` prints `error: ...` on one line and exits with code 2."""

    @wraps(main)
    def wrapper():
        try:
            return main()
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
