"""The building blocks of scenario sections: strict frozen models, durations, districts.

The base of every fleet section is `FleetConfig` in simulator/device_type.py, with the device-type
contract.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema, model_validator
from pydantic.json_schema import JsonSchemaValue

from simulator.units import DURATION_PATTERN, SIGNED_DURATION_PATTERN, UNTIL_STOPPED, format_duration, format_run_duration, parse_duration, parse_run_duration

# What a scenario file may write for a Duration (JSON Schema of the input, not of the float it becomes).
DURATION_TEXT_JSON_SCHEMA: JsonSchemaValue = {
    "type": "string",
    "pattern": DURATION_PATTERN,
    "description": "e.g. '90s', '5m', '1h30m', '30d' (units ms, s, m, h, d, w)",
}
DURATION_JSON_SCHEMA: JsonSchemaValue = {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "description": "seconds"}, DURATION_TEXT_JSON_SCHEMA]}
DURATION_OR_ZERO_JSON_SCHEMA: JsonSchemaValue = {
    "anyOf": [{"type": "number", "minimum": 0, "description": "seconds"}, {"enum": ["0", "0s"]}, DURATION_TEXT_JSON_SCHEMA]
}
SIGNED_DURATION_JSON_SCHEMA: JsonSchemaValue = {
    "anyOf": [
        {"type": "number", "not": {"const": 0}, "description": "seconds, negative: behind"},
        {"type": "string", "pattern": SIGNED_DURATION_PATTERN, "description": "e.g. '30s', '-2m' (units ms, s, m, h, d, w)"},
    ]
}

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(DURATION_JSON_SCHEMA, mode="validation"),
    Field(description="seconds; written as '90s', '5m', '1h', '30d' or a number of seconds"),
]



def parse_duration_or_zero(value: object) -> float:
    """A duration that may be zero (nothing of it): 0, "0" or "0s", else as a Duration."""
    return 0.0 if value in (0, 0.0, "0", "0s") else parse_duration(value)


DurationOrZero = Annotated[
    float,
    BeforeValidator(parse_duration_or_zero),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(DURATION_OR_ZERO_JSON_SCHEMA, mode="validation"),
    Field(description="seconds, or 0; written as '0s', '90s', '5m', '1h' or a number of seconds"),
]

RUN_DURATION_JSON_SCHEMA: JsonSchemaValue = {
    "anyOf": [*DURATION_JSON_SCHEMA["anyOf"], {"const": UNTIL_STOPPED, "description": "a paced run (numeric speed) that lasts until it is stopped"}]
}

RunDuration = Annotated[
    float,
    BeforeValidator(parse_run_duration),
    PlainSerializer(format_run_duration, return_type=str),
    WithJsonSchema(RUN_DURATION_JSON_SCHEMA, mode="validation"),
    Field(description=f"seconds ('90s', '5m', '1h', '30d' or a number), or '{UNTIL_STOPPED}' (infinite: a paced run that stops on SIGTERM or Ctrl-C)"),
]
"""How long a run lasts: a Duration, or infinity written "until-stopped" (a live run)."""

District = Literal["Chengqu", "Kuangqu", "Jiaoqu", "Pingding", "Yuxian"]
DISTRICTS: tuple[str, ...] = ("Chengqu", "Kuangqu", "Jiaoqu", "Pingding", "Yuxian")


class StrictModel(BaseModel):
    """Scenario sections: unknown keys are errors, and a loaded scenario never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconnectPolicy(StrictModel):
    """What a fleet's devices do after losing the broker (their own connections: `connection: device`
    or `gateway`), so a naive fixed-interval storm can be rehearsed against jittered backoff."""

    policy: Literal["exponential", "fixed"] = Field(default="exponential", description="exponential: the wait doubles from `min` up to `max` with each failed attempt; fixed: `min` every time")
    min: Duration = Field(default=1.0, description="the first wait (fixed: every wait)")
    max: Duration = Field(default=60.0, description="the longest wait (exponential)")
    jitter: Literal["full", "none"] = Field(default="full", description="full: each wait drawn uniformly from [0, that], from the device's own stream; none: exactly that")

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ReconnectPolicy:
        if self.min > self.max:
            raise ValueError(f"min ({format_duration(self.min)}) is longer than max ({format_duration(self.max)})")
        return self
