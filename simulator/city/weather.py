"""The city's weather: outdoor temperature, wind and night-time temperature inversions.

One hourly series for the whole city, drawn from the scenario's seed (stream "city/weather"), read
by every model that depends on the weather, linearly interpolated between hours:

- temperature: the climate normal for the date (Yangquan monthly means, approximate climate normals,
  check) + a day-to-day anomaly (AR(1), `day_to_day_sd_c`, one-day correlation 0.7) + a diurnal
  cycle (`diurnal_range_c`, warmest at 15:00) - radiative cooling on inversion nights;
- wind: log-normal AR(1) hourly, mean `wind_mean_ms`, a little windier in the afternoon, calm under
  an inversion;
- inversion nights: a night (18:00 to 11:00) with a ground inversion, more likely in the heating
  season, or forced on the dates in `inversion_nights`. Intensity ramps 0 → 1 from 18:00 to
  midnight, holds till 07:00 and breaks up by 11:00; outside the heating season it peaks at 0.5. Winter inversions in the valley trap coal smoke:
  shared/domain.md, "Air quality" (inversion episodes above 250 µg/m³ PM2.5).

`dispersion(now)` is how much the air holds what is emitted near the ground, relative to an average
hour: (2.2 m/s / wind)^0.6 x (1 + 1.2 x inversion intensity); > 1 means poor dispersion.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

from pydantic import Field

from simulator.city.calendar import CityCalendar
from simulator.fleet import StrictModel
from simulator.randomness import Stream
from simulator.recent import Recent, forget_oldest

# Yangquan monthly mean air temperature, °C, January..December (approximate climate normals; check).
YANGQUAN_MONTHLY_MEAN_C: tuple[float, ...] = (-3.6, -0.2, 6.0, 13.5, 19.5, 23.5, 24.8, 23.2, 18.5, 12.5, 4.8, -1.6)
REFERENCE_WIND_MS = 2.2
SUMMER_INVERSION_STRENGTH = 0.5  # short warm nights and strong daytime mixing: weaker inversions
HEATING_INERTIA_S = 12 * 3600.0  # buildings answer the outdoor temperature over about half a day


class WeatherSettings(StrictModel):
    mean_c: float | None = Field(default=None, ge=-40, le=45, description="mean temperature; null: Yangquan's climate normal for each date")
    diurnal_range_c: float = Field(default=10.0, ge=0, le=30, description="warmest minus coldest hour of a day")
    day_to_day_sd_c: float = Field(default=3.0, ge=0, le=15, description="spread of a day's mean around the normal")
    wind_mean_ms: float = Field(default=2.2, gt=0, le=20, description="mean wind speed, m/s")
    inversion_probability_heating: float = Field(default=0.35, ge=0, le=1, description="chance of an inversion night in the heating season")
    inversion_probability_other: float = Field(default=0.08, ge=0, le=1, description="chance of an inversion night outside it")
    inversion_nights: list[date] = Field(default_factory=list, description="evenings that always start an inversion night")


class Weather:
    """Hourly weather from simulated time 0, extended on demand (so it never depends on the run length).
    A live run keeps the last `keep_days` (at least) of hours and days; a finite run keeps all."""

    def __init__(self, settings: WeatherSettings, start: datetime, calendar: CityCalendar, rng: Stream, keep_days: int | None = None) -> None:
        self.settings = settings
        self.start = start
        self.calendar = calendar
        self.rng = rng
        self.keep_days = keep_days
        hours = None if keep_days is None else keep_days * 24
        self.temp: Recent[float] = Recent(keep=hours)
        self.wind: Recent[float] = Recent(keep=hours)
        self.inversion_intensity: Recent[float] = Recent(keep=hours)
        self.dispersion_factor: Recent[float] = Recent(keep=hours)
        self.heating_temp: Recent[float] = Recent(keep=hours)
        self._anomaly: dict[date, float] = {}
        self._inversion_night: dict[date, bool] = {}
        self._log_wind = rng.gauss(0.0, 0.45)
        self._forced = set(settings.inversion_nights)

    # -- reading the weather ---------------------------------------------------------------
    def temp_c(self, now: float) -> float:
        return self._interpolate(self.temp, now)

    def wind_ms(self, now: float) -> float:
        return self._interpolate(self.wind, now)

    def inversion(self, now: float) -> float:
        """Inversion intensity, 0 (none) .. 1 (strong)."""
        return self._interpolate(self.inversion_intensity, now)

    def dispersion(self, now: float) -> float:
        return self._interpolate(self.dispersion_factor, now)

    def heating_temp_c(self, now: float) -> float:
        """Outdoor temperature as the buildings feel it: averaged over the last ~12 h."""
        return self._interpolate(self.heating_temp, now)

    def _interpolate(self, series: Recent[float], now: float) -> float:
        position = now / 3600.0
        index = int(position)
        if index + 1 >= series.total:
            self._extend(index + 2)
        low = series.at(index)
        return low + (series.at(index + 1) - low) * (position - index)

    # -- making the weather ----------------------------------------------------------------
    def _extend(self, hours: int) -> None:
        s = self.settings
        while self.temp.total < hours:
            local = self.start + timedelta(hours=self.temp.total)
            hour = local.hour + local.minute / 60.0
            today = local.date()
            anomaly = self._day_anomaly(today)
            # The night of an evening before 11:00 belongs to yesterday's evening.
            evening = today if hour >= 18.0 else today - timedelta(days=1)
            intensity = self._night_profile(hour) if self._inversion(evening) else 0.0
            if not self.calendar.in_heating_season(evening):
                intensity *= SUMMER_INVERSION_STRENGTH
            normal = s.mean_c if s.mean_c is not None else climate_normal_c(today)
            temp = normal + anomaly + 0.5 * s.diurnal_range_c * math.cos(2 * math.pi * (hour - 15.0) / 24.0) - 3.0 * intensity
            self._log_wind = 0.85 * self._log_wind + math.sqrt(1 - 0.85**2) * 0.45 * self.rng.gauss(0.0, 1.0)
            # exp(x - 0.1): a log-normal with sd 0.45 has mean exp(0.1); this keeps the mean at wind_mean_ms.
            wind = s.wind_mean_ms * math.exp(self._log_wind - 0.1) * (1 + 0.3 * math.cos(2 * math.pi * (hour - 14.0) / 24.0)) * (1 - 0.6 * intensity)
            wind = max(wind, 0.2)
            self.temp.append(round(temp, 3))
            self.wind.append(round(wind, 3))
            self.inversion_intensity.append(intensity)
            self.dispersion_factor.append((REFERENCE_WIND_MS / max(wind, 0.5)) ** 0.6 * (1 + 1.2 * intensity))
            previous = self.heating_temp[-1] if self.heating_temp else temp
            self.heating_temp.append(previous + (temp - previous) * (1 - math.exp(-3600.0 / HEATING_INERTIA_S)))

    def _day_anomaly(self, day: date) -> float:
        if day not in self._anomaly:
            previous = self._anomaly.get(day - timedelta(days=1))
            sd = self.settings.day_to_day_sd_c
            if previous is None:
                self._anomaly[day] = self.rng.gauss(0.0, sd)
            else:
                self._anomaly[day] = 0.7 * previous + math.sqrt(1 - 0.49) * self.rng.gauss(0.0, sd)
            forget_oldest(self._anomaly, self.keep_days)  # only yesterday's is read again
        return self._anomaly[day]

    def _inversion(self, evening: date) -> bool:
        if evening not in self._inversion_night:
            heating = self.calendar.in_heating_season(evening)
            p = self.settings.inversion_probability_heating if heating else self.settings.inversion_probability_other
            draw = self.rng.random()  # drawn even when forced: forcing one night leaves the others as they were
            self._inversion_night[evening] = evening in self._forced or draw < p
            forget_oldest(self._inversion_night, self.keep_days)
        return self._inversion_night[evening]

    @staticmethod
    def _night_profile(hour: float) -> float:
        if hour >= 18.0:
            return (hour - 18.0) / 6.0
        if hour < 7.0:
            return 1.0
        if hour < 11.0:
            return (11.0 - hour) / 4.0
        return 0.0


def climate_normal_c(day: date) -> float:
    """Monthly means placed mid-month, linearly interpolated between months."""
    month_position = day.month - 1 + (day.day - 15.5) / 30.5
    low = math.floor(month_position)
    weight = month_position - low
    return YANGQUAN_MONTHLY_MEAN_C[low % 12] * (1 - weight) + YANGQUAN_MONTHLY_MEAN_C[(low + 1) % 12] * weight
