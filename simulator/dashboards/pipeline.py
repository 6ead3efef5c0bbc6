"""The Pipeline health board: the simulator's and the bridge's own counters (`pipeline`
measurement), the devices' own connections (the run's device fields of `pipeline`, the bridge's
`device_status`) and load experiments (`loadtest`, written by simulator/load/live.py). Field names:
docs/stack.md, "The pipeline measurement".
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import table, timeseries

from simulator.dashboards.common import board, query_variable
from simulator.dashboards.influxql import Annotation, EventAnnotation, InfluxQL
from simulator.dashboards.panels import Step, events_table, matches, select, stat_panel, thresholds, timeseries_panel

UID = "yangquan-pipeline"
SIMULATOR = ('"component" = \'simulator\'', matches("client_id", "simulator"))
BRIDGE = ('"component" = \'bridge\'', matches("client_id", "bridge"))
STATS_PERIOD = "5s"  # how often the simulator and the bridge write a `pipeline` point
LAG_STEPS = (Step(None, "green"), Step(1000, "orange"), Step(5000, "red"))


def rate(field: str, where: tuple[str, ...]) -> str:
    """Per-second rate of a counter that only grows (restarts are skipped, not negative)."""
    return select("pipeline", f'non_negative_derivative(max("{field}"), 1s) AS "{field}"', where, ("client_id",))


def increase(field: str, where: tuple[str, ...]) -> str:
    return select("pipeline", f'non_negative_difference(max("{field}")) AS "{field}"', where, ("client_id",))


def throughput() -> timeseries.Panel:
    panel = timeseries_panel(
        "Messages per second: published vs written",
        "suffix: msg/s",
        "What the simulator published and had acknowledged by the broker, and what the bridge received and wrote to InfluxDB, per second. Written below published means a backlog is building.",
        width=24,
        height=9,
    ).interval(STATS_PERIOD)
    for ref, (field, where) in zip("ABCD", [("published", SIMULATOR), ("acknowledged", SIMULATOR), ("received", BRIDGE), ("written", BRIDGE)]):
        panel = panel.with_target(InfluxQL(ref, rate(field, where)).alias(f"{field} $tag_client_id"))
    return panel


def counter_panel(title: str, unit: str, description: str, query: str, alias: str, width: int = 8) -> timeseries.Panel:
    return timeseries_panel(title, unit, description, width=width).interval(STATS_PERIOD).with_target(InfluxQL("A", query).alias(alias))


def build() -> dashboard_builders.Dashboard:
    health = board(
        UID,
        "Pipeline health",
        "The testbed's own pipeline: simulator → MQTT → bridge → InfluxDB, and load experiments.",
        ["pipeline"],
        time_from="now-1h",
    )
    for component in ("simulator", "bridge"):  # the run variable (load experiments) follows below
        health = health.with_variable(
            query_variable(
                component,
                component.capitalize(),
                f'SHOW TAG VALUES FROM "pipeline" WITH KEY = "client_id" WHERE "component" = \'{component}\'',
                f"The {component}'s MQTT client id (one per scenario run or bridge)",
            )
        )
    health = health.with_variable(
        query_variable("run", "Load run", 'SHOW TAG VALUES FROM "loadtest" WITH KEY = "run"', "Load experiments (`iotsim load`) by results directory name")
    )
    faults = 'SELECT "text", "kind", "severity" FROM "events" WHERE "domain" = \'pipeline\' AND $timeFilter'
    health = health.annotation(Annotation(EventAnnotation("Injected faults", faults, "orange")))
    health = health.with_row(dashboard_builders.Row("Throughput")).with_panel(throughput())
    health = health.with_panel(
        stat_panel(
            "Written per second",
            "Points the bridge wrote to InfluxDB per second, averaged over the time range.",
            rate("written", BRIDGE),
            "suffix: msg/s",
            (Step(None, "blue"),),
            calc="mean",
            interval=STATS_PERIOD,
        )
    )
    health = health.with_panel(
        stat_panel(
            "Dead letters",
            "Messages the bridge could not store (bad JSON, wrong types, oversize): written to its dead-letter file, never to InfluxDB.",
            select("pipeline", 'max("dead_letters") AS "dead_letters"', BRIDGE),
            "short",
            (Step(None, "green"), Step(1, "red")),
        )
    )
    health = health.with_panel(
        stat_panel(
            "End-to-end lag",
            "Age of the newest message in the bridge's last write: device timestamp to stored (real-time runs; a replayed scenario's old timestamps show as large lags).",
            select("pipeline", 'last("lag_ms") AS "lag_ms"', BRIDGE),
            "ms",
            LAG_STEPS,
        )
    )
    health = health.with_panel(
        stat_panel(
            "Awaiting acknowledgement",
            "QoS 1 messages the simulator has published and the broker not yet acknowledged.",
            select("pipeline", 'last("pending") AS "pending"', SIMULATOR),
            "short",
            (Step(None, "green"), Step(1000, "orange")),
        )
    )
    health = health.with_row(dashboard_builders.Row("Bridge"))
    health = health.with_panel(
        counter_panel(
            "End-to-end lag over time",
            "ms",
            "Device timestamp to InfluxDB write of the newest message of each batch.",
            select("pipeline", 'mean("lag_ms") AS "lag_ms"', BRIDGE, ("client_id",)),
            "$tag_client_id",
        ).thresholds(thresholds(LAG_STEPS))
    )
    health = health.with_panel(
        counter_panel(
            "Batch size", "short", "Points in the bridge's last InfluxDB write (batches close by size or by time).",
            select("pipeline", 'mean("batch_size") AS "batch_size"', BRIDGE, ("client_id",)), "$tag_client_id",
        )  # fmt: skip
    )
    health = health.with_panel(
        counter_panel(
            "Dead letters and InfluxDB retries", "short",
            "New dead letters and retried InfluxDB writes (connection errors, 5xx) per interval.",
            increase("dead_letters", BRIDGE), "dead letters $tag_client_id",
        ).with_target(InfluxQL("B", increase("retries", BRIDGE)).alias("retries $tag_client_id"))  # fmt: skip
    )
    health = health.with_panel(
        counter_panel(
            "Bridge disk spool", "short",
            "Points in the bridge's disk spool: acknowledged to the broker, not yet in InfluxDB (it fills while InfluxDB is down).",
            select("pipeline", 'max("spool_points") AS "spooled"', BRIDGE, ("client_id",)), "$tag_client_id", width=6,
        )  # fmt: skip
    )
    health = health.with_panel(
        counter_panel(
            "Seq gaps", "short",
            "Messages that never reached the bridge: jumps in a device's seq (each device numbers its messages 0, 1, 2 ...), "
            "less late arrivals filling them. A silent device (dropout) leaves no gap; anything above 0 was lost in transit.",
            select("pipeline", 'max("seq_gaps") AS "seq_gaps"', BRIDGE, ("client_id",)), "$tag_client_id", width=6,
        ).thresholds(thresholds((Step(None, "green"), Step(1, "red"))))  # fmt: skip
    )
    health = health.with_panel(
        counter_panel(
            "Type conflicts", "short",
            "Readings stored under a typed name ({name}_string, {name}_float, {name}_boolean) because their value was of another kind "
            "than the field's: the type InfluxDB holds, else the one the device type declares (simulator/schemas/readings.json). "
            "Kept, not refused; anything above 0 is a device sending what its type does not declare.",
            select("pipeline", 'max("type_conflicts") AS "type_conflicts"', BRIDGE, ("client_id",)), "$tag_client_id", width=6,
        ).thresholds(thresholds((Step(None, "green"), Step(1, "orange"))))  # fmt: skip
    )
    health = health.with_panel(
        counter_panel(
            "Sessions lost, client id takeovers", "short",
            "Times the broker had no session for the bridge where there had been one (what was queued for it is gone), and "
            "connections the broker closed within seconds: another client using the bridge's client id.",
            select("pipeline", 'max("sessions_lost") AS "sessions_lost"', BRIDGE, ("client_id",)), "sessions lost $tag_client_id", width=6,
        ).with_target(InfluxQL("B", select("pipeline", 'max("takeovers") AS "takeovers"', BRIDGE, ("client_id",))).alias("takeovers $tag_client_id"))  # fmt: skip
    )
    health = health.with_row(dashboard_builders.Row("Simulator"))
    health = health.with_panel(
        counter_panel(
            "Awaiting acknowledgement, held offline", "short",
            "QoS 1 messages published and not yet acknowledged by the broker, and messages held in the outbox "
            "(memory, then disk) while the broker was unreachable.",
            select("pipeline", 'max("pending") AS "pending"', SIMULATOR, ("client_id",)), "pending $tag_client_id", width=12,
        ).with_target(InfluxQL("B", select("pipeline", 'max("buffered") AS "held"', SIMULATOR, ("client_id",))).alias("held $tag_client_id"))  # fmt: skip
    )
    health = health.with_panel(
        counter_panel(
            "Broker disconnects, client id takeovers", "short",
            "Times the simulator lost its broker connection (it reconnects with backoff and resends), and connections the broker "
            "closed within 10 s of accepting them: another client using the run's client id (at 3 in 30 s the run stops).",
            increase("disconnects", SIMULATOR), "disconnects $tag_client_id", width=12,
        ).with_target(InfluxQL("B", select("pipeline", 'max("takeovers") AS "takeovers"', SIMULATOR, ("client_id",))).alias("takeovers $tag_client_id"))  # fmt: skip
    )
    health = health.with_row(dashboard_builders.Row("Device connections"))
    for panel in device_connections():
        health = health.with_panel(panel)
    health = health.with_row(dashboard_builders.Row("Load experiments (iotsim load)"))
    for panel in load_experiments():
        health = health.with_panel(panel)
    return health


def device_connections() -> list[timeseries.Panel]:
    """Fleets with their own connections (`connection: device | gateway`): the run's session figures
    and the statuses the bridge stored."""
    # A status point with online = false: a will the broker fired (stamped with the start of the
    # connection that died: MQTT fixes a will at CONNECT) or a device's death on a clean close.
    wills = 'SELECT count("online") AS "offline" FROM "device_status" WHERE "online" = false AND $timeFilter GROUP BY time($__interval) fill(none)'
    return [
        counter_panel(
            "Connected devices", "short",
            "Devices (or gateways) of the run's fleets that hold their own MQTT connection and are connected now: "
            "it drops to 0 in a broker outage and climbs back as they reconnect by their fleet's reconnect policy.",
            select("pipeline", 'max("connected") AS "connected"', SIMULATOR, ("client_id",)), "connected $tag_client_id",
        ),
        counter_panel(
            "Connects per second", "suffix: /s",
            "Accepted CONNACKs per second of the devices' own connections, first connects and reconnects (a reconnect storm after "
            "an outage), and failed attempts per second (the broker down or refusing).",
            rate("connects", SIMULATOR), "connects $tag_client_id",
        ).with_target(InfluxQL("B", rate("connect_failures", SIMULATOR)).alias("failed $tag_client_id")),  # fmt: skip
        counter_panel(
            "Wills fired", "short",
            "device_status points with online = false per interval, from the bridge: last wills the broker fired for devices "
            "that went silent (plotted at the start of the connection that died, the will's ts) and the deaths devices "
            "publish when a run closes them cleanly.",
            wills, "offline statuses",
        ),
    ]


LOAD_RUN = ('"phase" = \'interval\'', matches("run", "run"))


def load_experiments() -> list[timeseries.Panel | table.Panel]:
    """The `loadtest` points `iotsim load` writes: one per second of the run, one summary at the end."""
    rates = select("loadtest", 'mean("offered") AS "offered", mean("published") AS "published", mean("written") AS "written"', LOAD_RUN, ("run",))
    latency = select(
        "loadtest",
        'max("latency_p50_ms") AS "p50", max("latency_p99_ms") AS "p99", max("latency_max_ms") AS "max"',
        LOAD_RUN,
        ("run",),
    )
    verdicts = (
        'SELECT "offered_rate", "written_rate", "p99_latency_ms", "loss", "duplicates", "passed" FROM "loadtest" '
        "WHERE \"phase\" = 'summary' AND $timeFilter GROUP BY \"run\""
    )
    return [
        timeseries_panel(
            "Load: offered vs achieved",
            "suffix: msg/s",
            "Messages per second the profile offered, the workers published and the bridge wrote, second by second.",
        )
        .interval("1s")
        .with_target(InfluxQL("A", rates).alias("$col $tag_run")),
        timeseries_panel(
            "Load: end-to-end latency",
            "ms",
            "Device timestamp to InfluxDB write, per second of the run: median, 99th percentile and maximum (HDR histograms).",
        )
        .interval("1s")
        .thresholds(thresholds((Step(None, "green"), Step(250, "red"))))
        .with_target(InfluxQL("A", latency).alias("$col $tag_run")),
        events_table(
            "Load: verdicts",
            "Each experiment's summary: offered and written rates, p99 latency, loss, duplicates and whether every threshold held.",
            verdicts,
            width=24,
            height=6,
        ),
    ]
