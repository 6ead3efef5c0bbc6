"""Panel kinds the boards use, built with grafana-foundation-sdk, and the InfluxQL they run.

Most panels are a `Trend`: one row of a table (measurement, fields, unit, title, description) that
becomes a time series panel with one line per tag value. The special panels (a map, a state
timeline, tables, stats) have their own small functions. Every panel gets a title, a description,
the provisioned InfluxDB data source and a unit, which tests/test_dashboards.py checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, geomap, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.models import common, dashboard

from simulator.dashboards.influxql import DATASOURCE, InfluxQL

WIDTH = 24  # Grafana's grid


@dataclass(frozen=True)
class Step:
    """A threshold: from `value` upwards the colour is `color` (value None = the base colour)."""

    value: float | None
    color: str


def select(measurement: str, expression: str, where: tuple[str, ...] = (), by: tuple[str, ...] = (), bucketed: bool = True) -> str:
    """An InfluxQL SELECT over the dashboard's time range, bucketed by $__interval unless `bucketed` is False."""
    conditions = " AND ".join([*where, "$timeFilter"])
    groups = (["time($__interval)"] if bucketed else []) + [f'"{tag}"' for tag in by]
    query = f'SELECT {expression} FROM "{measurement}" WHERE {conditions}'
    if groups:
        query += " GROUP BY " + ", ".join(groups)
    if bucketed:
        query += " fill(none)"
    return query


def matches(tag: str, variable: str) -> str:
    """A condition on a tag from a template variable (single, multi or All: Grafana writes a regex)."""
    return f'"{tag}" =~ /^${variable}$/'


def thresholds(steps: tuple[Step, ...]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=step.value, color=step.color) for step in steps])
    )


def legend_table() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.RIGHT)
        .calcs(["mean", "max"])
    )


@dataclass(frozen=True)
class Trend:
    """A time series panel: `aggregate(field)` per $__interval, one line per value of the tag `by`.

    `fields` may name several readings of the measurement (one query each, same unit). Thresholds
    are drawn as dashed lines (e.g. an alarm level) when given.
    """

    title: str
    measurement: str
    fields: tuple[str, ...]
    unit: str
    description: str
    by: str = "device_id"
    aggregate: str = "mean"
    thresholds: tuple[Step, ...] = ()
    width: int = 12
    height: int = 8
    where: tuple[str, ...] = ()

    def alias(self, name: str) -> str:
        return f"$tag_{self.by}" if len(self.fields) == 1 else f"{name} $tag_{self.by}"

    def panel(self, where: tuple[str, ...] = ()) -> timeseries.Panel:
        panel = timeseries_panel(self.title, self.unit, self.description, self.width, self.height)
        for index, name in enumerate(self.fields):
            query = select(self.measurement, f'{self.aggregate}("{name}") AS "{name}"', (*where, *self.where), (self.by,))
            panel = panel.with_target(InfluxQL(chr(ord("A") + index), query).alias(self.alias(name)))
        if self.thresholds:
            panel = (
                panel.thresholds(thresholds(self.thresholds))
                .thresholds_style(common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED))
            )
        return panel


# Every kind of panel the boards use: each takes the same common settings.
AnyPanel = TypeVar("AnyPanel", timeseries.Panel, geomap.Panel, statetimeline.Panel, table.Panel, stat.Panel, bargauge.Panel)


def framed(panel: AnyPanel, title: str, description: str, unit: str, width: int, height: int) -> AnyPanel:
    """What every panel has (tests/test_dashboards.py checks it): title, description, the InfluxDB data source, unit, size."""
    return panel.title(title).description(description).datasource(DATASOURCE).unit(unit).span(width).height(height)


def timeseries_panel(title: str, unit: str, description: str, width: int = 12, height: int = 8) -> timeseries.Panel:
    """An empty time series panel for queries written out by hand."""
    return (
        framed(timeseries.Panel(), title, description, unit, width, height)
        .line_width(1)
        .fill_opacity(0)
        .legend(legend_table())
    )


