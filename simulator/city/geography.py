"""Where city devices are: Yangquan's districts and a site inside one.

Centres are the district seats, approximate (check against a map before relying on them): Chengqu
and Kuangqu are the central urban districts around 37.86 N, 113.58 E (shared/domain.md, "The
place"), Jiaoqu surrounds them, Pingding county lies to the south-east and Yu county to the north.
A device's site is drawn once from its own random stream, within `radius_deg` of its district's
centre, and goes on the wire as the `lat`/`lon` tags (static, one value per device: no extra series).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.randomness import Stream

YANGQUAN_LAT = 37.86
YANGQUAN_LON = 113.58


@dataclass(frozen=True)
class DistrictArea:
    lat: float
    lon: float
    radius_deg: float  # sites are drawn within this distance of the centre


DISTRICT_AREAS: dict[str, DistrictArea] = {
    "Chengqu": DistrictArea(37.857, 113.598, 0.015),
    "Kuangqu": DistrictArea(37.868, 113.555, 0.015),
    "Jiaoqu": DistrictArea(37.905, 113.575, 0.035),
    "Pingding": DistrictArea(37.793, 113.630, 0.025),
    "Yuxian": DistrictArea(38.086, 113.412, 0.025),
}


def site_in(district: str, rng: Stream) -> tuple[float, float]:
    """A point in the district: uniform over a disc round its centre."""
    area = DISTRICT_AREAS[district]
    radius = area.radius_deg * math.sqrt(rng.random())
    angle = 2 * math.pi * rng.random()
    # A degree of longitude is shorter than a degree of latitude by cos(latitude).
    return area.lat + radius * math.sin(angle), area.lon + radius * math.cos(angle) / math.cos(math.radians(area.lat))


def location_tags(district: str, lat: float, lon: float) -> dict[str, str]:
    return {"district": district, "lat": f"{lat:.5f}", "lon": f"{lon:.5f}"}
