"""The ingest bridge: MQTT subscription → line protocol → batched writes to InfluxDB."""
