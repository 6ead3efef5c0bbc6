"""China's Air Quality Index, HJ 633-2012 (环境空气质量指数（AQI）技术规定（试行）).

Individual index IAQI_P = (IAQI_Hi - IAQI_Lo) / (BP_Hi - BP_Lo) x (C_P - BP_Lo) + IAQI_Lo inside the
concentration bracket BP_Lo <= C_P <= BP_Hi, rounded up to a whole number (the standard rounds every
index up); AQI = the largest IAQI; the primary pollutant(s) are those whose IAQI equals the AQI, named
only when AQI > 50. Breakpoints: shared/domain.md, "Air quality" (µg/m³, CO mg/m³).

A day's index (the bulletins' daily AQI, `daily_aqi`) uses the 24-hour breakpoints on the day's
means, and the daily maximum 8-hour mean for O3 (its 1-hour maximum on the 1-hour table when the 8-hour
mean is above 800 µg/m³, the end of the 8-hour table).

A station's real-time index uses the 1-hour breakpoints for SO2, NO2, CO and O3, and the 24-hour ones
for PM2.5 and PM10 (they have no 1-hour breakpoints). SO2 above 800 µg/m³ (the end of the 1-hour
table) is indexed with the 24-hour table, as the standard says. Concentrations above a table's top
are given IAQI 500 (the index's ceiling).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from math import ceil

IAQI_BREAKPOINTS: tuple[float, ...] = (0, 50, 100, 150, 200, 300, 400, 500)

CONCENTRATION_BREAKPOINTS: dict[str, tuple[float, ...]] = {
    "so2_24h": (0, 50, 150, 475, 800, 1600, 2100, 2620),
    "so2_1h": (0, 150, 500, 650, 800),
    "no2_24h": (0, 40, 80, 180, 280, 565, 750, 940),
    "no2_1h": (0, 100, 200, 700, 1200, 2340, 3090, 3840),
    "pm10_24h": (0, 50, 150, 250, 350, 420, 500, 600),
    "co_24h": (0, 2, 4, 14, 24, 36, 48, 60),
    "co_1h": (0, 5, 10, 35, 60, 90, 120, 150),
    "o3_1h": (0, 160, 200, 300, 400, 800, 1000, 1200),
    "o3_8h": (0, 100, 160, 215, 265, 800),
    "pm25_24h": (0, 35, 75, 115, 150, 250, 350, 500),
}

# (upper AQI of the category, level, name): HJ 633-2012 table 2.
CATEGORIES: tuple[tuple[int, int, str], ...] = (
    (50, 1, "excellent"),
    (100, 2, "good"),
    (150, 3, "lightly_polluted"),
    (200, 4, "moderately_polluted"),
    (300, 5, "heavily_polluted"),
    (10**9, 6, "severely_polluted"),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(name for _, _, name in CATEGORIES)

# Which table each reading of a station is indexed with in real time.
REALTIME_TABLES: tuple[tuple[str, str], ...] = (
    ("pm25", "pm25_24h"),
    ("pm10", "pm10_24h"),
    ("so2", "so2_1h"),
    ("no2", "no2_1h"),
    ("co", "co_1h"),
    ("o3", "o3_1h"),
)


def iaqi(table: str, concentration: float) -> int:
    """Individual AQI of a concentration on one breakpoint table (rounded up)."""
    if table == "so2_1h" and concentration > 800:
        table = "so2_24h"
    return _iaqi(CONCENTRATION_BREAKPOINTS[table], concentration)


def _iaqi(breakpoints: tuple[float, ...], concentration: float) -> int:
    upper = bisect_left(breakpoints, concentration)
    if upper == 0:
        return 0
    if upper >= len(breakpoints):
        return 500
    c_lo, c_hi = breakpoints[upper - 1], breakpoints[upper]
    i_lo, i_hi = IAQI_BREAKPOINTS[upper - 1], IAQI_BREAKPOINTS[upper]
    # Multiply before dividing and forgive float dust, so a breakpoint gives exactly its index.
    return math.ceil(i_lo + (i_hi - i_lo) * (concentration - c_lo) / (c_hi - c_lo) - 1e-9)


_SO2_1H = CONCENTRATION_BREAKPOINTS["so2_1h"]
_SO2_24H = CONCENTRATION_BREAKPOINTS["so2_24h"]
_REALTIME = tuple((name, CONCENTRATION_BREAKPOINTS[table]) for name, table in REALTIME_TABLES)


def realtime_aqi(readings: dict[str, float]) -> tuple[int, str]:
    """(AQI, primary pollutant(s) joined by ',' or 'none' when AQI <= 50) of a station's readings."""
    # _iaqi inlined: this runs for every station message.
    best = -1
    primary: list[str] = []
    for name, breakpoints in _REALTIME:
        concentration = readings[name]
        if breakpoints is _SO2_1H and concentration > 800:
            breakpoints = _SO2_24H
        upper = bisect_left(breakpoints, concentration)
        if upper == 0:
            value = 0
        elif upper >= len(breakpoints):
            value = 500
        else:
            c_lo = breakpoints[upper - 1]
            i_lo = IAQI_BREAKPOINTS[upper - 1]
            value = ceil(i_lo + (IAQI_BREAKPOINTS[upper] - i_lo) * (concentration - c_lo) / (breakpoints[upper] - c_lo) - 1e-9)
        if value > best:
            best, primary = value, [name]
        elif value == best:
            primary.append(name)
    return best, ",".join(primary) if best > 50 else "none"


# Which table each day mean is indexed with (O3 apart: its daily maximum 8-hour mean).
DAILY_TABLES: tuple[tuple[str, str], ...] = (
    ("pm25", "pm25_24h"),
    ("pm10", "pm10_24h"),
    ("so2", "so2_24h"),
    ("no2", "no2_24h"),
    ("co", "co_24h"),
)
O3_8H_TOP = CONCENTRATION_BREAKPOINTS["o3_8h"][-1]


def daily_aqi(day_means: dict[str, float], o3_8h_max: float, o3_1h_max: float) -> int:
    """A day's AQI (HJ 633-2012): day means of PM2.5, PM10, SO2, NO2, CO and O3's daily maximum 8-h mean."""
    o3 = iaqi("o3_1h", o3_1h_max) if o3_8h_max > O3_8H_TOP else iaqi("o3_8h", o3_8h_max)
    return max(o3, *(iaqi(table, day_means[name]) for name, table in DAILY_TABLES))


def _category(aqi: int) -> tuple[int, str]:
    for upper, level, name in CATEGORIES:
        if aqi <= upper:
            return level, name
    raise AssertionError("unreachable: the last category has no upper bound")


_CATEGORY_OF = [_category(aqi) for aqi in range(501)]  # the AQI is a whole number, 0-500


def category(aqi: int) -> tuple[int, str]:
    """(level 1-6, name) of an AQI."""
    return _CATEGORY_OF[aqi] if 0 <= aqi <= 500 else _category(aqi)
