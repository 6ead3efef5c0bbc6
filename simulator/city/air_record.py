"""Yangquan's air in the published record: the annual level of each pollutant by year, with its source.

The air-quality stations' baseline follows the simulated year (or `city.air.year`): each pollutant's
level for the year is read from `RECORD` and the model's shape (heating season, weather, inversions,
traffic; simulator/city/air_quality.py) is scaled so that its annual statistic lands on it.

The statistics are the bulletins' (GB 3095-2012, HJ 663-2013): annual means for PM2.5, PM10, SO2 and
NO2 (µg/m³); CO is the 95th percentile of the daily means (mg/m³); O3 the 90th percentile of the
daily maximum 8-hour means (µg/m³).

What was found (docs/city.md, "The air against the published record", has the table and the URLs):
- Yangquan (`yq-2016-2020`): the city's monitoring centre gives the 2016-2020 means (SO2 35, NO2 42,
  PM10 97, PM2.5 52, CO 2.1, O3 173) and says SO2, PM10 and PM2.5 fell year on year; no single year
  of the seed's era was found, so the five-year mean stands at the period's middle year, 2018.
- Yangquan (`yq-2023`): PM2.5 38 in 2023, 7.3 % below 2022 (so 2022: 41), a sixth fall in a row.
- Yangquan (`cnemc-2015`): PM2.5 54 in 2015, the mean of the year's 365 daily city values of the national
  network (CNEMC, as published in the R package SpTe2M's `pm25_dat`), computed here: no bulletin for 2015
  was found. The same data give January 2015's days above 75 µg/m³ (13 of 31, `JANUARY_DAYS_OVER_75`).
  Its 2016 values are not used: 74 days are 0 and most are not the one-decimal daily means of 2014-2015.
- Shanxi, the 11 cities' mean, where Yangquan's figure was not found: PM2.5 2016-2017 (`sx-2017`),
  2020 (`sx-2023`, from "19.6 % below 2020"), 2024 (`sx-2024`); PM10, SO2, NO2, CO, O3 2021-2023
  (`sx-2022`, `sx-2023`; 2021 from 2022's year-on-year changes), SO2 2020, PM10 and SO2 2024.
- Between two published years a level is interpolated linearly; before the first it holds the first,
  after the latest the latest; years before 2015 hold 2015's, years after 2024 hold 2024's.
- Good days (daily AQI <= 100, `GOOD_DAYS`): Yangquan 72.3 % in 2023 (`yq-2023`), a figure the levels
  were not fitted to, so a run's share of good days checks the model independently; Shanxi's 71.9 % in
  2020 (`sx-2020`) and 74.2 % in 2024 (`sx-2024`) are printed beside, not tested.
- The months: Yangquan's particulates peak in January and are lowest in August (2017-2019 hourly data,
  `wang-2021`); Shanxi's 11 cities' PM2.5 2015-2019 was 95 µg/m³ in January, 34 in August, winter about
  twice summer (`zhang-2022`).
No bulletin found gives Yangquan's monthly means or its January days above 75 µg/m³ PM2.5 (searches for
issue 21 found none either: docs/city.md lists what was looked for); January 2015's count comes from the
daily data (`cnemc-2015`), and is printed beside the model's, not tested: the model's January is more
peaked than 2015's (docs/city.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pydantic import Field

from simulator.city.aqi import daily_aqi
from simulator.fleet import StrictModel

FIRST_YEAR = 2015
LATEST_YEAR = 2024
POLLUTANTS: tuple[str, ...] = ("pm25", "pm10", "so2", "no2", "co", "o3")
STATISTICS: dict[str, str] = {
    "pm25": "annual mean",
    "pm10": "annual mean",
    "so2": "annual mean",
    "no2": "annual mean",
    "co": "95th percentile of daily means",
    "o3": "90th percentile of daily maximum 8-h means",
}


@dataclass(frozen=True)
class Source:
    id: str
    title: str
    publisher: str
    published: str  # date of the article or bulletin
    url: str


SOURCES: dict[str, Source] = {
    source.id: source
    for source in (
        Source(
            "yq-2016-2020", "article by 常娟 on Yangquan's ambient air quality in the 13th Five-Year Plan period, 2016-2020",
            "山西省阳泉生态环境监测中心 (Yangquan ecological environment monitoring centre)", "2022-02-28",
            "http://m.zgkjsz.com/page/2022/0228/11285794.shtml",
        ),
        Source(
            "yq-2023", "report from Yangquan on the city's 2023 environment (记者 郭强)", "山西经济日报 (Shanxi Economic Daily)", "2024-06-05",
            "http://epaper.sxrb.com/shtml/sxjjrb/20240605/983449.shtml",
        ),
        Source(
            "sx-2017", "圆满完成国务院下达任务 (Shanxi's 2017 PM2.5)", "山西日报 (Shanxi Daily)", "2018-02-22",
            "https://big5.cri.cn/gate/big5/sx.cri.cn/2018-02-22/894b4033-a8b6-2a66-f2b2-5221c02e4843.html",
        ),
        Source(
            "sx-2022", "2022年 山西生态环境多项指标创有监测记录以来最优 (Shanxi's 2022 environment status)", "山西经济日报 (Shanxi Economic Daily), 张剑雯", "2023-06-01",
            "http://www.cqbaolai.com/article-49141-1.html",
        ),
        Source(
            "sx-2023", "Shanxi's 2023 ecological environment status, press conference of 4 June 2024 (记者 杨杰英)", "中国新闻网 (China News Service)", "2024-06-04",
            "https://shanyouwang.com/7724sdtx.shtml",
        ),
        Source(
            "sx-2024", "2024年山西优良天数比例为74.2%,同比提升2.9个百分点", "山西发布 (Shanxi government information office)", "2025-05-22",
            "http://www.jintiankansha.me/t/jhlcrKYm8N",
        ),
        Source(
            "wang-2021", "王雁 et al., 太行山两侧污染物传输对横谷城市气溶胶的影响分析 (Yangquan's PM10 and PM2.5, hourly, 2017-2019), 环境科学 42(9): 4104-4115",
            "山西省气象科学研究所 (Shanxi Institute of Meteorological Sciences)", "2021-09",
            "http://www.hjkx.ac.cn/hjkx/ch/html/20210904.htm",
        ),
        Source(
            "zhang-2022", "张可可 et al., 基于小波变换的山西省PM2.5污染特征及影响因素 (Shanxi's 11 cities, daily PM2.5 2015-2019), 环境科学 43(3): 1226-1234",
            "华北电力大学 (North China Electric Power University)", "2022-03",
            "https://www.hjkx.ac.cn/hjkx/ch/html/20220310.htm",
        ),
        Source(
            "cnemc-2015", "pm25_dat: daily PM2.5 of 183 Chinese cities 2014-2016, collected by the China National Environmental Monitoring Centre (CNEMC); R package SpTe2M 1.0.3",
            "Kai Yang, Peihua Qiu (CRAN), the data CNEMC's", "2023-09-29",
            "https://CRAN.R-project.org/package=SpTe2M",
        ),
        Source(
            "sx-2020", "山西省大气环境质量持续改善 (Shanxi's 2020 air: good days 71.9 %, SO2 at grade I for the first time)",
            "太原新闻网 (Taiyuan news), from the Shanxi ecology and environment department", "2021-01-17",
            "http://m.hlwyqxz.com/shehui/32940.html",
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Level:
    year: int
    value: float
    source: str  # a key of SOURCES
    basis: str  # whose figure it is and how it was read


def _levels(source: str, basis: str, **by_pollutant: tuple[int, float]) -> dict[str, Level]:
    return {pollutant: Level(year, value, source, basis) for pollutant, (year, value) in by_pollutant.items()}


_YQ_MEAN = _levels("yq-2016-2020", "Yangquan, 2016-2020 mean, placed at 2018", pm25=(2018, 52), pm10=(2018, 97), so2=(2018, 35), no2=(2018, 42), co=(2018, 2.1), o3=(2018, 173))
_SX_2022 = _levels("sx-2022", "Shanxi", pm10=(2022, 74), so2=(2022, 12), no2=(2022, 31), co=(2022, 1.4), o3=(2022, 166))
_SX_2021 = _levels("sx-2022", "Shanxi, from 2022's change on 2021", pm10=(2021, 74), so2=(2021, 15), no2=(2021, 31), co=(2021, 1.5), o3=(2021, 169))
_SX_2023 = _levels("sx-2023", "Shanxi", pm10=(2023, 74), so2=(2023, 12), no2=(2023, 31), co=(2023, 1.4), o3=(2023, 168))

# Per pollutant, the published years in order.
RECORD: dict[str, tuple[Level, ...]] = {
    "pm25": (
        Level(2015, 54, "cnemc-2015", "Yangquan, mean of the 2015 daily city values (53.9), computed here"),
        Level(2016, 60, "sx-2017", "Shanxi, from 2017's -1.7 % on 2016"),
        Level(2017, 59, "sx-2017", "Shanxi"),
        _YQ_MEAN["pm25"],
        Level(2020, 46, "sx-2023", "Shanxi, from 2023's -19.6 % on 2020"),
        Level(2022, 41, "yq-2023", "Yangquan, from 2023's -7.3 % on 2022"),
        Level(2023, 38, "yq-2023", "Yangquan"),
        Level(2024, 36, "sx-2024", "Shanxi"),
    ),
    "pm10": (_YQ_MEAN["pm10"], _SX_2021["pm10"], _SX_2022["pm10"], _SX_2023["pm10"], Level(2024, 69, "sx-2024", "Shanxi")),
    "so2": (
        _YQ_MEAN["so2"],
        Level(2020, 19, "sx-2023", "Shanxi, from 2023's -36.8 % on 2020"),
        _SX_2021["so2"], _SX_2022["so2"], _SX_2023["so2"],
        Level(2024, 10, "sx-2024", "Shanxi"),
    ),
    "no2": (_YQ_MEAN["no2"], _SX_2021["no2"], _SX_2022["no2"], _SX_2023["no2"]),
    "co": (_YQ_MEAN["co"], _SX_2021["co"], _SX_2022["co"], _SX_2023["co"]),
    "o3": (_YQ_MEAN["o3"], _SX_2021["o3"], _SX_2022["o3"], _SX_2023["o3"]),
}  # fmt: skip


# The share of days (%) whose daily AQI is at most GOOD_AQI ("优良天数比例"): Yangquan's where found, else Shanxi's.
GOOD_DAYS: tuple[Level, ...] = (
    Level(2020, 71.9, "sx-2020", "Shanxi"),
    Level(2023, 72.3, "yq-2023", "Yangquan"),
    Level(2024, 74.2, "sx-2024", "Shanxi"),
)
GOOD_AQI = 100  # the top of "good" (HJ 633-2012)
# January days whose city daily mean PM2.5 is above 75 µg/m³ (PM25_DAILY_LIMIT), of 31: where a source gives them.
JANUARY_DAYS_OVER_75: tuple[Level, ...] = (
    Level(2015, 13, "cnemc-2015", "Yangquan, counted here in the daily city values (January mean 70.5 µg/m³)"),
)
PEAK_MONTH = 1  # Yangquan's particulates are highest in January (wang-2021)


class AirSettings(StrictModel):
    year: int | None = Field(
        default=None, ge=1900, le=2200,
        description=f"the year whose published air the city has (held at {FIRST_YEAR} before, {LATEST_YEAR} after); null: the simulated date's year",
    )  # fmt: skip


def record_year(year: int) -> int:
    """The year of the record that stands for `year`: held at the first before it, the latest after."""
    return min(max(year, FIRST_YEAR), LATEST_YEAR)


def annual_level(pollutant: str, year: int) -> float:
    """The pollutant's level in the record's statistic (STATISTICS) for `year`."""
    levels = RECORD[pollutant]
    year = record_year(year)
    if year <= levels[0].year:
        return float(levels[0].value)
    for low, high in zip(levels, levels[1:]):
        if year <= high.year:
            weight = (year - low.year) / (high.year - low.year)
            return low.value + (high.value - low.value) * weight
    return float(levels[-1].value)


def published(pollutant: str, year: int) -> Level | None:
    """The record's entry for exactly that year, if one was published."""
    return next((level for level in RECORD[pollutant] if level.year == year), None)


