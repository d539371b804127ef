"""Durations as operators write them: 7d, 12h, 30m, 90s, 2w, combined as 1d12h (fractions
too: 1.5h), in any case. The one grammar of `fizz purge --before`, `--retain`,
`fizz stats --window` and GET /stats?window=; errors are one line naming what is valid."""

from __future__ import annotations

import re
from datetime import timedelta

from fizzbuzz_cli.errors import BadInput

DURATION_HELP = "a duration such as 7d, 12h, 30m, 90s or 2w (or combined, 1d12h)"

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def read_duration(text: str) -> timedelta | None:
    """The duration `text` writes, or None when it is not one (spaces between parts are
    allowed); BadInput when it is one too long to represent."""
    compact = str(text).strip().lower().replace(" ", "")
    if not _DURATION.fullmatch(compact):
        return None
    seconds = sum(float(n) * SECONDS[unit] for n, unit in _PART.findall(compact))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise BadInput(f"{str(text).strip()!r} is too long: use at most a few thousand "
                       "years") from None


def parse_duration(text: str, what: str = "duration", *, longest: timedelta | None = None
                   ) -> timedelta:
    """A positive duration, at most `longest`; BadInput naming `what` otherwise."""
    value = read_duration(text)
    if value is None:
        raise BadInput(f"invalid {what} {str(text).strip()!r}: use {DURATION_HELP}")
    if value <= timedelta(0):
        raise BadInput(f"invalid {what} {str(text).strip()!r}: use a duration longer than "
                       "0s, such as 7d, 12h or 30m")
    if longest is not None and value > longest:
        raise BadInput(f"invalid {what} {str(text).strip()!r}: use at most "
                       f"{format_duration(longest)}")
    return value


def format_duration(value: timedelta) -> str:
    """7d, 12h, 1d12h, 90s: as read_duration reads them back."""
    seconds = value.total_seconds()
    parts = []
    for unit in ("d", "h", "m"):
        whole, seconds = divmod(seconds, SECONDS[unit])
        if whole:
            parts.append(f"{int(whole)}{unit}")
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return "".join(parts)
