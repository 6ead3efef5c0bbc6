"""Where a run's messages go: a JSON-lines file (dry run) or an MQTT broker."""
