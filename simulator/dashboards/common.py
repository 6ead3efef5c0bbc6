"""What every board shares: the dashboard frame, event annotations and the device explorer."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.models import dashboard

from simulator.dashboards.influxql import DATASOURCE, Annotation, EventAnnotation, InfluxQL
from simulator.dashboards.panels import framed, legend_table, matches

REFRESH = "10s"


def board(uid: str, title: str, description: str, tags: list[str], time_from: str = "now-6h") -> dashboard_builders.Dashboard:
    return (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["yangquan", *tags])
        .timezone("browser")
        .time(time_from, "now")
        .refresh(REFRESH)
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .readonly()
    )


def events(domain: str, exclude: tuple[str, ...] = ()) -> list[Annotation]:
    """Alarms in red and the domain's other events in blue, from the `events` measurement."""
    skip = "".join(f""" AND "kind" != '{kind}'""" for kind in exclude)
    base = f"""SELECT "text", "kind", "severity" FROM "events" WHERE "domain" = '{domain}'{skip}"""
    return [
        Annotation(EventAnnotation(f"{domain.capitalize()} alarms", f"""{base} AND "severity" = 'alarm' AND $timeFilter""", "red")),
        Annotation(EventAnnotation(f"{domain.capitalize()} events", f"""{base} AND "severity" != 'alarm' AND $timeFilter""", "blue")),
    ]


def query_variable(name: str, label: str, query: str, description: str, multi: bool = True) -> dashboard_builders.QueryVariable:
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dashboard.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
        .all_value(".*")
    )


def device_type_variable(types: list[str]) -> dashboard_builders.CustomVariable:
    return (
        dashboard_builders.CustomVariable("device_type")
        .label("Device type")
        .description("Measurement (device type) for the device explorer")
        .values(",".join(types))
        .current(dashboard.VariableOption(text=types[0], value=types[0], selected=True))
        .multi(False)
        .include_all(False)
    )


def device_variable(where: str = "") -> dashboard_builders.QueryVariable:
    condition = f" WHERE {where}" if where else ""
    return query_variable(
        "device",
        "Device",
        f'SHOW TAG VALUES FROM /^$device_type$/ WITH KEY = "device_id"{condition}',
        "Devices of the chosen type for the device explorer",
    )


def device_explorer(where: tuple[str, ...] = ()) -> timeseries.Panel:
    """Every numeric reading of the chosen devices (strings and booleans are left out by mean())."""
    conditions = " AND ".join([matches("device_id", "device"), *where, "$timeFilter"])
    query = f"SELECT mean(*) FROM /^$device_type$/ WHERE {conditions} GROUP BY time($__interval), \"device_id\" fill(none)"
    return (
        framed(
            timeseries.Panel(),
            "Device explorer: $device_type",
            "Every numeric reading of the devices chosen above (Device type, Device), averaged per interval. Units differ between readings; hover for names.",
            "short",
            width=24,
            height=9,
        )
        .line_width(1)
        .legend(legend_table())
        .with_target(InfluxQL("A", query).alias("$tag_device_id $col"))
    )
