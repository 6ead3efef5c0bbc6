"""The `load:` section of a scenario file: what `iotsim load FILE` runs and how it judges it.

This module must not import simulator/scenario.py (which imports it).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from simulator.fleet import Duration, StrictModel
from simulator.ingest.settings import BridgeSettings, bridge_field
from simulator.load.pacing import ByConnections, ByDevices, ByRate, Pacing
from simulator.load.profile import Profile, schedule_of
from simulator.load.thresholds import parse_threshold


def _check_threshold(text: str) -> str:
    parse_threshold(text)
    return text


ThresholdText = Annotated[str, AfterValidator(_check_threshold)]


class BridgeOptions(StrictModel):
    """The ingest bridge the experiment starts: these `iotsim bridge` options, declared in
    simulator/ingest/settings.py (same limits and descriptions), plus the identity it logs in as."""

    batch_size: int = bridge_field("batch_size")
    batch_interval: float = bridge_field("batch_interval")  # a Duration: the declaration carries its parsing
    batch_quiet: float = bridge_field("batch_quiet")
    username: str | None = Field(
        default=None, min_length=1,
        description="broker user the bridge logs in as (secure profile: bridge), its password from BRIDGE_MQTT_PASSWORD "
        "or the file BRIDGE_MQTT_PASSWORD_FILE names; default: the workers' mqtt.username and password",
    )  # fmt: skip

    def settings(self, **where: Any) -> BridgeSettings:
        """The bridge's settings: these options, and `where` it connects and keeps its files."""
        return BridgeSettings(**self.model_dump(exclude={"username"}), **where)


class CapacitySearch(StrictModel):
    """`--find-capacity`: constant-rate trials, each `factor` times the last, until a threshold breaks."""

    start: float = Field(default=200.0, gt=0, description="messages/s of the first trial")
    factor: float = Field(default=1.5, gt=1, le=10, description="each next trial offers this many times more")
    max_rate: float = Field(default=100_000.0, gt=0, description="never offer more than this")
    trial: Duration = Field(default=15.0, description="how long each trial offers its rate")
    refine: int = Field(default=2, ge=0, le=10, description="bisection trials between the last rate that held and the first that broke")
    max_trials: int = Field(default=15, ge=1, le=50, description="upper bound on trials, refinement included")
    resolution: float | None = Field(
        default=None, gt=0, le=50,
        description="bisect until the last rate that held and the next that broke are within ± this % of their middle, instead of `refine` times (max_trials still bounds it)",
    )  # fmt: skip
    descend: bool = Field(default=False, description="if the first trial breaks, divide the rate by `factor` until one holds (a start near an estimate), instead of reporting no capacity")
    # A trial that broke leaves work behind (InfluxDB compacting what it just stored, a backlog being
    # written): measured here, the next trial then broke below a rate that had held before it.
    settle: Duration = Field(default=30.0, description="before each trial after the first, wait at most this long for the machine to go quiet")
    settle_cpu_percent: float = Field(default=25.0, gt=0, description="quiet: the whole machine's CPU over one second below this, in % of one core")

    @model_validator(mode="after")
    def _starts_within_max_rate(self) -> CapacitySearch:
        # A start above max_rate would run no trial at all: nothing to report, not even "none held".
        if self.start > self.max_rate:
            raise ValueError(f"start {self.start:g} msg/s is above max_rate {self.max_rate:g}: no trial could run; lower start or raise max_rate")
        return self


class LoadSection(StrictModel):
    unit: Literal["rate", "devices", "connections"] = Field(
        default="rate",
        description="the profile's target: offered messages/s, active load_probe devices, or connected load_probe devices (their fleet has connection: device)",
    )
    profile: Profile = Field(description="how the offered load changes over the experiment (its `kind` picks the shape)")
    device_rate: float = Field(default=1.0, gt=0, le=10_000, description="messages/s of each active or connected device (unit: devices, connections)")
    qos: Literal[0, 1] | None = Field(default=None, description="publish QoS; default: the scenario's mqtt.qos")
    workers: int = Field(default=1, ge=1, le=64, description="simulator processes; devices are sharded over them")
    thresholds: list[ThresholdText] = Field(default_factory=list, description="k6-like pass/fail rules (docs/load.md)")
    drain: Duration = Field(default=30.0, description="after the last stage, wait at most this long for the pipeline to catch up")
    bridge: BridgeOptions = Field(default_factory=BridgeOptions, description="the ingest bridge the experiment starts")
    capacity: CapacitySearch = Field(default_factory=CapacitySearch, description="the trials of `iotsim load --find-capacity`")
    results: str = Field(default="results", description="results directories are created under this folder")

    def pacing(self) -> Pacing:
        """How the load_probe gateways send in this experiment (the builder gives it to them)."""
        schedule = schedule_of(self.profile)
        if self.unit == "rate":
            return ByRate(schedule)
        if self.unit == "devices":
            return ByDevices(schedule, 1.0 / self.device_rate)
        return ByConnections(schedule, 1.0 / self.device_rate)
