"""Failed authentications per client address, so weak ``API_KEYS`` values cannot be guessed.

Like fail2ban: an address that presented :data:`AUTH_FAILURE_LIMIT` different unknown keys within
:data:`AUTH_FAILURE_WINDOW_S` seconds is refused for that long again, counted from the failure
that tripped the block, whatever it sends: a right key during the block is refused too, or the
block would tell a guesser which guess was right. An IPv6 client counts by its /64 network, the
block one subscriber gets, so rotating addresses inside it gains nothing. Only *different*
keys count: a guesser tries many, while a misconfigured client (a revoked key in a device, an
old dashboard tab) repeats one, and must not block every other client behind the same NAT or
proxy address.

Counters live in process memory (per replica) and are bounded by :data:`MAX_TRACKED_ADDRESSES`:
past it the entry nearest its end is dropped. An attacker with that many addresses already has
more guesses per minute (limit x addresses) than a server can answer, so dropping gains it
nothing.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

AUTH_FAILURE_LIMIT = 20
AUTH_FAILURE_WINDOW_S = 60
MAX_TRACKED_ADDRESSES = 20_000


def client_of(host: str | None) -> str:
    """The unit failures are counted by: the IPv4 address, the /64 of an IPv6 address
    (IPv4-mapped IPv6 is the IPv4 address), else the host as given."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Entry:
    __slots__ = ("keys", "until")

    def __init__(self, until: float) -> None:
        #: Hashes of the different unknown keys seen (about the limit at most).
        self.keys: set[int] = set()
        #: End of the counting window; once ``count`` reaches the limit, end of the block.
        self.until = until

    @property
    def count(self) -> int:
        return len(self.keys)


class AuthFailures:
    def __init__(
        self,
        limit: int = AUTH_FAILURE_LIMIT,
        window_s: float = AUTH_FAILURE_WINDOW_S,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``limit`` 0 turns counting off."""
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        # Ordered by ``until`` (each entry is moved to the end when it is given a later one),
        # so the expired entries are always at the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after(self, host: str | None) -> int | None:
        """Whole seconds until ``host`` may authenticate again; None when it is not blocked."""
        if self.limit <= 0 or not self._entries:
            return None  # (every request asks: nothing tracked, no lock and no address parse)
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._entries.get(client_of(host))
            if entry is None or entry.count < self.limit:
                return None
            return max(1, math.ceil(entry.until - now))

    def record_failure(self, host: str | None, key: str) -> bool:
        """Count the unknown ``key`` from ``host`` (once per different key); True when this
        failure starts its block."""
        if self.limit <= 0:
            return False
        client = client_of(host)
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._entries.get(client)
            if entry is None:
                entry = self._entries[client] = _Entry(now + self.window_s)
                while len(self._entries) > self.max_addresses:
                    self._entries.popitem(last=False)
            # (A blocked address is refused before its key is looked at, so the set stops
            # growing at the limit.)
            entry.keys.add(hash(key))
            if entry.count < self.limit:
                return False
            entry.until = now + self.window_s
            self._entries.move_to_end(client)
            return True

    def _expire(self, now: float) -> None:
        while self._entries:
            client, entry = next(iter(self._entries.items()))
            if entry.until > now:
                return
            del self._entries[client]
