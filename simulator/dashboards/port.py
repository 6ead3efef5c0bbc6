"""The Port board: the Shanxi (Yangquan) international inland port's yard, cranes, gate, trains,
reefers, trucks and customs. Measurement and field names are those of simulator/port/ (docs/port.md).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import statetimeline, timeseries
from grafana_foundation_sdk.models import dashboard as dashboard_model

from simulator.dashboards.common import board, device_explorer, device_type_variable, device_variable, events
from simulator.dashboards.influxql import InfluxQL
from simulator.dashboards.panels import Step, Trend, events_table, gauge_bars, select, state_timeline, station_map, stat_panel, timeseries_panel

UID = "yangquan-port"
PORT_TYPES = ["port_crane", "yard_block", "gate_lane", "reefer", "truck_gps"]
CORRIDOR = (38.6, 115.6)  # between Yangquan and Tianjin Port
UTILISATION_STEPS = (Step(None, "green"), Step(0.8, "orange"), Step(0.9, "red"))

YARD = [
    Trend("Yard occupancy by block", "yard_block", ("utilisation",), "percentunit",
          "Occupied share of each block's TEU capacity (stacks x tiers); above 80 % re-handling rises, above 90 % the yard is congested.",
          by="block", thresholds=UTILISATION_STEPS),
]  # fmt: skip
GATE = [
    Trend("Gate queue per lane", "gate_lane", ("queue_length",), "short",
          "Trucks waiting for a lane of each lane's direction (the approach road's shared queue), highest in the interval.",
          by="lane", aggregate="max", width=8, thresholds=(Step(None, "green"), Step(10, "orange"), Step(20, "red"))),
    Trend("Gate service time per lane", "gate_lane", ("service_time_s",), "s",
          "Time the last truck spent in the lane: OCR of plate and container number, RFID, seal and damage check (~1-3 min).",
          by="lane", width=8),
]  # fmt: skip
TRAIN_STATES = {
    "train_arrival": ("arrived: unloading", "blue"),
    "train_unloading": ("unloaded: loading exports", "orange"),
    "train_departure": ("departed for Tianjin Port", "green"),
}


def crane_moves() -> timeseries.Panel:
    query = select("port_crane", 'non_negative_derivative(max("moves"), 1h) AS "moves_per_hour"', by=("crane",))
    return (
        timeseries_panel(
            "Crane moves per hour",
            "suffix: moves/h",
            "Container moves per hour of each rail-mounted gantry (RMG, ~20-30/h) and reach stacker (RS, ~12-20/h).",
            width=8,
        )
        .interval("1m")
        .with_target(InfluxQL("A", query).alias("$tag_crane"))
    )


def crane_utilisation() -> timeseries.Panel:
    """Share of a crane's status samples that found it moving: each sample counts 1 (moving) or 0 (idle)."""
    moving = 'SELECT "power_kw" * 0 + 1 AS "moving" FROM "port_crane" WHERE "status" = \'moving\' AND $timeFilter'
    idle = 'SELECT "power_kw" * 0 AS "moving" FROM "port_crane" WHERE "status" = \'idle\' AND $timeFilter'
    query = f'SELECT mean("moving") AS "utilisation" FROM ({moving}), ({idle}) WHERE $timeFilter GROUP BY time($__interval), "crane" fill(none)'
    return (
        timeseries_panel(
            "Crane utilisation",
            "percentunit",
            "Share of each crane's status samples (one per cadence) that found it moving a container.",
            width=8,
        )
        .interval("15m")
        .min(0)
        .max(1)
        .with_target(InfluxQL("A", query).alias("$tag_crane"))
    )


def crane_status() -> statetimeline.Panel:
    query = 'SELECT "status" FROM "port_crane" WHERE $timeFilter GROUP BY "crane"'
    panel = state_timeline(
        "Crane status",
        "Each crane's reported status over time: moving a container or idle.",
        InfluxQL("A", query).alias("$tag_crane"),
        {"moving": ("moving", "green"), "idle": ("idle", "transparent")},
        width=8,
        height=8,
    )
    return panel


def trains() -> statetimeline.Panel:
    query = 'SELECT "text", "kind" FROM "events" WHERE "domain" = \'port\' AND "kind" =~ /^train_/ AND $timeFilter'
    return state_timeline(
        "Train timeline",
        "Block trains from and to Tianjin Port at the rail siding: arrival (then unloading), unloaded (then loading exports), departure.",
        InfluxQL("A", query).table(),
        TRAIN_STATES,
        keep=("Time", "kind"),
        height=5,
    )


