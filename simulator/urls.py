"""URLs the user gives (broker, database): checked once, the same way for flags and scenario files."""

from __future__ import annotations

from urllib.parse import urlsplit


def check_url(url: str, schemes: tuple[str, ...]) -> str:
    """`url` if it has one of `schemes`, a host and (if any) a numeric port in range; else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{url!r} is not a {schemes[0]}://host:port URL ({', '.join(f'{scheme}://' for scheme in schemes)})")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"{url!r}: {error}") from None
    if port == 0:
        raise ValueError(f"{url!r}: port 0 is no server's port")
    return url


MQTT_SCHEMES = ("mqtt", "tcp", "mqtts")
