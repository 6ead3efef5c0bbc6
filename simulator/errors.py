"""The package's exceptions: one base, one subclass per external system or stage.

Every error a user can cause or meet (a bad scenario, an unreachable or refusing broker or database,
a bridge that cannot go on) is an `IotsimError` whose message is one printable line (or one line per
problem) saying what went wrong and what to do. The CLI catches `IotsimError` and exits with the
class's `exit_code` (2 for usage mistakes, 1 for failures); it never picks a message by its text.
"""

from __future__ import annotations


class IotsimError(Exception):
    """Base of the package's errors; `str(error)` is what the CLI prints."""

    exit_code: int = 1


class UsageError(IotsimError):
    """A flag, file or name the user gave that cannot be used (exit 2)."""

    exit_code = 2


class BrokerError(IotsimError):
    """The MQTT broker cannot be reached, or it refused us."""


class BrokerUnreachable(BrokerError):
    """The broker did not accept a connection in time (nothing listens, wrong host or port)."""


class BrokerRefused(BrokerError):
    """The broker answered and refused: bad credentials, an id or topic it does not allow."""


class DatabaseError(IotsimError):
    """InfluxDB cannot be reached, or it refused a write or a query."""


class BridgeError(IotsimError):
    """The ingest bridge cannot go on (its spool or dead-letter file cannot be written, ...)."""
