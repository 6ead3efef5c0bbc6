"""Grafana dashboards as code, with grafana-foundation-sdk.

Modules: `influxql` (the InfluxQL query and annotation types the SDK lacks), `panels` (panel kinds and
the `Trend` table row most panels are), `common` (board frame, event annotations, variables, device
explorer), `city`, `port`, `pipeline` (the three boards), `build` (JSON out and the staleness check),
`cli` (`iotsim dashboards build [--check]`). docs/stack.md describes the boards and the compose stack.
"""
