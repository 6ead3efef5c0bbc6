"""Models of the Yangquan smart city (docs/city.md).

The shared city (`model.py`): `calendar.py`, `weather.py`, `sun.py`, `roads.py`, `data_centre.py`,
`mine.py`, configured by the scenario's `city:` section (`settings.py`). The device types, one module
each: `air_quality.py` (with `aqi.py`, HJ 633-2012, and `air_record.py`, the published air by year), `traffic_loop.py`, `street_light.py`,
`heating_substation.py`, `water_pressure.py`, `parking_lot.py`, `noise_monitor.py`,
`electricity_meter.py`, `mine_gas.py`, `dc_rack.py`. Shared by the device types: `common.py`,
`geography.py`.
"""
