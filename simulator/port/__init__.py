"""The Shanxi (Yangquan) international inland port: a discrete-event model of the dry port and its IoT.

One shared `model.Port` per run (trains, cranes, yard, customs, gate, trucks, reefers, the road
corridor to Tianjin); the port fleets `port_crane` (cranes.py), `yard_block` (yard.py), `gate_lane`
(gate.py), `reefer` (reefers.py) and `truck_gps` (corridor.py) sample its state. The scenario's
`port:` section (settings.py) holds its parameters. docs/port.md describes the whole model.
"""
