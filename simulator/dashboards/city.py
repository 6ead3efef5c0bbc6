"""The City board: air quality on a map and over time, traffic by road, heat, mines, the data centre
and the city's other services. Measurement and field names are those of simulator/city/ (docs/city.md).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import geomap, table, timeseries
from grafana_foundation_sdk.models import dashboard

from simulator.city.dc_rack import ASHRAE_RECOMMENDED_MAX_C
from simulator.city.mine import ALARM_PCT, CO_LIMIT_PPM, POWER_CUT_PCT
from simulator.dashboards.common import board, device_explorer, device_type_variable, device_variable, events, query_variable
from simulator.dashboards.influxql import InfluxQL
from simulator.dashboards.panels import Step, Trend, events_table, matches, select, station_map, timeseries_panel

UID = "yangquan-city"
YANGQUAN = (37.86, 113.58)  # map centre (shared/domain.md)
CITY_TYPES = [
    "air_quality", "traffic_loop", "street_light", "heating_substation", "water_pressure",
    "parking_lot", "noise_monitor", "electricity_meter", "water_meter", "mine_gas", "dc_rack",
]  # fmt: skip
IN_DISTRICT = (matches("district", "district"),)

# HJ 633-2012 AQI categories: excellent, good, light, moderate, heavy, severe (official colours).
AQI_STEPS = (
    Step(None, "#00e400"), Step(51, "#ffff00"), Step(101, "#ff7e00"),
    Step(151, "#ff0000"), Step(201, "#99004c"), Step(301, "#7e0023"),
)  # fmt: skip
GAS_STEPS = (Step(None, "green"), Step(ALARM_PCT, "orange"), Step(POWER_CUT_PCT, "red"))
CO_STEPS = (Step(None, "green"), Step(CO_LIMIT_PPM, "red"))
INLET_STEPS = (Step(None, "green"), Step(ASHRAE_RECOMMENDED_MAX_C, "orange"), Step(32.0, "red"))  # ASHRAE A1 allowable 32 °C

# The trends, row by row. Every panel here is filtered by the district variable.
AIR = [
    Trend("AQI by district", "air_quality", ("aqi",), "none",
          "Real-time AQI (HJ 633-2012, the highest pollutant sub-index), mean of the district's stations; coloured bands at the category boundaries.",
          by="district", thresholds=AQI_STEPS, width=12, height=10),
    Trend("PM2.5 and PM10", "air_quality", ("pm25", "pm10"), "conμgm3",
          "Particulate matter by district, hourly-average µg/m³ as the stations report it. Heating season and inversion nights raise both.",
          by="district", width=8),
    Trend("SO2, NO2 and O3", "air_quality", ("so2", "no2", "o3"), "conμgm3",
          "Gaseous pollutants by district in µg/m³. SO2 follows coal heating; NO2 follows traffic; O3 peaks in the afternoon.",
          by="district", width=8),
    Trend("CO", "air_quality", ("co",), "conmgm3", "Carbon monoxide by district in mg/m³.", by="district", width=8),
]  # fmt: skip
TRAFFIC = [
    Trend("Traffic flow by road", "traffic_loop", ("flow_vph",), "suffix: veh/h",
          "Vehicles per hour over the loop detectors of each road; peaks in the morning and evening rush hours.", by="road", width=8),
    Trend("Traffic speed by road", "traffic_loop", ("speed_kmh",), "velocitykmh",
          "Mean spot speed per road. An incident (annotation) drops it on the road and its neighbours.", by="road", width=8),
    Trend("Loop occupancy by road", "traffic_loop", ("occupancy_pct",), "percent",
          "Share of time a vehicle is over the loop; above ~25 % the road is congested.", by="road", width=8,
          thresholds=(Step(None, "green"), Step(25, "orange"), Step(40, "red"))),
]  # fmt: skip
MINES = [
    Trend("Mine gas: CH4 at the working faces", "mine_gas", ("ch4_pct",), "percent",
          f"Highest methane reading per face. Alarm at {ALARM_PCT} %, power to the face cut at {POWER_CUT_PCT} % (Coal Mine Safety Regulations).",
          by="face", aggregate="max", thresholds=GAS_STEPS),
    Trend("Mine gas: CO at the working faces", "mine_gas", ("co_ppm",), "ppm",
          f"Highest carbon monoxide reading per face; the limit is {CO_LIMIT_PPM:g} ppm.", by="face", aggregate="max", thresholds=CO_STEPS),
]  # fmt: skip
SERVICES = [
    Trend("Water supply pressure", "water_pressure", ("pressure_mpa",), "suffix: MPa",
          "Mean network pressure per district; a leak shows as a drop (annotation).", by="district", width=8),
    Trend("Parking occupancy", "parking_lot", ("occupancy_pct",), "percent",
          "Mean share of occupied spaces per district.", by="district", width=8,
          thresholds=(Step(None, "green"), Step(90, "orange"), Step(100, "red"))),
    Trend("Noise by road", "noise_monitor", ("laeq_dba",), "suffix: dB(A)",
          "Equivalent continuous sound level LAeq beside each road (GB 3096-2008 limits 55-70 dB(A) by zone).", by="road", width=8,
          thresholds=(Step(None, "green"), Step(70, "red"))),
    Trend("Street lighting power", "street_light", ("power_w",), "watt",
          "Mean power per lighting circuit by district: on between sunset and sunrise, dimmed after midnight.", by="district", width=8),
    Trend("Electricity demand", "electricity_meter", ("power_kw",), "kwatt",
          "Mean metered demand per district.", by="district", width=8),
    Trend("Electricity voltage", "electricity_meter", ("voltage_v",), "volt",
          "Mean supply voltage per district (nominal 220 V).", by="district", width=8),
    Trend("Household water use", "water_meter", ("flow_lph",), "suffix: L/h",
          "Mean flow per household water meter by district: peaks at 07:00 and 19-21:00, almost none at night, more on hot days.",
          by="district"),
]  # fmt: skip
METER_PERIOD = "1h"  # the household water meters' default cadence: each meter reports once per bucket
DATA_CENTRE = [
    Trend("Data centre: rack inlet temperature", "dc_rack", ("inlet_temp_c",), "celsius",
          f"Hottest rack inlet per hall. ASHRAE recommends at most {ASHRAE_RECOMMENDED_MAX_C:g} °C (allowable 32 °C); a cooling fault (annotation) raises it.",
          by="hall", aggregate="max", thresholds=INLET_STEPS),
    Trend("Data centre: rack power", "dc_rack", ("power_kw",), "kwatt",
          "Mean IT power per rack by hall; follows the data centre's load.", by="hall"),
    Trend("Data centre: PUE", "dc_rack", ("site_pue",), "none",
          "Power usage effectiveness of the site (total power / IT power): higher in summer, when cooling works harder.", by="district"),
]  # fmt: skip


def aqi_map() -> geomap.Panel:
    query = select(
        "air_quality", 'last("aqi") AS "aqi", last("pm25") AS "pm25"', IN_DISTRICT, ("device_id", "district", "lat", "lon"), bucketed=False
    )
    return station_map(
        "AQI by station",
        "Each station's latest real-time AQI (HJ 633-2012) at its location, coloured by category.",
        query,
        "aqi",
        "none",
        AQI_STEPS,
        YANGQUAN,
        zoom=10,
        height=10,
    )


def heating() -> timeseries.Panel:
    panel = timeseries_panel(
        "Heat load vs outdoor temperature",
        "kwatt",
        "Mean heat load of the district heating substations per district (left) against the outdoor temperature (right, °C): load rises as it gets colder.",
    )
    load = select("heating_substation", 'mean("heat_load_kw") AS "heat_load_kw"', IN_DISTRICT, ("district",))
    outdoor = select("heating_substation", 'mean("outdoor_temp_c") AS "outdoor"', IN_DISTRICT)
    return (
        panel.with_target(InfluxQL("A", load).alias("heat load $tag_district"))
        .with_target(InfluxQL("B", outdoor).alias("outdoor temperature"))
        .override_by_query(
            "B",
            [
                dashboard.DynamicConfigValue(id_val="unit", value="celsius"),
                dashboard.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                dashboard.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
            ],
        )
    )


def city_water_use() -> timeseries.Panel:
    """The registers' rise, summed: each meter's m³/h between buckets (at least its cadence long, so
    every bucket holds one report of each meter), added over the district's meters."""
    per_meter = select("water_meter", 'non_negative_derivative(last("volume_m3"), 1h) AS "m3h"', IN_DISTRICT, ("device_id", "district"))
    query = f'SELECT sum("m3h") AS "m3h" FROM ({per_meter}) WHERE $timeFilter GROUP BY time($__interval), "district" fill(none)'
    return (
        timeseries_panel(
            "City water use by district",
            "suffix: m³/h",
            "Water the district's households use, from the rise of their meters' registers (volume_m3) summed over the meters; "
            "buckets of at least an hour, the meters' cadence (the latest bucket fills as the meters report).",
        )
        .interval(METER_PERIOD)
        .with_target(InfluxQL("A", query).alias("$tag_district"))
    )