def reefers_in_alarm() -> timeseries.Panel:
    query = select("reefer", 'count("supply_temp_c") AS "in_alarm"', ('"alarm" = true',))
    excess = (
        'SELECT max("excess") AS "above_setpoint" FROM '
        '(SELECT "supply_temp_c" - "setpoint_c" AS "excess" FROM "reefer" WHERE $timeFilter) '
        "WHERE $timeFilter GROUP BY time($__interval) fill(none)"
    )
    return (
        timeseries_panel(
            "Reefers: alarms and worst excursion",
            "short",
            "Reefer readings reporting an alarm per interval (left) and the largest supply temperature above setpoint among plugged reefers (right, °C); a reefer unplugged for a move drifts.",
        )
        .with_target(InfluxQL("A", query).alias("readings in alarm"))
        .with_target(InfluxQL("B", excess).alias("worst excursion above setpoint"))
        .override_by_query(
            "B",
            [
                dashboard_model.DynamicConfigValue(id_val="unit", value="celsius"),
                dashboard_model.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        )
    )


def build() -> dashboard_builders.Dashboard:
    port = board(
        UID,
        "Yangquan Inland Port",
        "The Shanxi (Yangquan) international inland port: yard, cranes, gate, block trains, reefers, trucks on the corridor and customs.",
        ["port"],
    )
    port = port.with_variable(device_type_variable(PORT_TYPES)).with_variable(device_variable())
    for annotation in events("port", exclude=("gate_ocr",)):
        port = port.annotation(annotation)
    port = port.with_row(dashboard_builders.Row("Yard and cranes"))
    port = port.with_panel(
        stat_panel(
            "Yard utilisation",
            "Mean occupied share of the yard blocks' capacity, latest value.",
            select("yard_block", 'mean("utilisation") AS "utilisation"'),
            "percentunit",
            UTILISATION_STEPS,
            width=4,
            height=8,
        )
    )
    port = port.with_panel(
        gauge_bars(
            "Yard blocks now",
            "Each block's latest occupancy against its capacity.",
            select("yard_block", 'last("utilisation") AS "utilisation"', by=("block",)),
            "$tag_block",
            "percentunit",
            UTILISATION_STEPS,
            maximum=1.0,
            width=8,
        )
    )
    for trend in YARD:
        port = port.with_panel(trend.panel())
    port = port.with_panel(crane_moves()).with_panel(crane_utilisation()).with_panel(crane_status())
    port = port.with_row(dashboard_builders.Row("Rail and gate")).with_panel(trains())
    for trend in GATE:
        port = port.with_panel(trend.panel())
    port = port.with_panel(
        timeseries_panel("Trucks through the gate per hour", "suffix: trucks/h", "Trucks served per hour by each lane.", width=8)
        .interval("1m")
        .with_target(InfluxQL("A", select("gate_lane", 'non_negative_derivative(max("trucks_served"), 1h) AS "per_hour"', by=("lane",))).alias("$tag_lane"))
    )
    port = port.with_row(dashboard_builders.Row("Reefers, trucks and customs")).with_panel(reefers_in_alarm())
    port = port.with_panel(
        events_table(
            "Reefer alarms",
            "The latest reefer alarms and clearances: plug point, container, temperature and setpoint.",
            'SELECT "text", "temp_c", "setpoint_c" FROM "events" WHERE "kind" =~ /^reefer_alarm/ AND $timeFilter ORDER BY time DESC LIMIT 100',
        )
    )
    port = port.with_panel(
        station_map(
            "Trucks on the Yangquan-Tianjin corridor",
            "Each corridor truck's latest GPS position and speed.",
            select("truck_gps", 'last("lat") AS "lat", last("lon") AS "lon", last("speed_kmh") AS "speed_kmh"', by=("truck",), bucketed=False),
            "speed_kmh",
            "velocitykmh",
            (Step(None, "red"), Step(20, "orange"), Step(50, "green")),
            CORRIDOR,
            zoom=6,
        )
    )
    port = port.with_panel(
        events_table(
            "Customs holds and releases",
            "Containers selected for customs inspection and their release, newest first.",
            'SELECT "text", "container", "held_h" FROM "events" WHERE "kind" =~ /^customs_/ AND $timeFilter ORDER BY time DESC LIMIT 100',
            height=12,
        )
    )
    port = port.with_row(dashboard_builders.Row("Device explorer")).with_panel(device_explorer())
    return port
