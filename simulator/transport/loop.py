"""paho's network loop, turned by our own thread instead of paho's `loop_start()` thread.

With paho's thread, every message cost handovers of the interpreter lock between it and the thread
that publishes or acknowledges, and whatever another thread sent also cost a wake-up byte on a
socket pair. Turned from the thread that does the work (the simulation; the bridge's network
thread), paho hands a packet over at once and reads when asked. What is written between two turns
is collected by the client (simulator/transport/client.py) and sent in one call at the next turn,
so a burst leaves in a few segments instead of one each, and Mosquitto reads it in fewer calls too;
Nagle's delay is off, since the bursts are ours. Measured on the 2-core machine, making and
publishing 60,000 air-quality messages at QoS 1 took 7.5 s of CPU with paho's thread, 5.6 s turned
from the caller's thread, and 3.9 s with the writes of a turn held together (then by TCP_CORK).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

from simulator.transport.client import Client

# Reconnect attempts back off from 0.25 s, doubling, to at most 2 s: after a broker restart the
# clients are back within ~2 s (measured by benchmarks/recovery.py), and a refused TCP connect to a
# stopped broker costs next to nothing.
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.25, 2.0
# The longest one turn waits in select() before paho's keepalive bookkeeping runs again.
LOOP_WAIT_S = 1.0


class ClientLoop:
    """Turns one paho client's network loop: wait, read, write, keep alive, reconnect with backoff.

    Call `connected()` from the client's on_connect and `disconnected()` from its on_disconnect."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.last_error: str | None = None  # why the last connection attempt failed
        self._retry_delay = RECONNECT_MIN_S
        self._next_attempt = 0.0

    def turn(self, wait: float, wake: socket.socket | None = None, received: Callable[[], int] | None = None, packets: int = 1) -> bool:
        """Send what was written since the last turn; wait up to `wait` s for the socket (or for `wake`
        to become readable), read, write, keep alive; while disconnected, reconnect when due. True if woken.

        paho reads one packet per call unless it has messages in flight (then as many as those), and a
        client with light messages the whole PUBLISH packets in its buffer. A subscriber passes
        `received`, a count that grows with every message read, and reads go on while it grows, until
        about `packets` messages: one select() per burst instead of one per message."""
        sock = self.client.socket()
        if sock is None:
            return self._reconnect_when_due(wait, wake)
        self.flush()
        woken = False
        if wait > 0 and not self.client.has_buffered_input() and not _decrypted_bytes_waiting(sock):
            readable = [sock, wake] if wake is not None else [sock]
            ready, _, _ = select.select(readable, [sock] if self.client.want_write() else [], [], min(wait, LOOP_WAIT_S))
            woken = wake is not None and wake in ready and _drain(wake)
        first = received() if received is not None else 0
        self.client.loop_read()
        if received is not None:
            for _ in range(packets - 1):
                before = received()
                if before - first >= packets:
                    break  # a read may bring many messages (the client takes whole PUBLISH packets from its buffer)
                self.client.loop_read()  # an empty socket costs one recv() that would block
                if received() == before or self.client.socket() is not sock:
                    break
        if self.client.want_write():
            self.client.loop_write()
        self.client.loop_misc()
        self.flush()  # what this turn wrote (keepalive pings, say)
        return woken

    def flush(self) -> None:
        """Send what was written since the last turn now, in one call."""
        self.client.flush_output()

    def connected(self) -> None:
        self._retry_delay = RECONNECT_MIN_S
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # our bursts, sent whole at once
            except OSError:
                pass  # the connection is going away; paho notices on its next read or write

    def disconnected(self) -> None:
        self._next_attempt = time.monotonic() + self._retry_delay

    def disconnect(self, timeout: float = 2.0) -> None:
        """Say goodbye to the broker (DISCONNECT) and close the connection; turns the loop until paho
        has written it (the client sends everything collected before closing)."""
        if self.client.socket() is None:
            return
        self.client.disconnect()  # paho closes the socket once DISCONNECT is written
        deadline = time.monotonic() + timeout
        while self.client.socket() is not None and self.client.want_write() and time.monotonic() < deadline:
            self.turn(0.05)

    def _reconnect_when_due(self, wait: float, wake: socket.socket | None) -> bool:
        """Connect again if the backoff delay has passed; otherwise wait towards it, at most `wait` s
        (returning early, True, if `wake` becomes readable)."""
        now = time.monotonic()
        if now < self._next_attempt:
            delay = min(wait, self._next_attempt - now)
            if wake is None:
                time.sleep(delay)
                return False
            ready, _, _ = select.select([wake], [], [], delay)
            return bool(ready) and _drain(wake)
        try:
            self.client.reconnect()  # TCP (and TLS) connect, then CONNECT; the CONNACK is read later
        except OSError as error:
            self.last_error = str(error) or type(error).__name__
            self._next_attempt = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, RECONNECT_MAX_S)
        return False


def _decrypted_bytes_waiting(sock: socket.socket) -> bool:
    """TLS may hold decrypted bytes that select() cannot see."""
    pending = getattr(sock, "pending", None)
    return bool(pending and pending())


def _drain(wake: socket.socket) -> bool:
    """Empty a wake-up socket (one byte per wake-up); True."""
    try:
        while wake.recv(4096):
            pass
    except BlockingIOError:
        pass
    return True
