"""Load experiments: a scenario's `load:` section, run by `iotsim load FILE`.

profile.py (how the offered load changes over time), thresholds.py (k6-like pass/fail rules),
section.py (the `load:` section of a scenario), probe.py (the `load_probe` gateway device),
pacing.py (how the gateways send, given to them by the builder), shard.py (deterministic device
sharding over worker processes), metrics.py (HDR latency histograms, sequence tracking,
CPU/memory), worker.py and bridge.py (the instrumented simulator and ingest processes),
protocol.py (the typed messages between them and the runner), runner.py (one experiment, and the
capacity search), results.py (results directory and report), cli.py (the `iotsim load` command).
See docs/load.md.
"""
