"""The building blocks of scenario sections: strict frozen models, durations, districts.

The base of every fleet section is `FleetConfig` in simulator/device_type.py, with the device-type
contract.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from simulator.units import format_duration, parse_duration

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    Field(description="seconds; written as '90s', '5m', '1h', '30d' or a number of seconds"),
]

District = Literal["Chengqu", "Kuangqu", "Jiaoqu", "Pingding", "Yuxian"]
DISTRICTS: tuple[str, ...] = ("Chengqu", "Kuangqu", "Jiaoqu", "Pingding", "Yuxian")


class StrictModel(BaseModel):
    """Scenario sections: unknown keys are errors, and a loaded scenario never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
