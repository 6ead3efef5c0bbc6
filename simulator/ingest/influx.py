"""Writing line-protocol batches to InfluxDB's 1.x `/write` API (also served by 2.x/3.x as v1 compatibility).

One keep-alive session, gzip bodies, millisecond precision. Connection errors, 5xx and 429 are
retried with capped exponential backoff for as long as the bridge runs, or until the bridge decides
to put the batch in its disk spool instead (`give_up`); until then its messages stay unacknowledged
at the broker. A 400 names points InfluxDB refuses (e.g. a field type
conflict); the batch is then split until the refused lines are isolated, so one bad point never
loses its neighbours.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from simulator.errors import DatabaseError


class InfluxRefused(DatabaseError):
    """InfluxDB answered with an error retrying cannot fix (bad credentials, bad database name)."""


class WriteDeferred(Exception):
    """The caller's `give_up` said to stop retrying for now; the batch was not stored."""


@dataclass
class WriteStats:
    batches: int = 0
    points: int = 0
    retries: int = 0
    rejected: int = 0


class InfluxWriter:
    def __init__(
        self,
        url: str,
        database: str,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.stats = WriteStats()
        self.session = requests.Session()
        self.session.headers["Content-Encoding"] = "gzip"
        self.session.headers["Content-Type"] = "text/plain; charset=utf-8"
        if token:
            self.session.headers["Authorization"] = f"Token {token}"
        self.params = {"db": database, "precision": "ms"}
        if user:
            self.params |= {"u": user, "p": password or ""}
        self.stopping = threading.Event()
        self.on_retry: Callable[[str], None] = lambda reason: None

    def write(self, lines: list[str], give_up: Callable[[], bool] = lambda: False) -> list[tuple[str, str]]:
        """Store `lines`, retrying until stored; return the (line, reason) pairs InfluxDB refused.

        Returns early only while retrying: with InterruptedError when `stopping` is set, with
        WriteDeferred when `give_up()` turns true (checked every 0.1 s).
        """
        if not lines:
            return []
        status, text = self._post_until_answered(lines, give_up)
        if status == 204:
            self.stats.batches += 1
            self.stats.points += len(lines)
            return []
        if status == 400 or status == 413:
            if len(lines) == 1:
                self.stats.rejected += 1
                return [(lines[0], f"InfluxDB refused the point: {error_text(text)}")]
            middle = len(lines) // 2
            # Points before the bad one may already be stored; writing them again overwrites them.
            return self.write(lines[:middle], give_up) + self.write(lines[middle:], give_up)
        raise InfluxRefused(f"InfluxDB at {self.url} refused writes to database {self.database!r}: HTTP {status} {error_text(text)}")

    def _post_until_answered(self, lines: list[str], give_up: Callable[[], bool]) -> tuple[int, str]:
        body = gzip.compress("\n".join(lines).encode(), compresslevel=1)
        delay = 0.25
        while True:
            try:
                response = self.session.post(f"{self.url}/write", params=self.params, data=body, timeout=self.timeout)
                if response.status_code == 404 and "database not found" in response.text:
                    self.create_database()
                    reason = f"database {self.database!r} did not exist; created it"
                elif response.status_code >= 500 or response.status_code == 429:
                    reason = f"HTTP {response.status_code} {error_text(response.text)}"
                else:
                    return response.status_code, response.text
            except requests.RequestException as error:
                reason = f"cannot reach InfluxDB at {self.url}: {type(error).__name__}"
            self.stats.retries += 1
            self.on_retry(reason)
            self._back_off(delay, give_up)
            delay = min(delay * 2, self.max_backoff)

    def _back_off(self, delay: float, give_up: Callable[[], bool]) -> None:
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            if self.stopping.wait(min(remaining, 0.1)):
                raise InterruptedError("stopped while InfluxDB was unavailable")
            if give_up():
                raise WriteDeferred("gave up retrying for now")

    def create_database(self) -> None:
        self.session.post(
            f"{self.url}/query",
            params={k: v for k, v in self.params.items() if k in ("u", "p")} | {"q": f'CREATE DATABASE "{self.database}"'},
            headers={"Content-Encoding": None},  # type: ignore[dict-item]  # no gzip body here
            timeout=self.timeout,
        )

    def close(self) -> None:
        self.session.close()


def error_text(body: str) -> str:
    """InfluxDB's JSON error message, on one line."""
    text = body.strip()
    if text.startswith('{"error":'):
        text = text[len('{"error":') :].rstrip("}").strip().strip('"')
    return " ".join(text.split())[:300]
