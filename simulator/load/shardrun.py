"""`iotsim load FILE --shard INDEX/COUNT`: one shard of a load experiment, on this host.

The shard publishes its own devices (as a worker of `iotsim load` does) and writes its records to
InfluxDB (simulator/load/records.py); `iotsim load report RUN_ID` merges the shards' records. A
sharded run starts no bridge: across hosts the ingest bridge runs on its own (`iotsim bridge`, in
Kubernetes its StatefulSet), and the report counts what it stored.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from simulator.errors import IotsimError, UsageError
from simulator.load.protocol import WorkerFinal
from simulator.load.records import ShardRecorder
from simulator.load.runner import START_MARGIN_S, Experiment, LoadError, broker_control, influx_client, preflight, restore_broker
from simulator.load.worker import publish_shard
from simulator.shard import Shard


def run_shard(experiment: Experiment, shard: Shard, run_id: str, state_dir: Path | None = None) -> WorkerFinal:
    """Publish the shard's devices along the profile, recording to InfluxDB; its final counters. A
    `broker_outage` stops and starts the broker when it is the local stack's under `state_dir`."""
    scenario = experiment.scenario
    preflight(scenario)  # the broker and InfluxDB are there (the database is created when missing)
    controlled = broker_control(scenario, state_dir, lambda line: print(line, file=sys.stderr))
    client = influx_client(scenario)
    recorder = ShardRecorder(client, run_id, shard)

    def ready() -> int:  # no common start across hosts: each shard starts once it is connected
        start_ms = int((time.time() + START_MARGIN_S) * 1000)
        recorder.start(start_ms, experiment.record_inputs(shard))
        return start_ms

    try:
        final = publish_shard(experiment.run_scenario(), shard, experiment.qos, 1.0, ready, recorder.send, controlled)
        recorder.close()
    except UsageError:
        raise
    except IotsimError as error:  # the broker refused us, InfluxDB took no records ...: the shard could not run
        raise LoadError(f"shard {shard.spec}: {error}") from None
    finally:
        client.close()
        if controlled is not None:  # Ctrl-C or an error during the outage: the stack's broker as it was
            restore_broker(Path(controlled), scenario)
    return final
