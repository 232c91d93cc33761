"""Input checks shared by the scorers."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import numpy as np


def as_bool(value: object, where: str) -> bool:
    """``value`` as a bool if it is one (Python, NumPy, or the ints 0 and 1); ValueError otherwise."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{where} is {value!r}; expected True or False")


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """"; did you mean 'X'?" for the closest known name (case ignored), or "" if none is close."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""
