"""The one InfluxDB client: every write and query of the package goes through `InfluxClient`.

It speaks InfluxDB's 1.x HTTP API (`/write`, `/query`, `/ping`; 2.x and 3.x serve it as v1
compatibility) over one keep-alive requests session, for the bridge, the simulator's `pipeline`
counters, the load recorder, `iotsim counts`, `iotsim verify`, the stack and the benchmarks. Batch
writes to a plain http:// URL with no proxy in the environment go on a keep-alive http.client
connection of their own (`BatchPoster`): a quarter of requests' CPU per POST.

- Credentials (`InfluxCredentials`): a user and password, sent as HTTP Basic authentication, or a
  token (`Authorization: Token ...`); never in the URL, so they appear in no error line or log.
- `write`: a batch of line-protocol points, gzip, millisecond precision. Connection errors, 5xx and
  429 are retried with capped exponential backoff until stored, until `stopping` is set
  (InterruptedError) or until the caller's `give_up` turns true (WriteDeferred). A 400 or 413 names
  points InfluxDB refuses (e.g. a field type conflict): the batch is split until the refused lines
  are isolated, so one bad point never loses its neighbours. A missing database is created (and
  InfluxDB's answer to the CREATE checked).
- `write_point`: one point, best effort (the counters): a short timeout, never raises, a failure is
  reported once.
- `query`, `query_chunked` (streamed, for `iotsim verify`), `ping`, `check_access`, `create_database`.

Settings are checked when the client is made (`InvalidInfluxSetting`, a usage error naming
`--influx` or `--db`), so a bad URL or database name never reaches the retry loop.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import orjson
import requests

from simulator.errors import DatabaseError, UsageError
from simulator.urls import check_url

HTTP_SCHEMES = ("http", "https")
# InfluxQL quotes a database name in double quotes; a quote, a backslash or a control character in it
# would end the name or make another statement, and InfluxDB refuses an empty one.
NOT_IN_DATABASE = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
POINT_TIMEOUT_S = 2.0  # a counter that cannot be written in this time is skipped, never waited for
ACCESS_TIMEOUT_S = 5.0
CHUNK_ROWS = 10_000
NO_BODY_ENCODING = {"Content-Encoding": None}  # requests drops a header set to None: a plain body


class InfluxRefused(DatabaseError):
    """InfluxDB answered with an error retrying cannot fix (bad credentials, no privilege, bad database);
    `reason` is InfluxDB's answer alone, for messages that wrap it."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class InfluxDatabaseMissing(InfluxRefused):
    """A query named a database InfluxDB does not hold."""


class InfluxUnreachable(DatabaseError):
    """No answer from InfluxDB (nothing listens, wrong host, timeout); `cause` names the failure."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class InvalidInfluxSetting(UsageError):
    """An InfluxDB URL or database name that cannot be used (exit 2, before anything is sent)."""


class WriteDeferred(Exception):
    """The caller's `give_up` said to stop retrying for now; the batch was not stored."""


class CredentialSettings(Protocol):
    """What a scenario's `influx:` section holds (simulator/scenario.py, InfluxSettings)."""

    user: str | None
    password: str | None
    token: str | None


@dataclass(frozen=True)
class InfluxCredentials:
    """Who the client is to InfluxDB; `repr` and `describe` never show the password or the token."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, settings: CredentialSettings | None = None) -> InfluxCredentials:
        """INFLUX_USER / INFLUX_PASSWORD / INFLUX_TOKEN when set, else the scenario's `influx:` settings.
        (`iotsim bridge` and `iotsim counts` read the same variables through their flags, which win.)"""
        return cls(
            user=os.environ.get("INFLUX_USER") or (settings.user if settings else None),
            password=os.environ.get("INFLUX_PASSWORD") or (settings.password if settings else None),
            token=os.environ.get("INFLUX_TOKEN") or (settings.token if settings else None),
        )

    def describe(self) -> str:
        """Who we were, for an error line: the user's name or "a token", never a secret."""
        if self.token:
            return "with a token (INFLUX_TOKEN)"
        if self.user:
            return f"as user {self.user!r}"
        return "without credentials"

    def headers(self) -> dict[str, str]:
        """The Authorization header: the token if there is one, else Basic for the user."""
        if self.token:
            return {"Authorization": f"Token {self.token}"}
        if self.user:
            pair = f"{self.user}:{self.password or ''}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        return {}


