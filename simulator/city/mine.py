"""The coal mines' working faces: methane released by coal cutting, diluted by ventilation, and gas
emissions (outbursts) that push it over the safety thresholds.

Coal Mine Safety Regulations (煤矿安全规程), shared/domain.md "Coal-mine gas": at the working face
CH4 alarm at 1.0 %, power cut at 1.5 %, power restored below 1.0 %; CO limit 24 ppm.

A face's CH4 is background x activity x a slow wander (AR(1), log-sd 0.15, 30 min) + outbursts.
Activity follows the three-shift day (三八制): cutting 08:00-24:00 (1.0), maintenance 00:00-08:00
(0.5); while the power is cut the shearer stands and activity falls to 0.3. An outburst rises
linearly to `peak_pct` over `rise`, then decays exponentially with `decay`. Outbursts come at random
(`outbursts_per_day` per face, peak log-normal with median 1.2 %) and at the times listed in
`gas_events`.
"""

from __future__ import annotations

import math

from pydantic import Field

from simulator.fleet import Duration, StrictModel

ALARM_PCT = 1.0
POWER_CUT_PCT = 1.5
RESTORE_PCT = 1.0
CO_LIMIT_PPM = 24.0


class GasEvent(StrictModel):
    device: str = Field(description="the monitor at the face, e.g. 'gas-0001'")
    at: Duration = Field(description="simulated time after the start when the emission begins")
    peak_pct: float = Field(default=1.8, gt=0, le=10, description="CH4 added at the peak, % by volume")
    rise: Duration = Field(default=120.0, description="time to the peak")
    decay: Duration = Field(default=900.0, description="time constant of the fall after the peak")


class MineSettings(StrictModel):
    outbursts_per_day: float = Field(default=0.2, ge=0, le=50, description="random gas emissions per face per day")
    gas_events: list[GasEvent] = Field(default_factory=list, description="gas emissions at simulated times")


def shift_activity(hour: float) -> float:
    """Coal cutting on the two production shifts, maintenance on the night shift."""
    return 0.5 if hour < 8.0 else 1.0


def outburst_pct(event: GasEvent, now: float) -> float:
    since = now - event.at
    if since <= 0:
        return 0.0
    if since < event.rise:
        return event.peak_pct * since / event.rise
    return event.peak_pct * math.exp(-(since - event.rise) / event.decay)
