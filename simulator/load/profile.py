"""Load profiles: how the offered load (messages/s, or active devices) changes over an experiment.

Every profile is a list of stages; a stage goes linearly from the previous target to its own target
over its duration (k6's ramping executors), so `constant`, `step`, `ramp`, `spike` and `soak` are
shorthands for common stage lists. `Schedule` turns the stages into the functions the probes and the
report need: the target at a time, the cumulative offered messages, and its inverse (when the n-th
message is due).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema

from simulator.fleet import DURATION_OR_ZERO_JSON_SCHEMA, Duration, StrictModel, parse_duration_or_zero
from simulator.units import format_duration

Pause = Annotated[
    float, BeforeValidator(parse_duration_or_zero),  # 0: no such phase
    PlainSerializer(format_duration, return_type=str), WithJsonSchema(DURATION_OR_ZERO_JSON_SCHEMA, mode="validation")
]
Target = Annotated[float, Field(ge=0, le=10_000_000, description="messages/s (unit: rate) or active devices (unit: devices)")]


@dataclass(frozen=True)
class Segment:
    """Target going linearly from `begin` to `end` over `duration` seconds."""

    duration: float
    begin: float
    end: float


class Stage(StrictModel):
    duration: Duration
    target: Target


class Stages(StrictModel):
    """k6-style stages: from `start`, each stage moves linearly to its target over its duration."""

    kind: Literal["stages"]
    start: Target = 0.0
    stages: list[Stage] = Field(min_length=1, max_length=1000, description="in order; each goes from the last target to its own")

    def segments(self) -> list[Segment]:
        segments, level = [], self.start
        for stage in self.stages:
            segments.append(Segment(stage.duration, level, stage.target))
            level = stage.target
        return segments


class Constant(StrictModel):
    """The same target for the whole duration."""

    kind: Literal["constant"]
    target: Target
    duration: Duration

    def segments(self) -> list[Segment]:
        return [Segment(self.duration, self.target, self.target)]


class Step(StrictModel):
    """`steps` levels: start, start + step, ..., each held for `hold`."""

    kind: Literal["step"]
    start: Target
    step: Target
    steps: int = Field(ge=1, le=1000, description="how many levels")
    hold: Duration = Field(description="how long each level is held")

    def segments(self) -> list[Segment]:
        return [Segment(self.hold, level, level) for level in (self.start + n * self.step for n in range(self.steps))]


class Ramp(StrictModel):
    """From `start` to `target` linearly over `duration`, then `hold` at the target (0 = no hold)."""

    kind: Literal["ramp"]
    start: Target = 0.0
    target: Target
    duration: Duration
    hold: Pause = Field(default=0.0, description="how long the target is held after the ramp; 0: not at all")

    def segments(self) -> list[Segment]:
        segments = [Segment(self.duration, self.start, self.target)]
        if self.hold:
            segments.append(Segment(self.hold, self.target, self.target))
        return segments


class Spike(StrictModel):
    """`base` for `before`, a jump to `peak` held for `spike`, back to `base` for `after`."""

    kind: Literal["spike"]
    base: Target
    peak: Target
    before: Duration
    spike: Duration
    after: Duration

    def segments(self) -> list[Segment]:
        return [
            Segment(self.before, self.base, self.base),
            Segment(self.spike, self.peak, self.peak),
            Segment(self.after, self.base, self.base),
        ]


class Soak(StrictModel):
    """A long constant load after a `warmup` ramp from zero: finds leaks and slow drifts."""

    kind: Literal["soak"]
    target: Target
    duration: Duration
    warmup: Pause = Field(default=0.0, description="ramp from zero to the target before the soak; 0: none")

    def segments(self) -> list[Segment]:
        segments = [Segment(self.warmup, 0.0, self.target)] if self.warmup else []
        return segments + [Segment(self.duration, self.target, self.target)]


Profile = Annotated[Union[Constant, Step, Ramp, Spike, Soak, Stages], Field(discriminator="kind")]


class Schedule:
    """A piecewise-linear target over time, and the cumulative count it offers."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = [segment for segment in segments if segment.duration > 0]
        self.starts: list[float] = []  # time each segment starts
        self.totals: list[float] = []  # cumulative target-seconds at each segment's start
        time = total = 0.0
        for segment in self.segments:
            self.starts.append(time)
            self.totals.append(total)
            time += segment.duration
            total += segment.duration * (segment.begin + segment.end) / 2
        self.duration = time
        self.total = total
        self.peak = max((max(s.begin, s.end) for s in self.segments), default=0.0)

    def _segment(self, t: float) -> int:
        return max(bisect.bisect_right(self.starts, t) - 1, 0)

    def target(self, t: float) -> float:
        """The target at time `t` (0 outside the schedule)."""
        if t < 0 or t >= self.duration:
            return 0.0
        index = self._segment(t)
        segment, s = self.segments[index], t - self.starts[index]
        return segment.begin + (segment.end - segment.begin) * s / segment.duration

    def spans_above(self, level: float) -> list[tuple[float, float]]:
        """The time spans [on, off) in which the target exceeds `level`, in order (unit: connections:
        when device `level` is connected). Within a segment the target is linear, so each is exact."""
        spans: list[tuple[float, float]] = []
        for start, segment in zip(self.starts, self.segments):
            begin, end = segment.begin, segment.end
            if begin == end:
                part = (0.0, 1.0) if begin > level else None
            else:
                cross = (level - begin) / (end - begin)  # where the target equals the level, as a share of the segment
                if end > begin:  # rising: above after the crossing
                    part = (max(cross, 0.0), 1.0) if cross < 1.0 else None
                else:  # falling: above before it
                    part = (0.0, min(cross, 1.0)) if cross > 0.0 else None
            if part is None:
                continue
            on, off = start + part[0] * segment.duration, start + part[1] * segment.duration
            if spans and spans[-1][1] >= on:
                spans[-1] = (spans[-1][0], off)  # goes on from the segment before
            else:
                spans.append((on, off))
        return spans

    def cumulative(self, t: float) -> float:
        """Integral of the target from 0 to `t`: messages offered by then (unit: rate)."""
        if t <= 0:
            return 0.0
        if t >= self.duration:
            return self.total
        index = self._segment(t)
        segment, s = self.segments[index], t - self.starts[index]
        slope = (segment.end - segment.begin) / segment.duration
        return self.totals[index] + segment.begin * s + slope * s * s / 2

    def time_of(self, count: float) -> float:
        """The time at which `cumulative` reaches `count`; infinity if it never does."""
        if count <= 0:
            return 0.0
        if count > self.total:
            return math.inf
        index = max(bisect.bisect_left(self.totals, count) - 1, 0)
        while index + 1 < len(self.totals) and self.totals[index + 1] < count:
            index += 1
        segment, rest = self.segments[index], count - self.totals[index]
        slope = (segment.end - segment.begin) / segment.duration
        # Solve begin*s + slope*s^2/2 = rest; this form is stable when slope is 0 or tiny.
        root = math.sqrt(max(segment.begin * segment.begin + 2 * slope * rest, 0.0))
        if segment.begin + root == 0:
            return self.starts[index] + segment.duration
        return min(self.starts[index] + 2 * rest / (segment.begin + root), self.starts[index] + segment.duration)


def schedule_of(profile: Constant | Step | Ramp | Spike | Soak | Stages) -> Schedule:
    return Schedule(profile.segments())
