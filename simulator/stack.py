"""The local stack: Mosquitto and InfluxDB as child processes of `iotsim stack up`, and of the tests.

Both listen on 127.0.0.1 only, keep their data under a state directory (`.iotsim/` by default) and
are tracked by PID files there, so `iotsim stack down` stops exactly what `up` started. Readiness is
waited for (a TCP accept from the broker, `/ping` from InfluxDB), never slept for. The broker loads
the same `brokers/conf.d/` settings as the compose stack.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simulator.errors import DatabaseError, IotsimError

# InfluxDB's client (and requests) is imported by the functions that talk to InfluxDB: the paths here,
# Mosquitto and the PID files need none of it (`iotsim validate` reads the broker's config, simulator/backlog.py).
if TYPE_CHECKING:
    from simulator.influx import InfluxCredentials

BROKERS_DIR = Path(__file__).resolve().parent.parent / "brokers"


class StackError(IotsimError):
    """A service that cannot be started or reached; the message says what to do."""


@dataclass(frozen=True)
class Binary:
    name: str
    package: str
    search: tuple[str, ...] = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")

    def path(self) -> str:
        found = shutil.which(self.name) or shutil.which(self.name, path=os.pathsep.join(self.search))
        if found is None:
            raise StackError(
                f"{self.name} is not installed; on Debian: sudo apt-get install {self.package} (or run `make demo` as root)"
            )
        return found


MOSQUITTO = Binary("mosquitto", "mosquitto")
INFLUXD = Binary("influxd", "influxdb")


@dataclass(frozen=True)
class Service:
    """A started server: its name, PID, port and the files that describe it."""

    name: str
    pid: int
    port: int
    pid_file: Path
    log_file: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}" if self.name == "mosquitto" else f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 20.0) -> None:
        stop_pid(self.pid, timeout)
        self.pid_file.unlink(missing_ok=True)


# Free ports come from below the kernel's ephemeral range (the source ports of outgoing connections):
# a port the kernel picked from that range can be taken by any client's connect() between the pick and
# the server's bind, which many parallel test processes make likely.
LOWEST_PORT = 10000
_choose = random.SystemRandom()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing holds now, outside the ephemeral range when there is room."""
    ephemeral_low = ephemeral_ports()[0]
    for _ in range(100):
        port = _choose.randrange(LOWEST_PORT, ephemeral_low) if ephemeral_low > LOWEST_PORT + 1000 else 0
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: draw another
            return probe.getsockname()[1]
    raise StackError(f"no free port on 127.0.0.1 between {LOWEST_PORT} and {ephemeral_low} after 100 draws")


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux; its default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def start_mosquitto(state_dir: Path, port: int, conf_dir: Path = BROKERS_DIR / "conf.d", timeout: float = 15.0, keep_on_interrupt: bool = False) -> Service:
    """Start Mosquitto on 127.0.0.1:`port` with the shared broker settings and persistence in `state_dir`
    (`keep_on_interrupt`: as `wait_until`)."""
    return run_mosquitto(state_dir, (port,), conf_dir, timeout, "; the shared settings are in the included folder.", f"listener {port} 127.0.0.1\n", keep_on_interrupt=keep_on_interrupt)


SECURE_DIR = BROKERS_DIR / "secure"
SECRET_FILES = ("passwd", "ca.crt", "server.crt", "server.key")


def start_secure_mosquitto(
    state_dir: Path,
    port: int,
    tls_port: int,
    secrets_dir: Path = SECURE_DIR / "generated",
    acl_file: Path = SECURE_DIR / "acl",
    conf_dir: Path = BROKERS_DIR / "conf.d",
    timeout: float = 15.0,
) -> Service:
    """Start Mosquitto with the secure profile (docs/security.md): passwords and the ACL on both
    listeners, plain MQTT on 127.0.0.1:`port` and MQTT over TLS on 127.0.0.1:`tls_port`.

    `secrets_dir` holds what brokers/secure/make-test-certs.sh and make-passwords.sh wrote.
    The returned service's port is the plain one.
    """
    MOSQUITTO.path()  # a Mosquitto not installed is said first
    secrets = {name: (secrets_dir / name).resolve() for name in SECRET_FILES}
    for name, path in secrets.items():
        if not path.is_file():
            script = "make-passwords.sh" if name == "passwd" else "make-test-certs.sh"
            raise StackError(f"{path} is missing; generate it with brokers/secure/{script} {secrets_dir}")
    if accepts_tcp(tls_port):
        raise StackError(f"port {tls_port} on 127.0.0.1 is already in use; choose another TLS port")
    listeners = (
        f"listener {port} 127.0.0.1\n"
        f"listener {tls_port} 127.0.0.1\n"
        # TLS options belong to the listener above them.
        f"cafile {secrets['ca.crt']}\n"
        f"certfile {secrets['server.crt']}\n"
        f"keyfile {secrets['server.key']}\n"
        "tls_version tlsv1.2\n"
    )
    # After the shared settings, so it overrides their `allow_anonymous true` (the last one wins).
    access = f"allow_anonymous false\npassword_file {secrets['passwd']}\nacl_file {acl_file.resolve()}\n"
    return run_mosquitto(state_dir, (port, tls_port), conf_dir, timeout, ": the secure profile (docs/security.md, brokers/secure/).", listeners, access)


