"""The ingest bridge: subscribes to `{prefix}/#` at QoS 1 and writes every message to InfluxDB.

Delivery guarantee: paho's manual acknowledgement is on, so the broker keeps a message (and sends it
again after a reconnect) until the bridge acknowledges it, and the bridge acknowledges a message only
after the InfluxDB write holding it succeeded, or after it was written to the dead-letter file.
Acknowledgements go out in the order the messages arrived, as MQTT 3.1.1 requires. A redelivered
message is the same point (same measurement, tags and time), so writing it twice stores it once.

Threads: the network thread turns paho's loop (simulator/transport/loop.py), converts each message
and appends it to the open batch; the writer thread closes a batch when it is full (`batch_size`), old
enough (`batch_interval`, 10 ms), or when no message has come for `batch_quiet`, writes it, and hands
its acknowledgements back to the network thread, which sends them. One write is in flight at a
time, and meanwhile the next batch fills: the busier the bridge, the longer its writes and the larger
its batches, so InfluxDB's cost per point falls towards that of large batches under load, while at a
low rate a message waits about `batch_interval` for its write (Nagle's algorithm, for batches).

While InfluxDB is down, the writer retries its batch and new messages wait in memory. Once
`max_pending` messages wait, the bridge moves what it holds to its disk spool (simulator/ingest/
spool.py) and acknowledges it, oldest first, once it is on disk; from then on every batch goes to
the spool behind the older ones until the spool is written out, so points reach InfluxDB in order.
When the spool holds `spool_limit` points (or there is none), the network thread pauses instead and
the broker holds the backlog.

The session (docs/faults.md, "Sessions and client ids"): the CONNACK says whether the broker still
has the bridge's session. "No" after this process or an earlier one (its `session.json`) had one means
the messages queued for it meanwhile are gone (another client with the same id and a clean session,
or a broker restarted without its persistence): a warning line, `sessions_lost`, and a new
subscription. Connections the broker keeps closing within seconds mean another client uses the same
id (`takeovers`): past a few, the bridge stops with a BridgeError rather than fight over the session.
The bridge writes only topics under its own prefix; a message from a subscription an earlier run left
in the session is dead-lettered, and that subscription is cancelled (UNSUBSCRIBE). Each device's seq
is checked as messages arrive (simulator/ingest/sequences.py, `seq_gaps`).

A bridge group (`group`): the members subscribe `$share/{group}/{prefix}/#` and the broker hands each
message to one of them. Each member is a whole bridge (its own client id, persistent session, spool
and ack-after-write); the seq check is off, since a member sees only a share of each device's seqs.

Each field keeps one type (simulator/ingest/fieldtypes.py): a value of another type is written under
its typed name, so one message never turns the others away. A point InfluxDB refuses is dead-lettered
as the message it came from (topic and payload), or as `(spool)` and its line when it came from the spool.
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulator.errors import BridgeError, BrokerRefused, UsageError
from simulator.influx import InfluxClient, InfluxDatabaseMissing, InfluxRefused, InfluxUnreachable, WriteDeferred
from simulator.ingest.deadletter import DeadLetters
from simulator.ingest.fieldtypes import FieldTypes, LookupFailed, declared_types
from simulator.ingest.lineprotocol import BadPayload, escape_key
from simulator.ingest.sequences import SeqGaps
from simulator.ingest.session import SessionRecord
from simulator.ingest.settings import FIRST_MESSAGE_TIMEOUT_S, BridgeSettings
from simulator.ingest.spool import Spool
from simulator.ingest.status import to_point
from simulator.transport.client import Client, Received
from simulator.transport.loop import LOOP_WAIT_S, ClientLoop
from simulator.transport.mqtt import KEEPALIVE_S, BrokerAddress, BrokerUnreachable, Credentials, TakeoverWatch, refusal
from simulator.userfiles import Refused

# Messages read in one turn of the network loop, at most, before the acknowledgements waiting are sent.
READ_BURST = 500
FIELD_LOOKUP_TIMEOUT_S = 2.0  # the network thread waits this long, at most, for InfluxDB's field types
STATS_TIMEOUT_S = 5.0  # the bridge's own `pipeline` point: skipped when InfluxDB is slower
RETYPE_ROUNDS = 3  # a point refused for a field type conflict is converted again this often, at most
# InfluxDB 1.x's reason (its JSON quotes may still be escaped); names are NAMEs, so no quote is in them.
FIELD_TYPE_CONFLICT = re.compile(
    r'field type conflict: input field \\?"(?P<field>\w+)\\?" on measurement \\?"(?P<measurement>\w+)\\?" is type \w+, already exists as type (?P<kind>\w+)'
)
SPOOL_TOPIC = "(spool)"  # dead letters of spooled points: the spool holds line protocol, not the message


@dataclass
class BridgeCounts:
    received: int = 0
    written: int = 0
    dead_letters: int = 0
    acknowledged: int = 0
    spooled: int = 0  # points ever put in the spool
    last_batch_size: int = 0
    last_lag_ms: float = 0.0
    seq_gaps: int = 0  # seqs missing now: jumps in a device's seq, less late arrivals filling them
    sessions_lost: int = 0  # times the broker had no session where there had been one
    takeovers: int = 0  # connections the broker closed within seconds: another client with our id


@dataclass
class Pending:
    """Messages received and not yet acknowledged, in arrival order."""

    lines: list[str] = field(default_factory=list)
    sources: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, payload) each line came from
    acks: list[tuple[int, int]] = field(default_factory=list)  # (mid, qos) of every message, good or bad
    newest_ts: int = 0
    opened: float = 0.0
    # A message id means a message only on the connection it came on: after a lost session the broker
    # numbers from 1 again, so an earlier connection's ids would acknowledge new, unwritten messages.
    connection: int = 0  # the connection the newest acks came on
    connection_from: int = 0  # acks[connection_from:] came on it; those before, on earlier ones


class Bridge:
    def __init__(
        self,
        settings: BridgeSettings,
        writer: InfluxClient,
        log: Callable[[str], None] = print,
        credentials: Credentials = Credentials(),
        field_types: FieldTypes | None = None,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.log = log
        # The types InfluxDB holds, then the declared ones (settings.declared_types), then the first value seen in this run.
        if field_types is None:
            declared = declared_types(settings.declared_types)  # a UsageError naming the file before anything is created
            field_types = FieldTypes(declared=declared, lookup=lambda measurement: stored_field_types(writer, measurement), log=log)
        self.field_types = field_types
        self.counts = BridgeCounts()
        self.dead_letters = open_dead_letters(settings)
        self.pending = Pending()
        self.spool = open_spool(settings) if settings.spooling else None
        self.session_dir = (settings.spool_dir if settings.spooling else settings.dead_letter_path.parent / "sessions") / settings.client_id
        self.session_record = SessionRecord.load(self.session_dir)  # what an earlier run left in the session
        self.topic_filter = settings.topic_filter
        self.own_topics = settings.topic_prefix + "/"  # a topic starting so is ours (_check_topic decides the rest)
        self.subscribed = False  # the broker confirmed our subscription at least once in this process
        self.takeover = TakeoverWatch()
        self.group_tag = f",group={escape_key(settings.group)}" if settings.group else ""
        self.strays_seen = False  # a message outside our prefix arrived (and was said so once)
        # A group member receives a share of each device's messages, so its own seqs have gaps by design.
        self.sequences = SeqGaps(log) if settings.group is None else None
        self.lock = threading.Condition()
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.last_message = time.monotonic()
        self.spool_written: float | None = None  # when the writer last wrote out a spool segment
        self.resubscribed: float | None = None  # when the bridge was last subscribed again after losing the broker
        self.writing = False
        self.failure: Exception | None = None
        self.refused: str | None = None
        self.address = BrokerAddress.from_url(settings.mqtt_url)
        self.client = Client(
            CallbackAPIVersion.VERSION2, client_id=settings.client_id, clean_session=False, protocol=mqtt.MQTTv311
        )
        self.client.manual_ack_set(True)
        self.client.light_messages = True  # a Received per message: no MQTTMessage (and its Condition)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_messages = self._on_messages  # the messages of a read at once
        self.client.on_message = lambda client, userdata, message: self._on_messages(client, userdata, [message])  # where paho delivers itself (MQTT 5)
        self.client.on_subscribe = self._on_subscribe
        credentials.apply(self.client, self.address)
        self.loop = ClientLoop(self.client)
        self.acks_ready: deque[tuple[int, list[tuple[int, int]]]] = deque()  # (connection, its (mid, qos)) of written batches, for the network thread to send
        self.connection = 0  # grows with every connection the broker accepts (network thread)
        self.closing = threading.Event()  # the network thread's turn to send the last acknowledgements and disconnect
        self._wake_network, self._wake_signal = socket.socketpair()
        self._wake_network.setblocking(False)
        self._wake_signal.setblocking(False)
        self.writer.on_retry = lambda reason: log(f"bridge: InfluxDB write failed ({reason}); retrying")
        self.writer_thread = threading.Thread(target=self._write_batches, name="influx-writer", daemon=True)
        self.network_thread = threading.Thread(target=self._serve_network, name="mqtt-network", daemon=True)

    # --- running ---

    def start(self, timeout: float = 15.0) -> None:
        """Check InfluxDB takes our writes (InfluxRefused: credentials, privileges; unreachable is no
        error, the writes retry), then subscribe."""
        address = self.address
        reachable = self.writer.check_access()
        self.writer_thread.start()
        self.client.connect_async(address.host, address.port, keepalive=KEEPALIVE_S)
        self.network_thread.start()
        if not self.connected.wait(timeout) or self.refused or self.failure:
            self.stop()
            if self.failure:
                raise self.failure  # another client took our client id over and over
            if self.refused:
                raise BrokerRefused(f"the MQTT broker at {address} refused the bridge: {self.refused}")
            raise BrokerUnreachable(f"cannot subscribe at the MQTT broker at {address} (waited {timeout:.0f} s)")
        if not reachable:  # said once subscribed: scripts wait for the first line as the sign of that
            self.log(f"bridge: cannot reach InfluxDB at {self.writer.url} yet; messages wait at the broker until it answers")

    def run(self, exit_when_idle: float | None = None, first_message_timeout: float = FIRST_MESSAGE_TIMEOUT_S) -> None:
        """Block until stopped (Ctrl-C / SIGTERM → KeyboardInterrupt), or until idle `exit_when_idle`
        seconds after its last work (a message, or spooled points written out) or its return to the broker
        after losing it; a bridge that has had no work waits `first_message_timeout` seconds from now for some."""
        last_stats = started = time.monotonic()
        try:
            while not self.stopping.is_set():
                if self.failure is not None:
                    raise self.failure
                time.sleep(0.1)
                now = time.monotonic()
                if now - last_stats >= self.settings.stats_interval:
                    self.write_own_stats()
                    last_stats = now
                if exit_when_idle is not None and self._idle_long_enough(now, started, exit_when_idle, first_message_timeout):
                    break
        finally:
            self.stop()

    def _idle_long_enough(self, now: float, started: float, exit_when_idle: float, first_message_timeout: float) -> bool:
        last_work = max(self.last_message if self.counts.received else -math.inf, self.spool_written or -math.inf)
        if last_work == -math.inf:
            return now - started >= first_message_timeout and self.idle()
        # Cut off from the broker is not idle: the publishers lost it too, and reconnect on their own schedule.
        return now - max(last_work, self.resubscribed or -math.inf) >= exit_when_idle and self.idle()

    def idle(self) -> bool:
        if not self.connected.is_set():
            return False  # cut off from the broker: messages may be waiting there for us
        with self.lock:
            return not self.pending.acks and not self.writing and not self.spool and not self.acks_ready

    def stop(self) -> None:
        """Write what is pending (if InfluxDB answers), acknowledge it, then disconnect."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        with self.lock:
            self.lock.notify_all()
        if self.writer_thread.is_alive():
            self.writer_thread.join(timeout=10.0)  # a last write, if InfluxDB answers soon
            self.writer.stopping.set()  # otherwise leave the batch to the broker
            self.writer_thread.join()
        self.write_own_stats()
        if self.network_thread.is_alive():
            self.closing.set()
            self._wake()
            self.network_thread.join()
        self._wake_network.close()
        self._wake_signal.close()
        self.dead_letters.close()
        self.writer.close()
        if self.spool:
            self.log(f"bridge: {self.spool.points} points wait in the spool {self.spool.directory}; the next start writes them")

    # --- the network thread ---

    def _serve_network(self) -> None:
        """Turn paho's loop and send the acknowledgements the writer hands over; once closing, send the
        last of them and say goodbye to the broker (DISCONNECT)."""
        received = lambda: self.counts.received  # noqa: E731 - grows with every message read
        try:
            while not self.closing.is_set():
                self._send_acknowledgements()
                self.loop.turn(LOOP_WAIT_S, wake=self._wake_network, received=received, packets=READ_BURST)
        except Exception as error:  # reported by run(); unacknowledged messages stay at the broker
            self.failure = error
            return
        self._send_acknowledgements()
        self.loop.disconnect()

    def _send_acknowledgements(self) -> None:
        while self.acks_ready:
            connection, acks = self.acks_ready.popleft()
            if connection != self.connection:
                continue  # their ids mean other messages now; the broker sends theirs again if it kept the session
            self.client.ack_all(acks)  # collected as one write, sent at the next turn
            self.counts.acknowledged += len(acks)

    def _wake(self) -> None:
        try:
            self._wake_signal.send(b"\0")
        except BlockingIOError:
            pass  # a wake-up is already waiting

    # --- MQTT callbacks (the network thread) ---

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: object, properties: object) -> None:
        self.refused = refusal(reason)
        if self.refused:
            self.connected.set()  # wakes start(), which reports the refusal
            return
        self.loop.connected()
        self.takeover.connected()
        self.connection += 1
        if flags.session_present:
            self._drop_old_subscription(client)
        else:
            self._check_no_session()
        client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list, properties: object) -> None:
        if any(getattr(reason, "is_failure", False) for reason in reasons):
            self.refused = f"subscription to {self.topic_filter} refused ({', '.join(map(str, reasons))})"
        else:
            if self.subscribed:
                self.resubscribed = time.monotonic()  # the devices cut off with us are only now coming back
            self.subscribed = True
            self._record_session()
        self.connected.set()  # subscribed: from now on the broker keeps our messages for us

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        self.connected.clear()
        self.loop.disconnected()
        if self.stopping.is_set() or (self.refused and not self.subscribed):
            return  # a first CONNACK refused is followed by the broker closing: start() reports the refusal alone
        fighting = self.takeover.closed_by_broker()
        self.counts.takeovers = self.takeover.takeovers
        if fighting:
            self.failure = BridgeError(self.takeover.describe(self.settings.client_id, "give each bridge its own --client-id"))
            self.closing.set()  # no reconnecting: the other client keeps the session, the broker our unacknowledged messages
            self.connected.set()  # wakes start(), if still waiting, which reports it
            return
        self.log(f"bridge: lost the broker ({reason}); reconnecting, unacknowledged messages will come again")

    # --- the session (network thread) ---

    def _check_no_session(self) -> None:
        """The broker has no session for us: new, or lost with whatever was queued for it."""
        client_id, record = self.settings.client_id, self.session_record
        if self.subscribed:
            where = "it had one until this connection"
        elif record is not None and record.broker == str(self.address):
            where = f"an earlier run of this bridge had one ({self.session_dir / 'session.json'})"
        else:
            return  # a new client id at this broker: nothing was queued for it
        self.counts.sessions_lost += 1
        self.session_record = None  # the old subscription went with the session
        self.log(
            f"bridge: the broker has no session for client id {client_id} though {where}: messages published meanwhile are lost "
            "(another client connected with this id and a clean session, or the broker restarted without its persistence); subscribing again"
        )

    def _drop_old_subscription(self, client: mqtt.Client) -> None:
        """The session an earlier run left may subscribe to another prefix: cancel that subscription."""
        record = self.session_record
        if self.subscribed or record is None or record.topic_filter == self.topic_filter:
            return
        client.unsubscribe(record.topic_filter)
        self.log(
            f"bridge: the session of client id {self.settings.client_id} was subscribed to {record.topic_filter}; unsubscribed, "
            f"now {self.topic_filter} (what it queued under the old filter goes to the dead-letter file)"
        )

    def _record_session(self) -> None:
        record = SessionRecord(str(self.address), self.topic_filter)
        if record == self.session_record:
            return
        try:
            record.save(self.session_dir)
            self.session_record = record
        except OSError as error:  # only the next start's warnings depend on it
            self.log(f"bridge: cannot record the session in {self.session_dir} ({error.strerror}); a lost session may go unnoticed")

    def _check_topic(self, topic: str) -> None:
        """Only topics under our prefix are ours; others come from a subscription an earlier run left."""
        prefix = self.settings.topic_prefix
        if topic.startswith(prefix) and (len(topic) == len(prefix) or topic[len(prefix)] == "/"):
            return
        if not self.strays_seen:
            self.strays_seen = True
            self.log(f"bridge: {topic} is outside {prefix}/, left by an earlier subscription of this session; such messages go to the dead-letter file")
        raise BadPayload(f"topic outside this bridge's prefix {prefix}/ (an earlier subscription of client id {self.settings.client_id}'s session): not written to this database")

    def _on_messages(self, client: mqtt.Client, userdata: object, messages: list[Received] | list[mqtt.MQTTMessage]) -> None:
        """The messages of one read, in arrival order: converted, then added to the open batch under one lock."""
        converted = self._convert(messages)
        self.last_message = time.monotonic()
        settings, counts, connection = self.settings, self.counts, self.connection
        max_pending = settings.max_pending
        with self.lock:
            pending = self.pending  # only the writer replaces it, and only while this thread waits
            if pending.connection != connection:
                pending.connection, pending.connection_from = connection, len(pending.acks)
            for message, (line, ts) in zip(messages, converted):
                if len(pending.acks) >= max_pending:
                    self.lock.notify_all()  # the writer may take the batch
                    while len(self.pending.acks) >= max_pending and not self.stopping.is_set():
                        self.lock.wait(0.5)  # the writer is behind (or InfluxDB is down): let the broker hold the rest
                    pending = self.pending
                    if pending.connection != connection:
                        pending.connection, pending.connection_from = connection, len(pending.acks)
                if not pending.acks:
                    pending.opened = time.monotonic()
                    self.lock.notify_all()  # the writer, waiting with nothing to write, now has a batch to time
                if line is not None:
                    pending.lines.append(line)
                    pending.sources.append((message.topic, message.payload))
                    if ts > pending.newest_ts:
                        pending.newest_ts = ts
                pending.acks.append((message.mid, message.qos))
                counts.received += 1
            if len(pending.lines) >= settings.batch_size:
                self.lock.notify_all()  # a full batch: the writer need not wait for its time

    def _convert(self, messages: list[Received] | list[mqtt.MQTTMessage]) -> list[tuple[str | None, int]]:
        """(line, ts) of each message, its seq checked; (None, 0) for one dead-lettered."""
        converted: list[tuple[str | None, int]] = []
        own_topics, prefix, field_types, sequences, counts = self.own_topics, self.settings.topic_prefix, self.field_types, self.sequences, self.counts
        for message in messages:
            topic, payload = message.topic, message.payload
            try:
                if not topic.startswith(own_topics):
                    self._check_topic(topic)
                line, device_id, seq, ts = to_point(topic, payload, prefix, field_types)
                if sequences is not None and seq is not None:  # a device's status has no seq
                    counts.seq_gaps += sequences.observe(line[: line.index(",")], device_id, seq)
                converted.append((line, ts))
            except BadPayload as error:
                self.dead_letters.add(topic, payload, str(error))
                counts.dead_letters += 1
                converted.append((None, 0))
        return converted

    # --- the writer thread ---

    def _write_batches(self) -> None:
        try:
            self._write_spool()  # what an earlier run spooled and did not write
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if self.spool:  # older points wait on disk: this batch goes behind them
                    self._put_in_spool(batch)
                    self._write_spool()
                else:
                    self._store(batch)
        except Exception as error:  # reported by run(); the messages stay unacknowledged at the broker
            self.failure = error
        finally:
            with self.lock:
                self.writing = False

    def _next_batch(self) -> Pending | None:
        with self.lock:
            self.writing = False
            while True:
                pending, now = self.pending, time.monotonic()
                if pending.acks and (
                    len(pending.lines) >= self.settings.batch_size
                    or now - pending.opened >= self.settings.batch_interval
                    or now - self.last_message >= self.settings.batch_quiet
                    or self.stopping.is_set()
                ):
                    self.pending = Pending()
                    self.writing = True
                    self.lock.notify_all()
                    return pending
                if self.stopping.is_set():
                    return None
                if not pending.acks:
                    wait = self.settings.batch_interval
                else:
                    wait = min(pending.opened + self.settings.batch_interval, self.last_message + self.settings.batch_quiet) - now
                self.lock.wait(max(wait, 0.001))

    def _store(self, batch: Pending) -> None:
        try:
            refused = self.writer.write(batch.lines, give_up=self._memory_full)
        except InterruptedError:
            return  # stopping while InfluxDB is down: leave these unacknowledged, the broker keeps them
        except WriteDeferred:
            self._put_in_spool(batch)
            return
        written = len(batch.lines) - len(refused)
        if refused:
            sources = dict(zip(batch.lines, batch.sources))
            stored, still_refused = self._store_retyped([(sources[line], reason) for line, reason in refused])
            written += stored
            self._dead_letter([(topic, payload, reason) for (topic, payload), reason in still_refused])
        self.dead_letters.flush()
        self._acknowledge(batch)
        self.counts.written += written
        self.counts.last_batch_size = len(batch.lines)
        if batch.newest_ts:
            self.counts.last_lag_ms = time.time() * 1000 - batch.newest_ts

    def _store_retyped(self, refused: list[tuple[tuple[str, bytes], str]]) -> tuple[int, list[tuple[tuple[str, bytes], str]]]:
        """Messages whose point InfluxDB refused for a field type conflict: record the type it holds
        (written by another client, an earlier run, or in a shard of its own) and convert them again,
        so the value goes to its typed name. Returns (points stored, (message, reason) still refused)."""
        stored = 0
        for _ in range(RETYPE_ROUNDS):  # each refusal names one conflicting field
            kept: list[tuple[tuple[str, bytes], str]] = []
            retry: list[tuple[tuple[str, bytes], str]] = []  # (message, its line converted again)
            for source, reason in refused:
                conflict = FIELD_TYPE_CONFLICT.search(reason)
                if conflict is None:
                    kept.append((source, reason))
                    continue
                self.field_types.holds(conflict["measurement"], conflict["field"], conflict["kind"])
                try:
                    retry.append((source, to_point(*source, self.settings.topic_prefix, self.field_types)[0]))
                except BadPayload as error:
                    kept.append((source, f"{reason}; converted again: {error}"))
            if not retry:
                return stored, kept
            lines = [line for _, line in retry]
            try:
                again = self.writer.write(lines, give_up=self._memory_full)
            except (InterruptedError, WriteDeferred):
                return stored, kept + [(source, "InfluxDB became unavailable before the point was written under its typed name") for source, _ in retry]
            by_line = {line: source for source, line in retry}
            stored += len(lines) - len(again)
            refused = kept + [(by_line[line], reason) for line, reason in again]
        return stored, refused

    def _memory_full(self) -> bool:
        """Time to spool: the network thread holds `max_pending` messages and the spool has room."""
        return self.spool is not None and self.spool.has_room() and len(self.pending.acks) >= self.settings.max_pending

    def _put_in_spool(self, batch: Pending) -> None:
        assert self.spool is not None
        if batch.lines:
            try:
                self.spool.append(batch.lines)  # on disk (fsync) before the broker may forget the messages
            except OSError as error:  # a full disk, say: stop taking messages; the broker keeps this batch and the rest
                raise BridgeError(
                    f"bridge: cannot spool {len(batch.lines)} points to {self.spool.directory} ({error.strerror}); "
                    "stopped taking messages, the broker keeps them: free space or pass another --spool-dir"
                ) from None
            self.counts.spooled += len(batch.lines)
        self.dead_letters.flush()
        self._acknowledge(batch)

    def _write_spool(self) -> None:
        """Write spooled points to InfluxDB, oldest first, until the spool is empty or memory is full again."""
        while self.spool and (segment := self.spool.oldest()) is not None:
            try:
                lines, refused = segment.lines(), []
            except OSError as error:
                raise self._spool_broken(str(error.strerror)) from None
            except Refused as refusal:  # something not the bridge's put in the segment's place
                raise self._spool_broken(f"{segment.path.name}: {refusal}") from None
            except UnicodeDecodeError:
                raise self._spool_broken(f"{segment.path.name}: not UTF-8, not as the bridge wrote it") from None
            try:
                for start in range(0, len(lines), self.settings.batch_size):
                    refused += self.writer.write(lines[start : start + self.settings.batch_size], give_up=self._memory_full)
            except (WriteDeferred, InterruptedError):
                return  # the segment stays; a part already written is written again later, harmlessly
            self._dead_letter([(SPOOL_TOPIC, line.encode(), reason) for line, reason in refused])
            self.dead_letters.flush()
            try:
                self.spool.remove_oldest()
            except OSError as error:  # written, but it would be written again: harmless, yet the spool cannot shrink
                raise self._spool_broken(str(error.strerror)) from None
            self.counts.written += len(lines) - len(refused)
            self.spool_written = time.monotonic()

    def _spool_broken(self, reason: str) -> BridgeError:
        assert self.spool is not None
        return BridgeError(f"bridge: cannot read or remove spooled points in {self.spool.directory} ({reason}); stopped, the spool keeps them: check --spool-dir")

    def _dead_letter(self, refused: list[tuple[str, bytes, str]]) -> None:
        """(topic, payload, reason) of each point InfluxDB refused: the original message when there is one."""
        for topic, payload, reason in refused:
            self.dead_letters.add(topic, payload, reason)
            self.counts.dead_letters += 1

    def _acknowledge(self, batch: Pending) -> None:
        """Hand the batch's acknowledgements to the network thread, in arrival order."""
        self.acks_ready.append((batch.connection, batch.acks[batch.connection_from :] if batch.connection_from else batch.acks))
        self._wake()

    # --- the bridge's own telemetry ---

    def write_own_stats(self) -> None:
        """One `pipeline` point with the bridge's counters, for the pipeline-health dashboard."""
        counts, stats = self.counts, self.writer.stats
        line = (
            f"pipeline,component=bridge,client_id={escape_key(self.settings.client_id)}{self.group_tag} "
            f"received={counts.received}i,written={counts.written}i,dead_letters={counts.dead_letters}i,"
            f"acknowledged={counts.acknowledged}i,batch_size={counts.last_batch_size}i,"
            f"retries={stats.retries}i,type_conflicts={self.field_types.conflicts}i,batches={stats.batches}i,spooled={counts.spooled}i,spool_points={self.spool.points if self.spool else 0}i,"
            f"seq_gaps={counts.seq_gaps}i,sessions_lost={counts.sessions_lost}i,takeovers={counts.takeovers}i,"
            f"lag_ms={counts.last_lag_ms:.1f} {int(time.time() * 1000)}"
        )
        if self.sequences is not None:
            self.sequences.report_suppressed()
        self.writer.write_point(line, timeout=STATS_TIMEOUT_S)  # best effort: our own statistics never stop ingest


