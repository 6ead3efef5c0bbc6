"""paho's MQTT client, with two of its per-message costs taken out for MQTT 3.1.1 (what we speak).

Measured on the 2-core machine, 60,000 load_probe messages at QoS 1 (benchmarks/capacity.py holds
the end-to-end figures):

- For every PUBACK, paho builds a ReasonCode and a Properties object (MQTT 5 things; a 3.1.1
  PUBACK is only the message id), and Properties fills two dicts of every property name each time.
  That was 18 of the publisher's 50 µs per message. Here a 3.1.1 PUBACK passes one shared success
  reason and one empty Properties to `on_publish`.
- paho reads each packet's fixed header one byte per `recv()` call: three system calls for every
  message. Here reads go through a 64 KiB buffer, and the bridge's network thread went from 64 to
  41 µs per message. A loop that waits in select() must first ask `has_buffered_input()`, since
  bytes already in the buffer no longer make the socket readable (ClientLoop does).

Both replace private methods of paho-mqtt (2.1 and 2.2 have them as used here). If the installed
paho's differ, `FAST_PATHS` is False and the stock methods run: slower, never wrong, and
tests/test_transport_client.py fails so that the change is noticed.
"""

from __future__ import annotations

import inspect
import struct
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

READ_BUFFER = 65536
PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)  # reason 0, the only one MQTT 3.1.1 has
NO_PROPERTIES = Properties(PacketTypes.PUBACK)


def _parameters(method: Any) -> list[str]:
    return list(inspect.signature(method).parameters)


def _paho_internals_as_expected() -> bool:
    """The private methods overridden here exist with the parameters used here."""
    try:
        return (
            _parameters(mqtt.Client._handle_pubackcomp) == ["self", "cmd"]
            and _parameters(mqtt.Client._do_on_publish) == ["self", "mid", "reason_code", "properties"]
            and _parameters(mqtt.Client._sock_recv) == ["self", "bufsize"]
        )
    except (AttributeError, TypeError, ValueError):
        return False


FAST_PATHS = _paho_internals_as_expected()


class Client(mqtt.Client):
    """`paho.mqtt.client.Client` with a cheaper PUBACK (MQTT 3.1.1) and buffered socket reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._input: bytes = b""
        self._input_at = 0
        self._input_socket: object = None  # the socket `_input` came from: a new connection starts empty

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

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if not FAST_PATHS or cmd != "PUBACK" or self._protocol == MQTTProtocolVersion.MQTTv5 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)  # MQTT 5, PUBCOMP (QoS 2), or malformed: paho's own way
        (mid,) = struct.unpack("!H", packet)
        with self._out_message_mutex:
            if mid in self._out_messages:  # only the first PUBACK for a message counts
                return self._do_on_publish(mid, PUBACK_SUCCESS, NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