def run_mosquitto(
    state_dir: Path, ports: tuple[int, ...], conf_dir: Path, timeout: float, heading: str, listeners: str, after_shared: str = "", keep_on_interrupt: bool = False
) -> Service:
    """The one way Mosquitto starts: write `state_dir`/mosquitto.conf (its `listeners`, persistence in
    `state_dir`, the shared settings of `conf_dir`, then `after_shared`), start it as this user and
    wait until each of `ports` accepts connections; the service's port is the first."""
    binary = MOSQUITTO.path()
    data_dir = state_dir / "mosquitto"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = state_dir / "mosquitto.conf"
    config.write_text(
        f"# Written by iotsim stack{heading}\n"
        + listeners
        + f"persistence_location {data_dir}/\n"
        # Mosquitto started as root drops to user `mosquitto`, which could not write our state dir.
        f"user {getpass.getuser()}\n"
        "log_dest stderr\n"
        f"include_dir {conf_dir.resolve()}\n"
        + after_shared
    )
    log_file = state_dir / "mosquitto.log"
    service = launch("mosquitto", [binary, "-c", str(config)], ports[0], state_dir, log_file, keep_on_interrupt)
    what = f"port {ports[0]}" if len(ports) == 1 else f"ports {' and '.join(map(str, ports))}"
    wait_until(lambda: all(accepts_tcp(port) for port in ports), service, timeout, f"Mosquitto to accept connections on {what}", keep_on_interrupt)
    return service


def start_influxdb(
    state_dir: Path, port: int, database: str | None = "yangquan", timeout: float = 30.0, admin: tuple[str, str] | None = None, keep_on_interrupt: bool = False
) -> Service:
    """Start influxd (1.x) on 127.0.0.1:`port` with its data in `state_dir`, and create `database`.
    With `admin` (user, password): authentication on, and that admin user created (InfluxDB 1.x takes
    the first CREATE USER ... WITH ALL PRIVILEGES without credentials while it has no user)."""
    binary = INFLUXD.path()
    data_dir = state_dir / "influxdb"
    for sub in ("meta", "data", "wal"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    config = state_dir / "influxdb.conf"
    config.write_text(
        "# Written by iotsim stack.\n"
        "reporting-disabled = true\n"
        f'bind-address = "127.0.0.1:{free_port()}"\n'  # backup/restore RPC; unique per instance
        "[meta]\n"
        f'  dir = "{data_dir / "meta"}"\n'
        "[data]\n"
        f'  dir = "{data_dir / "data"}"\n'
        f'  wal-dir = "{data_dir / "wal"}"\n'
        "  query-log-enabled = false\n"
        "[http]\n"
        f'  bind-address = "127.0.0.1:{port}"\n'
        "  log-enabled = false\n"
        f"  auth-enabled = {'true' if admin else 'false'}\n"
        "[monitor]\n"
        "  store-enabled = false\n"
    )
    log_file = state_dir / "influxdb.log"
    service = launch("influxdb", [binary, "-config", str(config)], port, state_dir, log_file, keep_on_interrupt)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: influx_ready(url), service, timeout, f"InfluxDB to answer {url}/ping", keep_on_interrupt)
    try:
        credentials = create_admin(url, *admin) if admin else None
        if database:
            create_database(url, database, credentials)
    except BaseException:  # an error or an interrupt (Ctrl-C, SIGTERM made one): the caller never gets the service to stop
        service.stop()
        raise
    return service


