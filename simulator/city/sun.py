"""Sunrise and sunset over Yangquan (37.86 N, 113.58 E) on each simulated date, from astral.

Times are computed once per local date and kept as simulated seconds, so asking "is it dark?" at
every street-light report is two comparisons. `twilight="civil"` uses civil dawn and dusk (sun 6°
below the horizon) instead of sunrise and sunset (shared/domain.md, "Street lights").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from astral import Observer
from astral.sun import dawn, dusk, sunrise, sunset

from simulator.city.calendar import DAY_S, CityCalendar
from simulator.city.geography import YANGQUAN_LAT, YANGQUAN_LON
from simulator.recent import forget_oldest

Twilight = Literal["official", "civil"]


class SunClock:
    def __init__(
        self, calendar: CityCalendar, start: datetime, latitude: float = YANGQUAN_LAT, longitude: float = YANGQUAN_LON, keep_days: int | None = None
    ) -> None:
        self.calendar = calendar
        self.keep_days = keep_days  # a live run: the days cached; None: all
        self.start = start
        self.observer = Observer(latitude, longitude)
        self._days: dict[tuple[int, Twilight], tuple[float, float]] = {}

    def rise_and_set(self, day_index: int, twilight: Twilight = "official") -> tuple[float, float]:
        """(sunrise, sunset) of the local day `day_index` (0 = the start date), as simulated seconds."""
        key = (day_index, twilight)
        times = self._days.get(key)
        if times is None:
            day = self.calendar.first_date + timedelta(days=day_index)
            tz = self.start.tzinfo
            morning, evening = (dawn, dusk) if twilight == "civil" else (sunrise, sunset)
            up = morning(self.observer, day, tzinfo=tz)  # type: ignore[arg-type]
            down = evening(self.observer, day, tzinfo=tz)  # type: ignore[arg-type]
            times = self._days[key] = ((up - self.start).total_seconds(), (down - self.start).total_seconds())
            forget_oldest(self._days, None if self.keep_days is None else 2 * self.keep_days)  # two twilights a day
        return times

    def is_dark(self, now: float, twilight: Twilight = "official") -> bool:
        """True from the day's sunset until the next day's sunrise."""
        day_index = int((self.calendar.start_local_s + now) // DAY_S)
        up, down = self.rise_and_set(day_index, twilight)
        return now < up or now >= down
