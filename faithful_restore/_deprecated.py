"""Old spellings that keep working for one release, each with a DeprecationWarning naming the new one."""

from __future__ import annotations

import warnings
from typing import Any

from faithful_restore.errors import ArgumentTypeError

REMOVED_IN = "0.3"


def warn(old: str, new: str, stacklevel: int = 3) -> None:
    """Warns that ``old`` is deprecated in favour of ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in faithful_restore {REMOVED_IN}; use {new} instead.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def sample_inputs(func: str, args: tuple[Any, ...], keyword: Any) -> Any:
    """``sample_inputs`` given positionally to ``func`` (deprecated) or by keyword.

    Raises:
        ArgumentTypeError: more than one extra positional argument, or both spellings at once.
    """
    if not args:
        return keyword
    if len(args) > 1:
        raise ArgumentTypeError(
            f"{func}() takes sample_inputs as its only extra argument, found {len(args)} extra positional "
            "arguments; pass the others by keyword (rtol=..., atol=...)."
        )
    if keyword is not None:
        raise ArgumentTypeError(f"{func}() got sample_inputs both by position and by keyword; pass it once.")
    warn(f"passing sample_inputs to {func}() by position", "sample_inputs=... (keyword-only everywhere)", 4)
    return args[0]