def devices_offline() -> table.Panel:
    """Devices whose latest status (birth or last will, docs/message-contract.md) is offline, as of the
    end of the time range: InfluxQL cannot filter on an aggregate, so the latest per device is a subquery."""
    latest = 'SELECT last("online") AS "online" FROM "device_status" WHERE time <= ${__to}ms GROUP BY "device_id"'
    query = f'SELECT "device_id", "online" FROM ({latest}) WHERE "online" = false'
    return events_table(
        "Devices offline",
        "Devices with their own MQTT connection whose latest status, at the end of the time range, is offline: their last will "
        "(the broker published it when the device vanished without a DISCONNECT) came after their last birth. "
        "Time: the status's ts (a will's is when that connection began: MQTT fixes it at CONNECT). "
        "Every district (a status carries no district).",
        query,
        width=24,
    ).with_transformation(dashboard.DataTransformerConfig(id_val="filterFieldsByName", options={"include": {"names": ["Time", "device_id"]}}))


def build() -> dashboard_builders.Dashboard:
    city = board(
        UID,
        "Yangquan City",
        "Yangquan's city sensors: air quality, traffic, heat, mine gas, the cloud data centre and city services (water, parking, noise, lights, household meters).",
        ["city"],
    )
    city = city.with_variable(
        query_variable("district", "District", 'SHOW TAG VALUES FROM "air_quality" WITH KEY = "district"', "Districts of Yangquan")
    )
    city = city.with_variable(device_type_variable(CITY_TYPES)).with_variable(device_variable(matches("district", "district")))
    for annotation in events("city"):
        city = city.annotation(annotation)
    city = city.with_row(dashboard_builders.Row("Air quality")).with_panel(aqi_map())
    for trend in AIR:
        city = city.with_panel(trend.panel(IN_DISTRICT))
    city = city.with_row(dashboard_builders.Row("Traffic"))
    for trend in TRAFFIC:
        city = city.with_panel(trend.panel(IN_DISTRICT))
    city = city.with_row(dashboard_builders.Row("Heat, mines and the data centre")).with_panel(heating())
    for trend in [*MINES, *DATA_CENTRE]:
        # The data centre is one campus: its panels ignore the district filter.
        city = city.with_panel(trend.panel(() if trend.measurement == "dc_rack" else IN_DISTRICT))
    city = city.with_row(dashboard_builders.Row("City services"))
    for trend in SERVICES:
        city = city.with_panel(trend.panel(IN_DISTRICT))
    city = city.with_panel(city_water_use())
    city = city.with_row(dashboard_builders.Row("Device connections")).with_panel(devices_offline())
    city = city.with_row(dashboard_builders.Row("Device explorer")).with_panel(device_explorer((matches("district", "district"),)))
    return city
