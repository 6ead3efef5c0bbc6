"""InfluxQL targets and annotations for grafana-foundation-sdk, which ships no InfluxDB query type.

`InfluxQLQuery` is the JSON Grafana's InfluxDB data source (InfluxQL mode) saves for a raw query;
it is registered with the SDK's runtime so `Dashboard.from_json` reads our panels' targets back
as this class. `EventAnnotation` is an annotation as Grafana's InfluxDB plug-in saves one: its
`target` holds the InfluxQL query and which columns are the text and the tags (the plug-in's
`prepareAnnotation` keeps a target that has a `query`; the SDK's generic annotation target only
models the Grafana data source's fields, so these are added here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

DATASOURCE_TYPE = "influxdb"
DATASOURCE_UID = "influxdb-yangquan"
"""The provisioned data source (dashboards/provisioning/datasources/influxdb.yaml)."""

DATASOURCE = dashboard.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


@dataclass
class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL query of a panel."""

    ref_id: str
    query: str
    result_format: str = "time_series"  # or "table"
    alias: str | None = None
    hide: bool = False

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "rawQuery": True,
            "query": self.query,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        if self.hide:
            payload["hide"] = True
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        if data.get("rawQuery") is not True or not isinstance(data.get("query"), str):
            raise ValueError(f"target {data.get('refId')!r} is not a raw InfluxQL query")
        return cls(
            ref_id=data["refId"],
            query=data["query"],
            result_format=data.get("resultFormat", "time_series"),
            alias=data.get("alias"),
            hide=data.get("hide", False),
        )


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder for panels' `with_target`: `InfluxQL("A", 'SELECT ...').alias("$tag_district")`."""

    def __init__(self, ref_id: str, query: str) -> None:
        self._internal = InfluxQLQuery(ref_id=ref_id, query=query)

    def build(self) -> InfluxQLQuery:
        return self._internal

    def alias(self, alias: str) -> Self:
        self._internal.alias = alias
        return self

    def table(self) -> Self:
        self._internal.result_format = "table"
        return self


cogruntime.register_dataquery_variant(cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE, from_json_hook=InfluxQLQuery.from_json))


class EventAnnotation(dashboard.AnnotationQuery):
    """Annotations from an InfluxQL query: each row's time, `text_column` as the text, tags from `tags_column`."""

    def __init__(self, name: str, query: str, icon_color: str, text_column: str = "text", tags_column: str = "kind,severity") -> None:
        super().__init__(name=name, datasource=DATASOURCE, enable=True, icon_color=icon_color)
        self.target = dashboard.AnnotationTarget(limit=100, match_any=False, tags=[], type_val="tags")
        self.query = query
        self.text_column = text_column
        self.tags_column = tags_column

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload["target"] = {
            **self.target.to_json(),
            "refId": "Anno",
            "fromAnnotations": True,
            "queryType": "tags",
            "rawQuery": True,
            "query": self.query,
            "textColumn": self.text_column,
            "tagsColumn": self.tags_column,
        }
        return payload


class Annotation(cogbuilder.Builder[dashboard.AnnotationQuery]):
    def __init__(self, annotation: EventAnnotation) -> None:
        self._internal = annotation

    def build(self) -> dashboard.AnnotationQuery:
        return self._internal
