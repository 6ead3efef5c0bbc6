"""The Shanxi (Yangquan) international inland port: a discrete-event model of the dry port and its IoT.

One shared `model.Port` per run (trains, cranes, yard, customs, gate, trucks, reefers, the road
corridor to Tianjin). The port's device types are apart from it, in `sensors/`: `port_crane`,
`yard_block`, `gate_lane`, `reefer` and `truck_gps` sample its state; they import the model, never
the reverse. The scenario's `port:` section (settings.py) holds its parameters. docs/port.md
describes the whole model.
"""
