"""Independent, reproducible random streams: one per (scenario seed, stream name).

A device's readings depend only on the seed and its own id, never on other devices, fleet order or
how many processes share the work.
"""

from __future__ import annotations

import hashlib
import random


def stream(seed: int, name: str) -> random.Random:
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))
