"""paho's MQTT client, with three of its per-message costs taken out for MQTT 3.1.1 (what we speak),
and a gentler close.

Measured on the 2-core machine, 60,000 load_probe messages at QoS 1 (benchmarks/capacity.py holds
the end-to-end figures):

- For every PUBACK, paho builds a ReasonCode and a Properties object (MQTT 5 things; a 3.1.1
  PUBACK is only the message id), and Properties fills two dicts of every property name each time.
  That was 18 of the publisher's 50 µs per message. Here a 3.1.1 PUBACK passes one shared success
  reason and one empty Properties to `on_publish`.
- paho reads each packet's fixed header one byte per `recv()` call: three system calls for every
  message. Here reads go through a 64 KiB buffer, and the bridge's network thread went from 64 to
  41 µs per message. A loop that waits in select() must first ask `has_buffered_input()`, since
  bytes already in the buffer no longer make the socket readable.
- paho writes every packet with a `send()` call of its own, and an acknowledgement the bridge sends
  cost 10 µs, 7.5 of them that call. Here packets are collected and go out together, in one call,
  when the owner of the loop calls `flush_output()` (or once 64 KiB are waiting; while that much
  finds no room on the socket, paho keeps further packets itself, as it would have). `want_write()`
  is also true while collected bytes wait for room.
- For every PUBLISH received, paho builds an MQTTMessage with a threading.Condition of its own, decodes
  the topic twice, formats a debug line and looks for per-topic callbacks: 8 of the bridge's 40 µs
  per message (benchmarks/bridge_cpu.py). A client with `light_messages` on takes MQTT 3.1.1
  PUBLISH packets at QoS 0 and 1 apart itself and hands `on_message` a `Received` (topic, payload,
  mid, qos, dup, retain) instead; it has no per-topic callbacks (`message_callback_add`).
- paho's `publish()` at QoS 1 validates, builds an MQTTMessage with an MQTTMessageInfo and its
  threading.Condition, formats a debug line, queues the packet as a dict and writes it through
  `loop_write()`: 25 µs of the simulator's 42 per message. `publish_qos1()` builds the same PUBLISH
  bytes (tests/test_transport_client.py compares them with paho's) and collects them with the other
  writes, and enters the message in paho's table of messages in flight as an `Outgoing`, which paho
  sends again after a reconnect exactly as it would its own (benchmarks/publisher_cpu.py measures it);
  it returns paho's (rc, mid), refusals included. `publish_qos0()` does the same at QoS 0: the PUBLISH
  bytes collected, nothing kept, the message id returned (or paho's MQTTMessageInfo where paho's
  `publish()` did it); the simulator's publish path at QoS 0 went from 14-16 to 3-4.5 µs a message.
- paho frames every PUBACK with three reads from the buffer and dispatches it through four calls.
  `loop_read()` first takes the whole 3.1.1 PUBACKs at the front of the read buffer at once. With
  both, the simulator's publish path went from 27-29 to 5-7 µs a message (docs/load.md).
- Likewise for a subscriber with `light_messages`: `loop_read()` takes the whole 3.1.1 PUBLISH packets
  at QoS 0 and 1 at the front of the read buffer in one loop (paho's framing, a byte per call for the
  fixed header, its dispatch and the buffer's slicing for each call were 7.7 of the bridge's 28.9 µs
  a message, profiled), and `on_messages`, if set, gets them all at once. A packet cut by the buffer's
  end, or anything else, paho's own reading takes.
- paho's `ack()` queues each PUBACK as a dict and writes it through `loop_write()` (2.4 µs a message
  for the bridge); `ack_all()` builds the PUBACKs of a batch in one `struct.pack` and collects them as
  one write, the same bytes (tests/test_transport_client.py compares them with paho's).
- Closing the connection (after DISCONNECT, say) first sends what is collected, then ends our side
  and waits (at most a second) for the broker to end its own.

ClientLoop (simulator/transport/loop.py) turns the loop the way these need. They replace private
methods of paho-mqtt (2.1 and 2.2 have them as used here). If the installed paho's differ,
`FAST_PATHS` is False and the stock methods run: slower, never wrong, and
tests/test_transport_client.py fails so that the change is noticed.
"""