def launch(name: str, command: list[str], port: int, state_dir: Path, log_file: Path, keep_on_interrupt: bool = False) -> Service:
    """Start `command` in a session of its own and record it in `state_dir`/`name`.pid. An interrupt
    (Ctrl-C) once it runs still lets the PID file be written whole; it then stops the server, which the
    caller never gets, or with `keep_on_interrupt` (the user's stack, which the PID file and `stack down`
    own) leaves it running, recorded; and is raised."""
    if accepts_tcp(port):
        raise StackError(f"port {port} on 127.0.0.1 is already in use; is the stack already up? (iotsim stack status)")
    with open(log_file, "ab") as log:
        # Own session: Ctrl-C in the terminal does not reach the servers; `stack down` stops them.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    service = Service(name, process.pid, port, state_dir / f"{name}.pid", log_file)
    interrupted = write_pid_file(service)
    if interrupted is not None:
        if not keep_on_interrupt:
            service.stop()
        raise interrupted
    return service


def write_pid_file(service: Service) -> KeyboardInterrupt | None:
    """Write `service`'s PID file through a renamed temporary file (a reader never sees half of it, which it
    took for no record: a server running that `stack down` did not know), again after an interrupt, which
    is returned for the caller to raise."""
    interrupted: KeyboardInterrupt | None = None
    partial = service.pid_file.with_name(f".{service.pid_file.name}.partial")
    while True:
        try:
            partial.write_text(f"{service.pid} {service.port}\n")
            os.replace(partial, service.pid_file)
            return interrupted
        except KeyboardInterrupt as interrupt:
            interrupted = interrupted or interrupt


def wait_until(ready: object, service: Service, timeout: float, what: str, keep_on_interrupt: bool = False) -> None:
    """Until `ready()`, else StackError after `timeout` (the service stopped). An interrupt (Ctrl-C, or SIGTERM
    where a handler makes it one) stops the service, which the caller never gets; with `keep_on_interrupt`
    (a fault restarting the user's stack, which its PID file and `stack down` own) the start is finished
    first, within `timeout`, and the interrupt raised after: the stack is left as the user expects it."""
    deadline = time.monotonic() + timeout
    interrupted: KeyboardInterrupt | None = None
    up = False
    while not up and time.monotonic() < deadline:
        try:
            if not alive(service.pid):
                service.pid_file.unlink(missing_ok=True)
                if interrupted is not None:
                    break  # raised below: the interrupt comes first
                raise StackError(f"{service.name} exited at start; last log lines:\n{tail(service.log_file)}")
            up = bool(ready())  # type: ignore[operator]
            if not up:
                time.sleep(0.05)
        except KeyboardInterrupt as interrupt:
            if not keep_on_interrupt:
                service.stop()
                raise
            interrupted = interrupted or interrupt
    if not up:
        service.stop()
    if interrupted is not None:
        raise interrupted  # the user's interrupt comes first, even when the start failed after it
    if not up:
        raise StackError(f"gave up waiting {timeout:.0f} s for {what}; see {service.log_file}")


def accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def influx_ready(url: str) -> bool:
    from simulator.influx import InfluxClient

    with closing(InfluxClient(url, "_internal")) as client:  # /ping names no database
        return client.ping()


def create_database(url: str, database: str, credentials: InfluxCredentials | None = None) -> None:
    """Create `database` (as `credentials`, else anonymously)."""
    from simulator.influx import InfluxClient, InfluxCredentials

    try:
        with closing(InfluxClient(url, database, credentials if credentials is not None else InfluxCredentials())) as client:
            client.create_database()
    except DatabaseError as error:
        raise StackError(str(error)) from None


ADMIN_NAME = re.compile(r"[A-Za-z0-9_-]+")  # user and password go into InfluxQL unescaped


def create_admin(url: str, user: str, password: str) -> InfluxCredentials:
    """The first user of an InfluxDB with authentication on, with all privileges; its credentials."""
    from simulator.influx import InfluxClient, InfluxCredentials, InfluxRefused, InfluxUnreachable

    if not (ADMIN_NAME.fullmatch(user) and ADMIN_NAME.fullmatch(password)):
        raise StackError("the admin user and password may hold letters, digits, _ and - only")
    try:
        with closing(InfluxClient(url, "_internal")) as client:
            client.command(f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
    except InfluxRefused as error:  # its reason alone: the statement holds the password
        raise StackError(f"InfluxDB at {url} did not create its admin user {user!r}: {error.reason}") from None
    except InfluxUnreachable as error:
        raise StackError(f"InfluxDB at {url} did not create its admin user {user!r}: {error.cause}") from None
    return InfluxCredentials(user, password)


def alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False  # our child, and it has exited
    except ChildProcessError:
        pass  # not our child (started by an earlier `stack up`)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not zombie(pid)


def zombie(pid: int) -> bool:
    """Exited but not yet reaped by its parent (another process): as good as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM (both servers save their state on it), then SIGKILL if it has not exited in `timeout`."""
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.05)


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Recorded:
    """A service as its PID file describes it."""

    name: str
    pid: int
    port: int
    running: bool