def published_good_days(year: int) -> Level | None:
    """The record's share of good days for exactly that year, if one was published."""
    return next((level for level in GOOD_DAYS if level.year == year), None)


def published_january_days(year: int) -> Level | None:
    """The record's count of January days above 75 µg/m³ PM2.5 for exactly that year, if one was found."""
    return next((level for level in JANUARY_DAYS_OVER_75 if level.year == year), None)


def basis_of(pollutant: str, year: int) -> str:
    """How the record gives `year`'s level: the published entry, or interpolated/held between them."""
    levels = RECORD[pollutant]
    level = published(pollutant, year)
    if level is not None:
        return f"{level.source}: {level.basis}"
    if year < levels[0].year:
        return f"held at {levels[0].year} ({levels[0].source})"
    if year > levels[-1].year:
        return f"held at {levels[-1].year} ({levels[-1].source})"
    low = max(level.year for level in levels if level.year < year)
    high = min(level.year for level in levels if level.year > year)
    return f"interpolated {low}-{high}"


@dataclass(frozen=True)
class CityStatistics:
    """A run's air as the bulletins report a year (city values: the mean over stations)."""

    record: dict[str, float]  # each pollutant in its record statistic (STATISTICS)
    monthly_means: dict[str, tuple[float | None, ...]]  # January..December (None: no readings that month)
    january_days: int
    january_days_over_75: int  # January days whose city mean PM2.5 is above 75 µg/m³ (China's grade II)
    good_days_pct: float  # share of days whose daily AQI (HJ 633-2012) is at most GOOD_AQI