from __future__ import annotations

import inspect
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

READ_BUFFER = 65536
WRITE_BUFFER = 65536  # collected bytes past this go out at once
CLOSE_WAIT_S = 1.0  # at most this long to send what is collected, and hear the broker close, before closing
PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)  # reason 0, the only one MQTT 3.1.1 has
NO_PROPERTIES = Properties(PacketTypes.PUBACK)
PUBACK_READS = 4  # reads of whole PUBACKs in one loop_read(): the window (at most 65,535 in flight) bounds them too


def _parameters(method: Any) -> list[str]:
    return list(inspect.signature(method).parameters)


def _paho_internals_as_expected() -> bool:
    """The private methods overridden here exist with the parameters used here."""
    try:
        return (
            _parameters(mqtt.Client._handle_pubackcomp) == ["self", "cmd"]
            and _parameters(mqtt.Client._do_on_publish) == ["self", "mid", "reason_code", "properties"]
            and _parameters(mqtt.Client._sock_recv) == ["self", "bufsize"]
            and _parameters(mqtt.Client._sock_send) == ["self", "buf"]
            and _parameters(mqtt.Client._sock_close) == ["self"]
            and _parameters(mqtt.Client._handle_publish) == ["self"]
            and _parameters(mqtt.Client._mid_generate) == ["self"]
            and _parameters(mqtt.Client._packet_read) == ["self"]
        )
    except (AttributeError, TypeError, ValueError):
        return False


# paho's private attributes the fast QoS 1 path reads and sets; a client without them all publishes paho's way.
FAST_PUBLISH_ATTRIBUTES = (
    "_out_messages", "_out_message_mutex", "_inflight_messages", "_max_inflight_messages", "_max_queued_messages", "_last_mid",
    "_mid_generate_mutex", "_out_packet", "_thread", "_on_socket_register_write", "_in_packet", "_in_callback_mutex",
    "_msgtime_mutex", "_last_bytes_received", "_callback_api_version", "_userdata",
)  # fmt: skip
# Those the batch paths (PUBLISH packets from the read buffer, ack_all) read and set; without them all, paho reads and acknowledges.
FAST_BATCH_ATTRIBUTES = (
    "_in_packet", "_msgtime_mutex", "_last_bytes_received", "_last_msg_out", "_manual_ack", "_in_callback_mutex", "_userdata",
    "_out_packet", "_thread", "_on_socket_register_write", "_protocol", "_sock",
)  # fmt: skip


FAST_PATHS = _paho_internals_as_expected()


class Received:
    """A PUBLISH received on the light path: what a subscriber reads of paho's MQTTMessage."""

    __slots__ = ("topic", "payload", "mid", "qos", "dup", "retain")

    def __init__(self, topic: str, payload: bytes, mid: int, qos: int, dup: bool, retain: bool) -> None:
        self.topic, self.payload, self.mid, self.qos, self.dup, self.retain = topic, payload, mid, qos, dup, retain


class Outgoing:
    """A QoS 1 message of `publish_qos1()` in paho's `_out_messages`, in place of an MQTTMessage: the
    attributes paho reads and sets when it sends the message again after reconnecting (`topic` a str,
    as MQTTMessage's property gives it), and `info` for the PUBACK, without MQTTMessage's
    MQTTMessageInfo and the threading.Condition each of those holds. paho only ever sets `timestamp`."""

    __slots__ = ("dup", "mid", "payload", "properties", "qos", "retain", "state", "timestamp", "topic")

    def __init__(self, mid: int, topic: str, payload: bytes) -> None:
        self.mid, self.topic, self.payload = mid, topic, payload
        self.qos, self.retain, self.dup, self.state, self.timestamp, self.properties = 1, False, False, mqtt.mqtt_ms_wait_for_puback, 0.0, None

    @property
    def info(self) -> Outgoing:
        return self  # paho's PUBACK handling calls `msg.info._set_as_published()`

    def _set_as_published(self) -> None:
        """Nobody waits on this message's info: the publisher counts its PUBACKs in on_publish."""