def recorded(state_dir: Path, name: str) -> Recorded | None:
    pid_file = state_dir / f"{name}.pid"
    try:
        pid_text, port_text = pid_file.read_text().split()
    except (OSError, ValueError):
        return None
    pid, port = int(pid_text), int(port_text)
    return Recorded(name, pid, port, alive(pid))


def stack_up(state_dir: Path, mqtt_port: int, influx_port: int, database: str) -> list[str]:
    """Start whatever is not already running; return a line per service."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, port in (("mosquitto", mqtt_port), ("influxdb", influx_port)):
        existing = recorded(state_dir, name)
        if existing is not None and existing.running:
            if name == "influxdb":
                create_database(f"http://127.0.0.1:{existing.port}", database)
            lines.append(f"{name}: already running (pid {existing.pid}, port {existing.port})")
            continue
        if name == "mosquitto":
            service = start_mosquitto(state_dir, port)
        else:
            service = start_influxdb(state_dir, port, database)
        lines.append(f"{name}: started (pid {service.pid}) at {service.url}, log {service.log_file}")
    return lines


def stack_down(state_dir: Path) -> list[str]:
    lines = []
    for name in ("mosquitto", "influxdb"):
        existing = recorded(state_dir, name)
        if existing is None:
            lines.append(f"{name}: not started here")
            continue
        stop_pid(existing.pid)
        (state_dir / f"{name}.pid").unlink(missing_ok=True)
        lines.append(f"{name}: stopped (pid {existing.pid})" if existing.running else f"{name}: was not running")
    return lines


def stack_status(state_dir: Path) -> tuple[list[str], bool]:
    lines, all_up = [], True
    for name in ("mosquitto", "influxdb"):
        existing = recorded(state_dir, name)
        if existing is None or not existing.running:
            all_up = False
            lines.append(f"{name}: down")
        else:
            lines.append(f"{name}: up (pid {existing.pid}, port {existing.port})")
    return lines, all_up


class StackControl:
    """Stops and starts the local stack's processes, found by their PID files in the state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.stopped: dict[str, int] = {}  # what a fault stopped and has not started again: name → port
        self.killed_bridge: list[str] | None = None  # the command line of a bridge a fault killed, until it runs again

    def stop(self, name: str) -> int:
        record = recorded(self.state_dir, name)
        if record is None or not record.running:
            raise StackError(f"fault injection: {name} is not running under {self.state_dir} (iotsim stack up)")
        self.stopped[name] = record.port
        stop_pid(record.pid)
        return record.port

    def start(self, name: str, port: int) -> None:
        # Started again for the user's stack (its PID file, `stack down`): a Ctrl-C meanwhile must not stop it.
        try:
            if name == "mosquitto":
                start_mosquitto(self.state_dir, port, keep_on_interrupt=True)
            else:
                start_influxdb(self.state_dir, port, database=None, keep_on_interrupt=True)
        finally:  # tried once: started (through an interrupt too), or its failure is the caller's to say
            self.stopped.pop(name, None)

    def restore(self) -> list[str]:
        """Start again what a fault left stopped, when the run ended before the fault did (Ctrl-C during an
        outage, before a killed bridge's restart): the user's stack as it was. A line for each, to say."""
        lines = []
        for name, port in list(self.stopped.items()):
            lines.append(self.start_again(name, port))
        if self.killed_bridge is not None:
            self.restart_bridge(self.killed_bridge)
            lines.append(f"fault injection cut short: the bridge started again ({self.state_dir / 'bridge.log'}); the run ended before its bridge_crash did")
        return lines

    def start_again(self, name: str, port: int) -> str:
        """Start `name` on `port` for the user's stack; what happened, in a line."""
        try:
            self.start(name, port)
        except StackError as error:
            return f"fault injection cut short: {name} (port {port}) could not be started again: {error}; start it with iotsim stack up"
        return f"fault injection cut short: {name} started again on port {port}; the run ended before its outage did"

    def crash_bridge(self) -> list[str]:
        """kill -9 the bridge recorded in bridge.pid; return its command line to start it again."""
        pid_file = self.state_dir / "bridge.pid"
        try:
            record = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            raise StackError(f"fault injection: no bridge.pid in {self.state_dir}; start the bridge with --pid-file") from None
        self.killed_bridge = record["argv"]
        if alive(record["pid"]):
            os.kill(record["pid"], signal.SIGKILL)
            while alive(record["pid"]):
                time.sleep(0.01)
        return record["argv"]

    def restart_bridge(self, argv: list[str]) -> None:
        with open(self.state_dir / "bridge.log", "ab") as log:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.killed_bridge = None
