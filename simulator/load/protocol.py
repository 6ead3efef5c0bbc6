"""What the load runner and its children (the workers, the experiment's bridge) say to each other.

Every message is one JSON line: the runner writes orders to a child's stdin, the child reports on
its stdout (its log goes to stderr). Each kind of message is a model of its own whose `kind` names
it, so a line is read as exactly one of the kinds its reader expects, or it is a `ProtocolError`
that names the sender and shows the line; nobody tells messages apart by the keys they hold.

    runner → worker   WorkerOrders                  then, unless a dry run, Start
    worker → runner   Ready                         connected to the broker (not in a dry run)
                      Failure                       why it stopped (its last line); else it exits 0
                      WorkerFinal                   a dry run's figures (a dry run has no InfluxDB)
    runner → bridge   BridgeOrders, then Start; closing stdin stops it
    bridge → runner   Ready, then Failure or exit 0

A live child's figures do not travel on the pipe: the interval and final messages (WorkerInterval,
WorkerFinal, BridgeInterval, BridgeFinal) go to InfluxDB as its records (simulator/load/records.py),
where the runner reads them as `iotsim load report` does; the pipe carries control only.

A child turns every `IotsimError` it meets (broker refused or unreachable, another client took its
client id, InfluxDB refused, a line it cannot read) into one `Failure` and exits 1 (`serve`); the
runner reports it as one line. This module also holds the children's side of the pipe: reading
orders, writing reports, and the interval reporter.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import Field, TypeAdapter, ValidationError

from simulator.errors import IotsimError
from simulator.fleet import StrictModel
from simulator.ingest.settings import BridgeSettings
from simulator.scenario import Scenario
from simulator.shard import Shard

SHOWN_CHARS = 200  # of a line that cannot be read, in its error


class ProtocolError(IotsimError):
    """A line that is no message its reader expects: not JSON, an unknown kind, a missing or wrong field."""


class Message(StrictModel):
    """One line of the protocol; `kind` says which."""

    kind: str


# --- runner → child ---


class WorkerOrders(Message):
    """What a worker simulates: the scenario (its start and duration set by the runner) and its shard."""

    kind: Literal["worker_orders"] = "worker_orders"
    scenario: Scenario
    shard: Shard
    qos: Literal[0, 1] | None = Field(default=None, description="publish QoS; None in a dry run")
    dry_run: str | None = Field(default=None, description="write the shard's messages to this JSON-lines file, no broker")
    interval: float = Field(default=1.0, gt=0, description="seconds between interval reports")
    run_id: str | None = Field(default=None, description="write its reports to the scenario's InfluxDB under this run id (simulator/load/records.py); None only in a dry run")
    state_dir: str | None = Field(default=None, description="the local stack's state dir, whose broker a broker_outage stops and starts; None: process faults only announced")


class BridgeOrders(Message):
    """Where the experiment's bridge reads from and writes to, and who it is there."""

    kind: Literal["bridge_orders"] = "bridge_orders"
    settings: BridgeSettings
    influx_url: str
    database: str
    user: str | None
    password: str | None
    token: str | None
    mqtt_username: str | None
    mqtt_password: str | None
    ca_file: str | None
    interval: float = Field(default=1.0, gt=0, description="seconds between interval reports")
    raw_latencies: str | None = Field(default=None, description="also append every latency (µs, int64) to this file")
    run_id: str = Field(description="write its reports to InfluxDB under this run id (simulator/load/records.py)")


class Start(Message):
    """The common start: the world's clock (and the intervals) start at this wall-clock time."""

    kind: Literal["start"] = "start"
    start_ms: int


# --- child → runner ---


class Ready(Message):
    """Connected and waiting for the start."""

    kind: Literal["ready"] = "ready"


class Failure(Message):
    """The child could not go on: one printable line saying why. It is the child's last line."""

    kind: Literal["error"] = "error"
    message: str


class WorkerCounts(StrictModel):
    """A worker's counters since the start (cumulative)."""

    generated: int = Field(ge=0, description="messages its devices made (after its pipeline faults)")
    published: int = Field(ge=0, description="handed to paho")
    acknowledged: int = Field(ge=0, description="PUBACKed (QoS 1) or written to the socket (QoS 0)")
    connected: int = Field(default=0, ge=0, description="devices connected now through their own connections")
    connects: int = Field(default=0, ge=0, description="CONNACKs accepted on the devices' own connections, reconnects included")
    reconnects: int = Field(default=0, ge=0, description="accepted CONNACKs of devices that had been connected before")
    connect_failures: int = Field(default=0, ge=0, description="connects that failed (broker away) or were refused")


class ConnectionReport(StrictModel):
    """What a worker with device connections adds to its reports (defaults: none)."""

    connect_hist: str = Field(default="", description="CONNECT→CONNACK latencies (µs) since the last report: HDR histogram, compressed encoding ('' if none)")
    lost: int = Field(default=0, ge=0, description="devices that lost the broker and are not connected again yet")
    reconnected_ms: int | None = Field(default=None, description="wall-clock ms when every device that had lost the broker was connected again (the latest time); None: none lost")
    outage_end_ms: int | None = Field(default=None, description="wall-clock ms when the broker this worker stopped (a broker_outage) accepted connections again")


