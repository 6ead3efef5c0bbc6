"""The port's device types, one module each, apart from the model they observe (simulator/port/).

`port_crane.py` (the cranes and reach stackers), `yard_block.py` (the yard's blocks), `gate_lane.py`
(the gate's lanes), `reefer.py` (the plug points), `truck_gps.py` (the corridor trucks). Each fleet
puts sensors on the first `count` items of its kind in the one shared `Port` (`model.port_of`);
`settings.PortFleet` is their base. They import the model; the model never imports them.
"""