PUBACK_FRAME = 0x4002 << 16  # a PUBACK as a 32-bit big-endian number: the fixed header, then the message id
QOS0_PUBLISH, QOS1_PUBLISH = 0x30, 0x32  # PUBLISH at QoS 0 and 1, neither dup nor retain
SUCCESS, QUEUE_SIZE = MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE  # looked up once: an Enum's attribute costs
MAX_REMAINING_LENGTH = 268_435_455  # MQTT's largest packet body
# (remaining length << 8 | the first byte) → a PUBLISH's fixed header; payloads come in few lengths
_fixed_headers: dict[int, bytes] = {}


def _fixed_header(remaining: int, command: int = QOS1_PUBLISH) -> bytes:
    key = remaining << 8 | command
    header = _fixed_headers.get(key)
    if header is None:
        encoded, rest = bytearray([command]), remaining
        while True:  # MQTT's variable-length integer, 7 bits a byte, least significant first
            byte, rest = rest & 0x7F, rest >> 7
            encoded.append(byte | 0x80 if rest else byte)
            if not rest:
                break
        header = _fixed_headers.setdefault(key, bytes(encoded)) if len(_fixed_headers) < 4096 else bytes(encoded)
    return header


class Client(mqtt.Client):
    """`paho.mqtt.client.Client` with a cheaper PUBACK (MQTT 3.1.1), buffered socket reads, writes
    collected until `flush_output()`, a light PUBLISH path for subscribers, and a fast QoS 1 and QoS 0 publish."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._input: bytes = b""
        self._input_at = 0
        self._input_socket: object = None  # the socket `_input` came from: a new connection starts empty
        self._output: list[bytes | bytearray] = []
        self._output_size = 0
        self._output_socket: object = None  # likewise for `_output`
        self.light_messages = False  # on: on_message gets a Received, and per-topic callbacks are not looked for
        # With light_messages: called as (client, userdata, [Received, ...]) with every PUBLISH of a read at once, instead of
        # on_message; what paho delivers itself (MQTT 5, QoS 2) still goes to on_message, as an MQTTMessage.
        self.on_messages: Callable[[Client, Any, list[Received]], None] | None = None
        # off: publish_qos1() and publish_qos0() always take paho's publish(), and paho reads every PUBACK (benchmarks/publisher_cpu.py compares)
        self.fast_publish = all(hasattr(self, name) for name in FAST_PUBLISH_ATTRIBUTES)
        self.fast_batches = FAST_PATHS and all(hasattr(self, name) for name in FAST_BATCH_ATTRIBUTES)

    def publish_qos1(self, topic: str, payload: bytes) -> tuple[MQTTErrorCode, int]:
        """Publish at QoS 1: paho's `publish(topic, payload, 1)`, its (rc, mid) and the same bytes on the
        wire, without its per-message objects. As paho's: MQTT_ERR_QUEUE_SIZE when the next message id is
        still in flight (the message is not taken: the caller holds it), MQTT_ERR_NO_CONN when not
        connected (paho keeps it and sends it after reconnecting). Whenever the fast way does not fit
        (`_fast_topic`, or paho's own in-flight and queue bounds), paho's own `publish()` does it."""
        topic_bytes = self._fast_topic(topic, payload, 4)
        if topic_bytes is None or self._max_inflight_messages != 0 or self._max_queued_messages != 0:
            info = super().publish(topic, payload, 1)
            return info.rc, info.mid
        with self._mid_generate_mutex:  # paho's _mid_generate(), without the call
            mid = self._last_mid = self._last_mid % 65535 + 1
        with self._out_message_mutex:
            if mid in self._out_messages:  # still in flight (65,535 of them, say): paho refuses this message
                return QUEUE_SIZE, mid
            self._out_messages[mid] = Outgoing(mid, topic, payload)
            self._inflight_messages += 1
        packet = b"".join((_fixed_header(4 + len(topic_bytes) + len(payload)), struct.pack("!H", len(topic_bytes)), topic_bytes, struct.pack("!H", mid), payload))
        self._output.append(packet)
        self._output_size += len(packet)
        return SUCCESS, mid

    def publish_qos0(self, topic: str, payload: bytes) -> int | mqtt.MQTTMessageInfo:
        """Publish at QoS 0: paho's `publish(topic, payload, 0)` and the same bytes on the wire (paho numbers
        QoS 0 messages too, though no id goes out), without its MQTTMessageInfo and the threading.Condition
        it holds. Returns the message id when the packet joined the collected writes: written, what paho
        calls published at QoS 0 (and would tell on_publish, which is not called here). Whenever the fast
        way does not fit (`_fast_topic`), returns the MQTTMessageInfo of paho's own `publish()`, whose
        `is_published()` tells: written, waiting in paho for room on the socket, or (a RuntimeError)
        gone, not connected or lost with the connection."""
        topic_bytes = self._fast_topic(topic, payload, 2)
        if topic_bytes is None:
            return super().publish(topic, payload, 0)
        mid = self._mid_generate()
        packet = b"".join((_fixed_header(2 + len(topic_bytes) + len(payload), QOS0_PUBLISH), struct.pack("!H", len(topic_bytes)), topic_bytes, payload))
        self._output.append(packet)
        self._output_size += len(packet)
        return mid

    def _fast_topic(self, topic: str, payload: bytes, overhead: int) -> bytes | None:
        """The topic's UTF-8 bytes if a PUBLISH of `payload` (with `overhead` bytes of the body besides topic
        and payload) can be built here and join the collected writes: the fast paths on, `_fast_write_fits`,
        MQTT 3.1.1 (or 3.1), bytes paho sends as they are, a topic paho takes and lengths MQTT allows.
        None: paho's own `publish()` does it (and raises its errors)."""
        if self._output_size >= WRITE_BUFFER:
            self.flush_output()  # as _sock_send would before collecting more
        if not (
            FAST_PATHS
            and self.fast_publish
            and self._fast_write_fits()
            and self._protocol != MQTTProtocolVersion.MQTTv5
            and type(payload) is bytes
            and topic
            and "+" not in topic
            and "#" not in topic
        ):
            return None
        topic_bytes = topic.encode("utf-8")
        if len(topic_bytes) > 65535 or overhead + len(topic_bytes) + len(payload) > MAX_REMAINING_LENGTH:
            return None  # too long: paho's way, and its error
        return topic_bytes

    def _fast_write_fits(self) -> bool:
        """Packets can join the collected writes: connected, nothing that paho still keeps to write first
        (order), room in the buffer, and no thread or external loop of paho's to wake."""
        return (
            self._sock is not None
            and self._output_socket is self._sock
            and self._output_size < WRITE_BUFFER
            and not self._out_packet
            and self._thread is None
            and self._on_socket_register_write is None
        )

    def _handle_publish(self) -> MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if not (FAST_PATHS and self.light_messages) or self._protocol == MQTTProtocolVersion.MQTTv5 or qos > 1 or len(packet) < 2:
            return super()._handle_publish()  # MQTT 5, QoS 2, or too short: paho's own way (and its error)
        length = (packet[0] << 8) | packet[1]
        end = 2 + length
        if length == 0 or len(packet) < end + (2 if qos else 0):
            return super()._handle_publish()  # malformed: paho says so
        mid = (packet[end] << 8) | packet[end + 1] if qos else 0
        # Invalid UTF-8 in a topic becomes U+FFFD, a topic no subscriber's prefix matches (paho would raise in the callback).
        message = Received(packet[2:end].decode("utf-8", "replace"), bytes(packet[end + 2 if qos else end :]), mid, qos, bool(header & 0x08), bool(header & 0x01))
        self._deliver(message)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _deliver(self, message: Received) -> None:
        """One light message to on_messages (as a batch of one) or on_message."""
        on_messages, on_message = self.on_messages, self.on_message
        if on_messages is not None:
            with self._in_callback_mutex:
                on_messages(self, self._userdata, [message])
        elif on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def has_buffered_input(self) -> bool:
        """Bytes of this connection already read from the socket and not yet handled by paho."""
        return self._input_socket is self._sock and self._input_at < len(self._input)

    def _sock_recv(self, bufsize: int) -> bytes:
        if not FAST_PATHS:
            return super()._sock_recv(bufsize)
        if not self.has_buffered_input():
            if bufsize >= READ_BUFFER:
                return super()._sock_recv(bufsize)  # a large payload: straight into paho's packet
            data = super()._sock_recv(READ_BUFFER)  # BlockingIOError when nothing waits, as before
            if not data:
                return data  # the broker closed the connection
            self._input, self._input_at, self._input_socket = data, 0, self._sock
        chunk = self._input[self._input_at : self._input_at + bufsize]
        self._input_at += len(chunk)
        return chunk

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's `loop_read()`, after taking the whole 3.1.1 PUBACKs at the front of the read buffer
        (or of one read into it) at once: paho frames each packet with three reads and dispatches it
        through four calls, 3 µs a message. While a read ends with a whole PUBACK, it reads again: under a
        busy broker more arrive while a turn runs, and paho's reading on would frame each of them itself
        (7-14 % of the PUBACKs end to end in benchmarks/pipeline.py, ~1 % now). Whatever else comes, and a PUBACK cut
        by the buffer's end, paho's own reading takes."""
        if FAST_PATHS and self.fast_publish:
            for _ in range(PUBACK_READS):
                if not self._take_pubacks():
                    break
        if self.fast_batches and self.light_messages and self._take_publishes() and not self.has_buffered_input():
            return MQTTErrorCode.MQTT_ERR_SUCCESS  # all read were whole: the next call reads on (paho would frame the next packet itself)
        return super().loop_read(max_packets)

    def _fill_input(self) -> bool:
        """Bytes are in the read buffer, read into it now if it was empty; False if none wait (or the read
        failed, or the broker closed: paho's own read meets that again)."""
        if not self.has_buffered_input():
            try:
                data = super()._sock_recv(READ_BUFFER)
            except OSError:  # BlockingIOError: nothing waits; any other error paho's own read meets again
                return False
            self._input, self._input_at, self._input_socket = data, 0, self._sock  # b"" (closed): paho's read sees it again
        return self._input_at < len(self._input)

    def _take_publishes(self) -> bool:
        """The whole MQTT 3.1.1 PUBLISH packets at QoS 0 and 1 at the front of the read buffer (or of one
        read into it), taken apart as `_handle_publish` does and delivered in order: to on_messages all
        at once, or one by one to on_message (each followed by its PUBACK unless acknowledgements are
        manual, as paho sends it). A packet cut by the buffer's end, anything else, and a malformed
        PUBLISH stop it: paho's own reading takes them. True if it took any."""
        if self._sock is None or self._in_packet["command"] != 0 or self._protocol == MQTTProtocolVersion.MQTTv5 or not self._fill_input():
            return False
        buffer, at, end = self._input, self._input_at, len(self._input)
        messages: list[Received] = []
        ends: list[int] = []  # where each message's packet ends in the buffer
        while at < end:
            header = buffer[at]
            if header & 0xF0 != 0x30 or header & 0x06 > 0x02:
                break  # not a PUBLISH, or QoS 2 (or 3, malformed)
            remaining, shift, length_at = 0, 0, at + 1
            while length_at < end and length_at - at <= 4:  # MQTT's variable-length integer, at most 4 bytes
                byte = buffer[length_at]
                remaining |= (byte & 0x7F) << shift
                length_at, shift = length_at + 1, shift + 7
                if not byte & 0x80:
                    break
            else:
                break  # cut by the buffer's end, or longer than MQTT allows
            body, packet_end = length_at, length_at + remaining
            qos = (header & 0x06) >> 1
            topic_end = body + 2 + ((buffer[body] << 8) | buffer[body + 1]) if body + 2 <= packet_end and packet_end <= end else 0
            if topic_end <= body + 2 or topic_end + (2 if qos else 0) > packet_end:
                break  # cut by the buffer's end, or malformed (an empty topic, a topic longer than the packet)
            mid = (buffer[topic_end] << 8) | buffer[topic_end + 1] if qos else 0
            # Invalid UTF-8 in a topic becomes U+FFFD, as in _handle_publish.
            messages.append(Received(buffer[body + 2 : topic_end].decode("utf-8", "replace"), buffer[topic_end + 2 if qos else topic_end : packet_end], mid, qos, bool(header & 0x08), bool(header & 0x01)))
            at = packet_end
            ends.append(at)
        if not messages:
            return False
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()  # paho's keepalive hears the broker, as its own read would note
        on_messages = self.on_messages
        if on_messages is not None:
            self._input_at = at
            with self._in_callback_mutex:
                on_messages(self, self._userdata, messages)
        for message, packet_end in zip(messages, ends):
            if on_messages is None:
                self._input_at = packet_end  # a callback that raises leaves the messages after its own in the buffer
                self._deliver(message)
            if message.qos == 1 and not self._manual_ack:
                self._send_puback(message.mid)
        return True

    def ack_all(self, acks: list[tuple[int, int]]) -> None:
        """paho's `ack(mid, qos)` for each (mid, qos) in order, and the same bytes on the wire: for MQTT
        3.1.1 at QoS 0 and 1 (what a 3.1.1 subscription at QoS 1 receives), the PUBACKs are built at
        once and collected as one write. Whenever that does not fit (MQTT 5, a QoS 2 message, paho
        still holding packets, a full write buffer, a thread of paho's to wake), paho's `ack()` does it."""
        if not (self.fast_batches and self._manual_ack and self._fast_write_fits() and self._protocol != MQTTProtocolVersion.MQTTv5 and all(qos < 2 for _, qos in acks)):
            for mid, qos in acks:
                self.ack(mid, qos)
            return
        frames = [PUBACK_FRAME | mid for mid, qos in acks if qos == 1]
        if not frames:
            return
        packet = struct.pack(f"!{len(frames)}I", *frames)  # each 0x40 0x02 (PUBACK, remaining length 2) and the message id
        self._output.append(packet)
        self._output_size += len(packet)
        with self._msgtime_mutex:
            self._last_msg_out = mqtt.time_func()  # as paho's _packet_write notes: its keepalive need not ping
        if self._output_size >= WRITE_BUFFER:
            self.flush_output()  # as _sock_send would before collecting more

    def _take_pubacks(self) -> bool:
        """Take the whole PUBACKs at the front of the read buffer (or of one read into it); True if they
        were all it held, so that a read may bring more."""
        if (
            self._sock is None
            or not self._out_messages  # nothing waits for a PUBACK (a subscriber's reads, say)
            or self._in_packet["command"] != 0
            or self._protocol == MQTTProtocolVersion.MQTTv5
            or self._max_inflight_messages != 0
            or self._callback_api_version != CallbackAPIVersion.VERSION2
        ):
            return False  # paho is within a packet, keeps bounds of its own, or calls on_publish another way
        if not self._fill_input():
            return False
        buffer, at, end = self._input, self._input_at, len(self._input)
        if end - at < 4 or buffer[at] != 0x40 or buffer[at + 1] != 0x02:
            return False
        out_messages, on_publish = self._out_messages, self.on_publish
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()  # paho's keepalive hears the broker, as its own read would note
        with self._out_message_mutex, self._in_callback_mutex:
            try:
                while end - at >= 4 and buffer[at] == 0x40 and buffer[at + 1] == 0x02:  # PUBACK, remaining length 2
                    mid = (buffer[at + 2] << 8) | buffer[at + 3]
                    at += 4
                    message = out_messages.get(mid)
                    if message is None:
                        continue  # only the first PUBACK for a message counts
                    if on_publish is not None:
                        on_publish(self, self._userdata, mid, PUBACK_SUCCESS, NO_PROPERTIES)
                    del out_messages[mid]  # as paho's _do_on_publish: after on_publish
                    message.info._set_as_published()
                    self._inflight_messages -= 1
            finally:
                self._input_at = at
        return at == end

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if not FAST_PATHS or cmd != "PUBACK" or self._protocol == MQTTProtocolVersion.MQTTv5 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)  # MQTT 5, PUBCOMP (QoS 2), or malformed: paho's own way
        (mid,) = struct.unpack("!H", packet)
        with self._out_message_mutex:
            if mid in self._out_messages:  # only the first PUBACK for a message counts
                return self._do_on_publish(mid, PUBACK_SUCCESS, NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    # --- writes, collected ---

    def want_write(self) -> bool:
        return super().want_write() or self._has_output()

    def flush_output(self) -> None:
        """Send the collected packets in one call; what the socket has no room for waits for the next."""
        if not self._output:
            return
        if self._output_socket is not self._sock:
            self._output, self._output_size = [], 0  # collected for a connection that is gone
            return
        data = self._output[0] if len(self._output) == 1 else b"".join(self._output)
        try:
            sent = super()._sock_send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # the connection is broken: paho notices on its next read and, reconnected, sends QoS 1 again
            sent = len(data)
        rest = data[sent:]
        self._output, self._output_size = ([rest] if rest else []), len(rest)

    def _has_output(self) -> bool:
        return bool(self._output) and self._output_socket is self._sock

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if not FAST_PATHS:
            return super()._sock_send(buf)
        if self._sock is None:
            raise ConnectionError("self._sock is None")
        if self._output_socket is not self._sock:
            self._output, self._output_size, self._output_socket = [], 0, self._sock  # a new connection
        if self._output_size >= WRITE_BUFFER:
            self.flush_output()
            if self._output_size >= WRITE_BUFFER:
                raise BlockingIOError  # the socket is full: paho keeps the packet until there is room
        self._output.append(buf)  # paho does not touch a packet again once written
        self._output_size += len(buf)
        return len(buf)

    def _sock_close(self) -> None:
        if FAST_PATHS and self._sock is not None:
            self._close_gracefully(self._sock)
        super()._sock_close()

    def _close_gracefully(self, sock: socket.socket) -> None:
        """Send what is collected (the DISCONNECT paho just wrote, say), then end our side and wait for
        the broker to end its own: it has then handled every packet. Closing at once could reset the
        connection, and Mosquitto drops what it had not read yet; acknowledgements sent just before
        DISCONNECT were lost that way (with paho's own writes too) and the messages came again."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        try:
            while self._has_output() and (remaining := deadline - time.monotonic()) > 0:
                self.flush_output()
                if self._has_output():
                    select.select([], [sock], [], remaining)
            socket.socket.shutdown(sock, socket.SHUT_WR)
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([sock], [], [], remaining)
                if readable and not socket.socket.recv(sock, READ_BUFFER):
                    return  # the broker closed its side
        except (OSError, ValueError):
            return  # the connection was already gone