LOCAL_OFFSET_S = 8 * 3600.0  # Beijing time: bulletins' days and months
EPOCH = date(1970, 1, 1)
PM25_DAILY_LIMIT = 75.0


def percentile(values: list[float], p: float) -> float:
    """HJ 663-2013's percentile: rank 1 + (n - 1) p in the sorted values, interpolated."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def city_statistics(samples: list[tuple[float, dict[str, float]]]) -> CityStatistics:
    """Statistics of station readings `(ts_ms, readings)`: hourly city means (all stations reporting in
    the hour), daily means of those, then each pollutant's record statistic over the days."""
    hourly: dict[int, dict[str, list[float]]] = {}
    for ts_ms, readings in samples:
        hour = int((ts_ms / 1000.0 + LOCAL_OFFSET_S) // 3600.0)
        bucket = hourly.setdefault(hour, {name: [] for name in POLLUTANTS})
        for name in POLLUTANTS:
            bucket[name].append(readings[name])
    hours = {hour: {name: sum(values) / len(values) for name, values in bucket.items()} for hour, bucket in sorted(hourly.items())}
    daily: dict[int, dict[str, list[float]]] = {}
    o3_8h: dict[int, list[float]] = {}
    for hour, means in hours.items():
        day = hour // 24
        values = daily.setdefault(day, {name: [] for name in POLLUTANTS})
        for name in POLLUTANTS:
            values[name].append(means[name])
        # The 8-h running mean of O3 over the hours of the last 8 that have readings.
        window = [hours[h]["o3"] for h in range(hour - 7, hour + 1) if h in hours]
        o3_8h.setdefault(day, []).append(sum(window) / len(window))
    day_means = {day: {name: sum(v) / len(v) for name, v in values.items()} for day, values in daily.items()}
    record = {name: sum(means[name] for means in day_means.values()) / len(day_means) for name in POLLUTANTS}
    record["co"] = percentile([means["co"] for means in day_means.values()], 0.95)
    record["o3"] = percentile([max(values) for values in o3_8h.values()], 0.90)
    day_aqis = [daily_aqi(day_means[day], max(o3_8h[day]), max(daily[day]["o3"])) for day in day_means]
    good_days_pct = 100.0 * sum(aqi <= GOOD_AQI for aqi in day_aqis) / len(day_aqis)
    months: dict[int, dict[str, list[float]]] = {}
    for day, means in day_means.items():
        month = _month_of(day)
        for name in POLLUTANTS:
            months.setdefault(month, {n: [] for n in POLLUTANTS})[name].append(means[name])
    monthly = {
        name: tuple(sum(months[m][name]) / len(months[m][name]) if m in months else None for m in range(1, 13)) for name in POLLUTANTS
    }
    january = [means["pm25"] for day, means in day_means.items() if _month_of(day) == 1]
    return CityStatistics(record, monthly, len(january), sum(value > PM25_DAILY_LIMIT for value in january), good_days_pct)


def _month_of(day: int) -> int:
    return (EPOCH + timedelta(days=day)).month
