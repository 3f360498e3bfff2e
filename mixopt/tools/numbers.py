"""How the tools print a number and a 95% interval row ({n, low, high}): one format for the
validation's terminal table, its markdown and its HTML page."""

from __future__ import annotations

import math


def format_number(value, digits: int = 4, sign: bool = False) -> str:
    """`value` to `digits` decimals (with its sign when `sign`); "n/a" for None, NaN or a non-number."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def format_interval(row: dict, sign: bool = False) -> str:
    """"[low, high]" of a row over n >= 2 seeds; "n/a" with fewer."""
    if row["n"] < 2:
        return "n/a"
    return f"[{format_number(row['low'], sign=sign)}, {format_number(row['high'], sign=sign)}]"