class WorkerInterval(Message, ConnectionReport):
    kind: Literal["worker_interval"] = "worker_interval"
    k: int = Field(ge=1, description="the interval ending at start + k * interval")
    counts: WorkerCounts
    publish_hist: str = Field(description="the interval's publish latencies: HDR histogram, compressed encoding ('' if none)")


class WorkerFinal(Message, ConnectionReport):
    """After the last stage, once everything is acknowledged (or the drain timed out)."""

    kind: Literal["worker_final"] = "worker_final"
    counts: WorkerCounts
    publish_hist: str = Field(description="publish latencies since the last interval")
    devices: int = Field(ge=0, description="devices the shard's world built")
    wall_s: float = Field(description="wall-clock seconds the world ran")
    drained: bool = Field(description="everything published was acknowledged before the drain timed out")


class BridgeCounts(StrictModel):
    """The bridge's counters since the start (cumulative)."""

    received: int = Field(ge=0)
    written: int = Field(ge=0)
    acknowledged: int = Field(ge=0)
    dead_letters: int = Field(ge=0)
    distinct: int = Field(ge=0, description="distinct (device, seq) pairs written")
    duplicates: int = Field(ge=0, description="(device, seq) pairs written again")
    stale: int = Field(ge=0, description="points stamped before the start (an earlier run's), not counted otherwise")


class BridgeInterval(Message):
    kind: Literal["bridge_interval"] = "bridge_interval"
    k: int = Field(ge=1, description="the interval ending at start + k * interval")
    counts: BridgeCounts
    latency_hist: str = Field(description="the interval's end-to-end latencies: HDR histogram, compressed encoding ('' if none)")


class BridgeFinal(Message):
    """After stdin closed: everything pending written and acknowledged."""

    kind: Literal["bridge_final"] = "bridge_final"
    counts: BridgeCounts
    latency_hist: str = Field(description="end-to-end latencies since the last interval")
    gaps: int = Field(ge=0, description="seqs missing below a device's highest written one")


WorkerOrder = Annotated[Union[WorkerOrders, Start], Field(discriminator="kind")]
BridgeOrder = Annotated[Union[BridgeOrders, Start], Field(discriminator="kind")]

ControlReport = Annotated[Union[Ready, Failure], Field(discriminator="kind")]
DryRunReport = Annotated[Union[WorkerFinal, Failure], Field(discriminator="kind")]

CONTROL_REPORTS: TypeAdapter[ControlReport] = TypeAdapter(ControlReport)  # what a live child says on its pipe; its figures go to InfluxDB
DRY_RUN_REPORTS: TypeAdapter[DryRunReport] = TypeAdapter(DryRunReport)  # a dry run has no InfluxDB: its final figures come on the pipe
WORKER_ORDERS: TypeAdapter[WorkerOrder] = TypeAdapter(WorkerOrder)
BRIDGE_ORDERS: TypeAdapter[BridgeOrder] = TypeAdapter(BridgeOrder)

M = TypeVar("M")


def encode_message(message: Message) -> str:
    """The message as one line, newline included."""
    return message.model_dump_json() + "\n"


def decode_message(kinds: TypeAdapter[M], line: str, sender: str) -> M:
    """The message `line` holds, of one of `kinds`; ProtocolError naming `sender` and the line if it is none."""
    try:
        return kinds.validate_json(line)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in error.errors()[:3])
        shown = line.rstrip("\n")
        if len(shown) > SHOWN_CHARS:
            shown = shown[:SHOWN_CHARS] + f"... ({len(shown)} characters)"
        raise ProtocolError(f"{sender} sent a line that is no message of the load protocol ({problems}): {shown!r}") from None


# --- the child's side ---

_print_lock = threading.Lock()


def say(message: Message) -> None:
    """Report to the runner (from any thread)."""
    with _print_lock:
        sys.stdout.write(encode_message(message))
        sys.stdout.flush()


O = TypeVar("O", bound=Message)


def read_order(kinds: TypeAdapter[Any], expected: type[O]) -> O:
    """The runner's next order, which must be an `expected`; the child exits quietly if the runner went away."""
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)
    order = decode_message(kinds, line, "the runner")
    if not isinstance(order, expected):
        raise ProtocolError(f"the runner sent {order.kind!r} where {expected.model_fields['kind'].default!r} was due")
    return order


def serve(main: Callable[[], None]) -> None:
    """Run a child's `main`; any IotsimError it meets becomes one Failure to the runner, and exit 1."""
    try:
        main()
    except IotsimError as error:
        say(Failure(message=str(error)))
        raise SystemExit(1) from None


class Reporter:
    """Sends `report(k)` once per interval, aligned on the common start, until stopped: to the runner
    (`say`), or wherever `send` puts it."""

    def __init__(self, start_ms: int, interval: float, report: Callable[[int], Message], send: Callable[[Message], None] = say) -> None:
        self.start_s = start_ms / 1000.0
        self.interval = interval
        self.report = report
        self.send = send
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load-reporter", daemon=True)

    def _run(self) -> None:
        k = 1
        while not self.stopping.wait(max(self.start_s + k * self.interval - time.time(), 0.0)):
            self.send(self.report(k))
            k += 1

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()
