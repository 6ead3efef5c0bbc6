"""Yangquan IoT application-base testbed: SimPy models of the city and the inland port, streamed
over MQTT into InfluxDB."""

__version__ = "0.1.0"
