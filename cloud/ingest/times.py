"""Points in time as users write them: `10m` ago, an ISO 8601 time, or seconds since the epoch."""

from __future__ import annotations

import datetime as dt
import math
import re

from edgewise.cloud.errors import InvalidInputError

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, *, now: float, what: str = "time") -> float:
    """Seconds since the epoch for `text`: `90s`, `10m`, `2h`, `7d`, `1w` before `now`; an ISO 8601 time (UTC
    unless it names its offset); or a plain number of seconds since the epoch."""
    value = text.strip()
    ago = _AGO.match(value)
    if ago:
        return now - float(ago[1]) * _UNIT_SECONDS[ago[2].lower()]
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise InvalidInputError(
            f"bad {what} {text!r}: use a duration before now (30s, 10m, 2h, 7d), an ISO 8601 time "
            "(2026-11-27T05:00:00Z) or seconds since the epoch"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
