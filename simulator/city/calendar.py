"""The city's calendar: local time of day, workdays and weekends, and the heating season.

Heating season: 1 Nov to 31 Mar, inclusive, as for district heating in Shanxi (shared/domain.md,
"District heating"; check for Yangquan: cities open earlier in a cold autumn). Public holidays count
as rest days, and China's adjusted working weekends (调休) as workdays; both are listed in the
scenario (`city.calendar`), none by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from pydantic import Field, field_validator

from simulator.fleet import StrictModel
from simulator.recent import forget_oldest

DAY_S = 86400.0
YANGQUAN_TZ = timezone(timedelta(hours=8), "CST")  # the city lives on Beijing time, however the start is written
_MONTH_DAY = re.compile(r"(\d{2})-(\d{2})")  # fullmatch: `$` would allow a final newline


class CalendarSettings(StrictModel):
    heating_start: str = Field(default="11-01", description="first day of the heating season, MM-DD")
    heating_end: str = Field(default="03-31", description="last day of the heating season, MM-DD (inclusive)")
    holidays: list[date] = Field(default_factory=list, description="public holidays: rest days even on a weekday")
    working_weekends: list[date] = Field(default_factory=list, description="weekend days worked to make up a holiday (调休)")

    @field_validator("heating_start", "heating_end")
    @classmethod
    def _month_day(cls, text: str) -> str:
        match = _MONTH_DAY.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a MM-DD day, e.g. '11-01'")
        try:
            date(2024, int(match[1]), int(match[2]))  # a leap year: 02-29 is allowed
        except ValueError:
            raise ValueError(f"{text!r} is not a day of the year") from None
        return text


@dataclass(frozen=True, slots=True)
class Day:
    date: date
    workday: bool
    heating: bool


class CityCalendar:
    """Days of the run, indexed from the local midnight before the scenario's start."""

    def __init__(self, settings: CalendarSettings, start: datetime, keep_days: int | None = None) -> None:
        self.settings = settings
        self.keep_days = keep_days  # a live run: the days cached (simulator/recent.py); None: all
        self.first_date = start.date()
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        self.start_local_s = (start - midnight).total_seconds()  # local seconds at simulated time 0
        self._days: dict[int, Day] = {}
        self._holidays = set(settings.holidays)
        self._working_weekends = set(settings.working_weekends)
        self._heating = (_month_day(settings.heating_start), _month_day(settings.heating_end))

    def day_index(self, now: float) -> int:
        return int((self.start_local_s + now) // DAY_S)

    def day(self, now: float) -> Day:
        """The local day of simulated time `now` (before the start too: models warm up)."""
        index = int((self.start_local_s + now) // DAY_S)
        day = self._days.get(index)
        if day is None:
            day = self._days[index] = self._make_day(self.first_date + timedelta(days=index))
            forget_oldest(self._days, self.keep_days)  # a pure function of the date: made again if asked
        return day

    def hour(self, now: float) -> float:
        """Local time of day in hours, 0 <= hour < 24."""
        return ((self.start_local_s + now) % DAY_S) / 3600.0

    def midnight_before(self, now: float) -> float:
        """Simulated time of the local midnight that starts the day of `now` (may be negative)."""
        return self.day_index(now) * DAY_S - self.start_local_s

    def _make_day(self, day: date) -> Day:
        workday = (day.weekday() < 5 and day not in self._holidays) or day in self._working_weekends
        return Day(day, workday, self.in_heating_season(day))

    def in_heating_season(self, day: date) -> bool:
        first, last = self._heating
        key = (day.month, day.day)
        # The season spans new year when it starts later in the year than it ends (Nov..Mar).
        return first <= key <= last if first <= last else key >= first or key <= last


def _month_day(text: str) -> tuple[int, int]:
    month, day = text.split("-")
    return int(month), int(day)