def station_map(
    title: str, description: str, query: str, value: str, unit: str, steps: tuple[Step, ...], centre: tuple[float, float], zoom: int, width: int = 12, height: int = 12
) -> geomap.Panel:
    """Markers at each row's `lat`/`lon` (tags or fields), coloured and sized by `value` through `steps`."""
    layer = (
        common_builders.MapLayerOptions()
        .type("markers")
        .name(value)
        .location(
            common_builders.FrameGeometrySource().mode(common.FrameGeometrySourceMode.COORDS).latitude("lat").longitude("lon")
        )
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": value, "fixed": "dark-green"},
                    "opacity": 0.8,
                    "size": {"fixed": 8, "min": 6, "max": 16, "field": value},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                    "text": {"field": value, "mode": "field"},
                    "textConfig": {"fontSize": 10, "offsetX": 0, "offsetY": -14, "textAlign": "center", "textBaseline": "middle"},
                },
            }
        )
        .tooltip(True)
    )
    # InfluxDB returns tags as strings; the map needs numbers for lat and lon.
    to_numbers = dashboard.DataTransformerConfig(
        id_val="convertFieldType",
        options={
            "conversions": [
                {"targetField": "lat", "destinationType": "number"},
                {"targetField": "lon", "destinationType": "number"},
            ],
            "fields": {},
        },
    )
    return (
        framed(geomap.Panel(), title, description, unit, width, height)
        .with_target(InfluxQL("A", query).table())
        .with_transformation(to_numbers)
        .thresholds(thresholds(steps))
        .color_scheme(dashboard_builders.FieldColor().mode(dashboard.FieldColorModeId.THRESHOLDS))
        # The SDK types lat/lon as int; Grafana takes any number.
        .view(geomap.MapViewConfig().id("coords").lat(centre[0]).lon(centre[1]).zoom(zoom))  # type: ignore[arg-type]
        .basemap(common_builders.MapLayerOptions().type("default").name("Basemap"))
        .layers([layer])
    )


def state_timeline(
    title: str, description: str, target: InfluxQL, states: dict[str, tuple[str, str]], keep: tuple[str, ...] = (), width: int = 24, height: int = 6
) -> statetimeline.Panel:
    """Rows of states over time; `states` maps a raw value to (text, colour), `keep` names the only fields shown."""
    mapping = dashboard.ValueMap(
        options={raw: dashboard.ValueMappingResult(text=text, color=color, index=index) for index, (raw, (text, color)) in enumerate(states.items())}
    )
    panel = (
        framed(statetimeline.Panel(), title, description, "none", width, height)
        .with_target(target)
        .mappings([mapping])
        .show_value(common.VisibilityMode.AUTO)
        .merge_values(True)
        .row_height(0.8)
        .fill_opacity(80)
    )
    if keep:
        panel = panel.with_transformation(
            dashboard.DataTransformerConfig(id_val="filterFieldsByName", options={"include": {"names": list(keep)}})
        )
    return panel


def events_table(title: str, description: str, query: str, width: int = 12, height: int = 8) -> table.Panel:
    """The latest rows of a table query (newest first)."""
    return (
        framed(table.Panel(), title, description, "none", width, height)
        .with_target(InfluxQL("A", query).table())
        .sort_by([common_builders.TableSortByFieldState().display_name("Time").desc(True)])
    )


def stat_panel(
    title: str,
    description: str,
    query: str,
    unit: str,
    steps: tuple[Step, ...],
    calc: str = "lastNotNull",
    width: int = 6,
    height: int = 5,
    alias: str | None = None,
    interval: str | None = None,
) -> stat.Panel:
    target = InfluxQL("A", query)
    if alias is not None:
        target = target.alias(alias)
    panel = (
        framed(stat.Panel(), title, description, unit, width, height)
        .with_target(target)
        .thresholds(thresholds(steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs([calc]).values(False))
    )
    return panel if interval is None else panel.interval(interval)


def gauge_bars(
    title: str, description: str, query: str, alias: str, unit: str, steps: tuple[Step, ...], maximum: float, width: int = 12, height: int = 8
) -> bargauge.Panel:
    """One bar per series: its latest value against `maximum`."""
    return (
        framed(bargauge.Panel(), title, description, unit, width, height)
        .min(0)
        .max(maximum)
        .with_target(InfluxQL("A", query).alias(alias))
        .thresholds(thresholds(steps))
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