@dataclass
class WriteStats:
    batches: int = 0
    points: int = 0
    retries: int = 0
    rejected: int = 0


def check_influx_url(url: str) -> str:
    """`url` without a trailing slash if it is an http(s)://host[:port] URL; else InvalidInfluxSetting."""
    if "@" in urlsplit(url).netloc:  # not echoed: it may hold a password
        raise InvalidInfluxSetting("--influx: the URL holds credentials; give them as INFLUX_USER and INFLUX_PASSWORD (or --user, --password) instead")
    try:
        return check_url(url, HTTP_SCHEMES).rstrip("/")
    except ValueError as error:
        raise InvalidInfluxSetting(f"--influx: {error}") from None


def check_database(name: str) -> str:
    """`name` if InfluxQL can quote it as a database name; else InvalidInfluxSetting."""
    if not name:
        raise InvalidInfluxSetting("--db: give a database name (InfluxDB refuses an empty one)")
    if NOT_IN_DATABASE.search(name):
        raise InvalidInfluxSetting(f"--db: {name!r} cannot be a database name (no double quote, backslash or control character)")
    return name


class InfluxClient:
    def __init__(
        self,
        url: str,
        database: str,
        credentials: InfluxCredentials = InfluxCredentials(),
        timeout: float = 30.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = check_influx_url(url)
        self.database = check_database(database)
        self.credentials = credentials
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.stats = WriteStats()
        self.session = requests.Session()
        self.session.headers.update(credentials.headers())
        self.write_params = {"db": database, "precision": "ms"}
        self.batches = BatchPoster.for_url(self.url, self.write_params, credentials.headers())
        self.stopping = threading.Event()
        self.on_retry: Callable[[str], None] = lambda reason: None
        self.reached = False  # InfluxDB accepted a write or answered a query at least once
        self.point_failed = False  # a best-effort point failed (and was reported, once)

    # --- writing batches ---

    def write(self, lines: list[str], give_up: Callable[[], bool] = lambda: False) -> list[tuple[str, str]]:
        """Store `lines`, retrying until stored; return the (line, reason) pairs InfluxDB refused.

        Returns early only while retrying: with InterruptedError when `stopping` is set, with
        WriteDeferred when `give_up()` turns true (checked every 0.1 s). InfluxRefused when InfluxDB
        refuses the batch itself (credentials, privileges, a database it will not create).
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
        raise self._refusal(f"writes to database {self.database!r}", status, text)

    def _post_until_answered(self, lines: list[str], give_up: Callable[[], bool]) -> tuple[int, str]:
        body = gzip.compress("\n".join(lines).encode(), compresslevel=1)
        delay = 0.25
        while True:
            try:
                if self.batches is not None:
                    response: requests.Response | PostAnswer = self.batches.post(body, self.timeout)
                    if response.status_code == 204:
                        self.reached = True
                else:
                    response = self._post_write(body, {"Content-Encoding": "gzip"}, self.timeout)
                if response.status_code == 404 and "database not found" in response.text:
                    self.create_database()  # InfluxRefused when InfluxDB will not create it
                    reason = f"database {self.database!r} did not exist; created it"
                elif response.status_code >= 500 or response.status_code == 429:
                    reason = f"HTTP {response.status_code} {error_text(response.text)}"
                else:
                    return response.status_code, response.text
            except requests.RequestException as error:
                reason = f"cannot reach InfluxDB at {self.url}: {type(error).__name__}"
            except InfluxUnreachable as error:  # between the write and its CREATE DATABASE
                reason = f"cannot reach InfluxDB at {self.url}: {error.cause}"
            self.stats.retries += 1
            self.on_retry(reason)
            self._back_off(delay, give_up)
            delay = min(delay * 2, self.max_backoff)

    def _post_write(self, body: bytes, headers: dict[str, str | None], timeout: float) -> requests.Response:
        response = self.session.post(
            f"{self.url}/write", params=self.write_params, data=body, headers={"Content-Type": "text/plain; charset=utf-8", **headers}, timeout=timeout
        )
        if response.status_code == 204:
            self.reached = True
        return response

    def _back_off(self, delay: float, give_up: Callable[[], bool]) -> None:
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            if self.stopping.wait(min(remaining, 0.1)):
                raise InterruptedError("stopped while InfluxDB was unavailable")
            if give_up():
                raise WriteDeferred("gave up retrying for now")

    # --- one point, best effort ---

    def write_point(self, line: str, warn: Callable[[str], None] | None = None, timeout: float = POINT_TIMEOUT_S) -> bool:
        """Write one point once (no retry, no gzip); True when stored. Never raises: on the first
        failure `warn` gets the reason (e.g. "HTTP 401 authorization failed", "ConnectionError")."""
        try:
            response = self._post_write(line.encode(), NO_BODY_ENCODING, timeout)  # type: ignore[arg-type]
            if response.status_code == 204:
                return True
            reason = f"HTTP {response.status_code} {error_text(response.text)}"
        except requests.RequestException as error:
            reason = type(error).__name__
        if warn is not None and not self.point_failed:
            warn(reason)
        self.point_failed = True
        return False

    # --- access, the database ---

    def check_access(self, timeout: float = ACCESS_TIMEOUT_S) -> bool:
        """One empty write: True when InfluxDB takes writes to the database (created if missing), False
        when it cannot be reached now; InfluxRefused when it refuses us."""
        try:
            response = self._post_write(b"", NO_BODY_ENCODING, timeout)  # type: ignore[arg-type]
            if response.status_code == 404 and "database not found" in response.text:
                self.create_database()
                response = self._post_write(b"", NO_BODY_ENCODING, timeout)  # type: ignore[arg-type]
        except (requests.RequestException, InfluxUnreachable):
            return False
        if response.status_code == 204:
            return True
        if response.status_code >= 500 or response.status_code == 429:
            return False  # a server in trouble: the writes retry
        raise self._refusal(f"writes to database {self.database!r}", response.status_code, response.text)

    def create_database(self) -> None:
        """CREATE DATABASE (a no-op when it exists); InfluxRefused when InfluxDB does not do it."""
        try:
            self.command(f'CREATE DATABASE "{self.database}"')  # check_database: no quote in the name
        except InfluxRefused as error:
            raise InfluxRefused(f"InfluxDB at {self.url} did not create database {self.database!r} {self.credentials.describe()}: {error.reason}") from None

    def ping(self, timeout: float = 1.0) -> bool:
        """True when InfluxDB answers `/ping` (no credentials needed)."""
        try:
            return self.session.get(f"{self.url}/ping", timeout=timeout).status_code == 204
        except requests.RequestException:
            return False

    # --- queries ---

    def query(self, q: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The series InfluxDB answers `q` with (every statement's, in order), times in epoch ms.
        Raises InfluxUnreachable, InfluxRefused (401/403, a statement's error), InfluxDatabaseMissing."""
        return self._answer(q, "GET", timeout)

    def command(self, q: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """A statement that changes something (CREATE ...), sent as a POST; as `query` otherwise."""
        return self._answer(q, "POST", timeout)

    def _answer(self, q: str, method: str, timeout: float) -> list[dict[str, Any]]:
        params = {"db": self.database, "q": q, "epoch": "ms"}
        try:
            response = self.session.request(method, f"{self.url}/query", params=params, timeout=timeout)
        except requests.RequestException as error:
            raise self._unreachable(error) from None
        if response.status_code != 200:
            raise self._refusal(f"the query {q!r}", response.status_code, response.text)
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise InfluxRefused(f"InfluxDB at {self.url} answered something that is not JSON to {q!r}") from None
        self.reached = True
        return [series for result in answer.get("results", []) for series in self._series(result)]

    def query_chunked(self, q: str, chunk_rows: int = CHUNK_ROWS, timeout: float = 60.0) -> Iterator[dict[str, Any]]:
        """As `query`, read chunk by chunk as InfluxDB streams it (memory stays small); a series larger
        than a chunk comes as several dicts with the same name and tags."""
        params = {"db": self.database, "q": q, "epoch": "ms", "chunked": "true", "chunk_size": str(chunk_rows)}
        try:
            with self.session.get(f"{self.url}/query", params=params, stream=True, timeout=timeout) as response:
                if response.status_code != 200:
                    raise self._refusal(f"the query {q!r}", response.status_code, response.text)
                self.reached = True
                for line in response.iter_lines(chunk_size=1 << 16):  # one line per chunk of rows
                    if line:
                        for result in orjson.loads(line).get("results", []):
                            yield from self._series(result)
        except requests.RequestException as error:
            raise self._unreachable(error) from None
        except orjson.JSONDecodeError:
            raise InfluxRefused(f"InfluxDB at {self.url} answered something that is not JSON to {q!r}") from None

    def _series(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        error = result.get("error")
        if error is None:
            return result.get("series", [])
        if str(error).startswith("database not found"):
            raise InfluxDatabaseMissing(f"--db: database {self.database!r} does not exist at {self.url} (SHOW DATABASES lists those that do)")
        raise InfluxRefused(f"InfluxDB at {self.url}: {error}", str(error))

    # --- errors ---

    def _refusal(self, what: str, status: int, text: str) -> InfluxRefused:
        """InfluxDB's refusal of `what` as one line: who we were (never a secret) when it is about access."""
        reason = f"HTTP {status} {error_text(text)}"
        if status in (401, 403):
            advice = "set INFLUX_USER and INFLUX_PASSWORD, or INFLUX_TOKEN"
            return InfluxRefused(f"InfluxDB at {self.url} refused {what} {self.credentials.describe()} ({reason}); {advice}", reason)
        return InfluxRefused(f"InfluxDB at {self.url} refused {what}: {reason}", reason)

    def _unreachable(self, error: requests.RequestException) -> InfluxUnreachable:
        # The exception's own text may hold the URL's query string: only its kind is named.
        cause = type(error).__name__
        return InfluxUnreachable(f"cannot reach InfluxDB at {self.url}: {cause}; is the stack up? (iotsim stack status)", cause)

    def close(self) -> None:
        self.session.close()
        if self.batches is not None:
            self.batches.close()


@dataclass(frozen=True)
class PostAnswer:
    """What `_post_until_answered` reads of an answer: as a requests.Response has them."""

    status_code: int
    text: str


class BatchPoster:
    """The batches' POSTs to /write on one keep-alive http.client connection: a POST through requests
    cost ~1,070 µs of CPU on the 2-core machine, this one ~280 (the bridge makes up to ~100 a second).
    Only for plain http:// with no proxy in the environment; otherwise requests does it. Failures are
    raised as requests' exceptions of the same kind, so the retry loop treats both alike."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self.host, self.port, self.path = host, port, path
        self.headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip", **headers}
        self.connection: http.client.HTTPConnection | None = None
        self.lock = threading.Lock()  # one connection: one POST at a time

    @classmethod
    def for_url(cls, url: str, params: dict[str, str], headers: dict[str, str]) -> BatchPoster | None:
        parts = urlsplit(url)
        if parts.scheme != "http" or requests.utils.get_environ_proxies(url):
            return None
        return cls(parts.hostname or "", parts.port or 80, f"{parts.path}/write?{urlencode(params)}", headers)

    def post(self, body: bytes, timeout: float) -> PostAnswer:
        with self.lock:
            reused = self.connection is not None
            try:
                return self._post(body, timeout)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused:
                    raise requests.ConnectionError("connection closed by InfluxDB") from None
            except (OSError, http.client.HTTPException) as error:
                raise self._failed(error) from None
            try:  # a kept-alive connection the server had closed: once more on a new one (the same points, stored once)
                return self._post(body, timeout)
            except (OSError, http.client.HTTPException) as error:
                raise self._failed(error) from None

    def _failed(self, error: OSError | http.client.HTTPException) -> requests.RequestException:
        """The connection closed, and the failure as the requests exception of its kind (the retry loop's)."""
        self.close()
        if isinstance(error, TimeoutError):
            return requests.Timeout("InfluxDB did not answer in time")
        return requests.ConnectionError(type(error).__name__)

    def _post(self, body: bytes, timeout: float) -> PostAnswer:
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        connection = self.connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        connection.request("POST", self.path, body=body, headers=self.headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        if response.will_close:
            self.close()
        return PostAnswer(response.status, text)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def error_text(body: str) -> str:
    """InfluxDB's JSON error message, on one line."""
    text = body.strip()
    if text.startswith('{"error":'):
        text = text[len('{"error":') :].rstrip("}").strip().strip('"')
    return " ".join(text.split())[:300]