def open_dead_letters(settings: BridgeSettings) -> DeadLetters:
    try:
        return DeadLetters(settings.dead_letter_path)
    except OSError as error:
        raise UsageError(f"--dead-letters {settings.dead_letter_path}: cannot write there ({error.strerror})") from None


def open_spool(settings: BridgeSettings) -> Spool:
    """The spool of this bridge's client id: two bridges must never write each other's spool."""
    try:
        return Spool(settings.spool_dir / settings.client_id, settings.spool_limit)
    except Refused as refused:  # something the bridge did not write in its spool folder
        raise UsageError(f"--spool-dir {settings.spool_dir}: {refused}") from None
    except OSError as error:
        raise UsageError(f"--spool-dir {settings.spool_dir}: cannot write there ({error.strerror})") from None


def stored_field_types(client: InfluxClient, measurement: str) -> list[tuple[str, str]]:
    """(field, kind) pairs InfluxDB holds for `measurement` (`SHOW FIELD KEYS`): the one place the
    bridge queries InfluxDB. LookupFailed when it cannot answer."""
    try:
        series = client.query(f'SHOW FIELD KEYS FROM "{measurement}"', timeout=FIELD_LOOKUP_TIMEOUT_S)  # a NAME: no quote can be in it
    except InfluxDatabaseMissing:
        return []  # nothing stored yet; the first write creates it
    except InfluxUnreachable as error:
        raise LookupFailed(f"cannot query InfluxDB at {client.url}: {error.cause}") from None
    except InfluxRefused as error:
        raise LookupFailed(error.reason) from None
    return [(name, kind) for one in series for name, kind in one["values"]]
