"""Parsing of the human-friendly quantities used in scenario files ("90s", "5m", "1h30m", "30d")."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

# The strings parse_duration accepts, for the scenario JSON Schema (ECMA-262 syntax, as editors use):
# number-unit parts, spaces between them, and at least one non-zero digit (a duration is positive).
_POSITIVE_DURATION = r"(?=[^1-9]*[1-9]) *(?:[0-9]+(?:\.[0-9]+)? *(?:ms|s|m|h|d|w) *)+"
DURATION_PATTERN = rf"^ *{_POSITIVE_DURATION}$"
SIGNED_DURATION_PATTERN = rf"^ *-?{_POSITIVE_DURATION}$"


def parse_duration(value: object) -> float:
    """Seconds in a duration given as a number of seconds or a string like "1h30m"."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '90s', '5m', '1h', '30d'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not text or "".join(number + unit for number, unit in parts) != text:
            raise ValueError(f"{value!r} is not a duration; use e.g. '90s', '5m', '1h30m', '30d'")
        seconds = sum(float(number) * _SECONDS_PER_UNIT[unit] for number, unit in parts)
    else:
        raise ValueError("a duration is a number of seconds or a string like '90s', '5m', '1h', '30d'")
    if not seconds > 0 or seconds == float("inf"):  # NaN compares false
        raise ValueError(f"a duration must be a positive number of seconds, got {value!r}")
    return seconds


UNTIL_STOPPED = "until-stopped"
"""A scenario's `duration` for a live run: it runs, paced, until SIGTERM or Ctrl-C (infinite seconds)."""


def parse_run_duration(value: object) -> float:
    """A run's length in seconds: a duration, or "until-stopped" (infinity)."""
    if isinstance(value, str) and value.strip() == UNTIL_STOPPED:
        return math.inf
    if isinstance(value, float) and value == math.inf:  # a scenario dumped and validated again (with_overrides)
        return value
    try:
        return parse_duration(value)
    except ValueError as error:
        raise ValueError(f"{error} (or '{UNTIL_STOPPED}' for a paced run that lasts until it is stopped)") from None


def format_run_duration(seconds: float) -> str:
    """A run's length as a scenario writes it: "until-stopped" or a duration."""
    return UNTIL_STOPPED if seconds == math.inf else format_duration(seconds)


def format_duration(seconds: float) -> str:
    """Shortest exact spelling of a duration, e.g. 5400 -> "1h30m"."""
    remaining = round(seconds * 1000)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
