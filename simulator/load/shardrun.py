"""`iotsim load FILE --shard INDEX/COUNT`: one shard of a load experiment, on this host.

The shard publishes its own devices (as a worker of `iotsim load` does) and writes its records to
InfluxDB (simulator/load/records.py); `iotsim load report RUN_ID` merges the shards' records. A
sharded run starts no bridge: across hosts the ingest bridge runs on its own (`iotsim bridge`, in
Kubernetes its StatefulSet), and the report counts what it stored.
"""

from __future__ import annotations

import platform
import time

from simulator.errors import IotsimError, UsageError
from simulator.load.protocol import WorkerFinal
from simulator.load.records import ShardRecorder
from simulator.load.runner import START_MARGIN_S, Experiment, LoadError, influx_client, preflight
from simulator.load.worker import publish_shard
from simulator.shard import Shard


def shard_inputs(experiment: Experiment, shard: Shard) -> dict[str, object]:
    """What the report needs to know about the experiment: the start record's fields."""
    scenario = experiment.scenario
    probe = next(fleet for fleet in scenario.fleets if fleet.type == "load_probe")
    return {
        "scenario": scenario.name,
        "load": experiment.load.model_dump_json(),
        "qos": experiment.qos,
        "probes": experiment.probes,
        "batch": probe.batch,
        "payload_bytes": probe.payload_bytes,
        "seed": scenario.seed,
        "duration_s": float(experiment.schedule.duration),
        "count": shard.count,
        "host": platform.node(),
        "mqtt": scenario.mqtt.url,
        "influx": f"{scenario.influx.url} database {scenario.influx.database}",
    }


def run_shard(experiment: Experiment, shard: Shard, run_id: str) -> WorkerFinal:
    """Publish the shard's devices along the profile, recording to InfluxDB; its final counters."""
    scenario = experiment.scenario
    preflight(scenario)  # the broker and InfluxDB are there (the database is created when missing)
    client = influx_client(scenario)
    recorder = ShardRecorder(client, run_id, shard)

    def ready() -> int:  # no common start across hosts: each shard starts once it is connected
        start_ms = int((time.time() + START_MARGIN_S) * 1000)
        recorder.start(start_ms, shard_inputs(experiment, shard))
        return start_ms

    try:
        final = publish_shard(experiment.run_scenario(), shard, experiment.qos, 1.0, ready, recorder.send)
        recorder.close()
    except UsageError:
        raise
    except IotsimError as error:  # the broker refused us, InfluxDB took no records ...: the shard could not run
        raise LoadError(f"shard {shard.spec}: {error}") from None
    finally:
        client.close()
    return final
