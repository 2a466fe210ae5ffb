"""Leases: which reader holds which queued case, and until when. Every lease rule of ``alqa serve`` lives here.

A lease is taken when a reader is handed a case ("Next sample" in 3D
Slicer) or opens it in the worklist's viewer, renewed while they keep it,
and ends when they release it, answer it, or it expires
(``ServeSettings.lease_minutes``). Today leases live in the server's memory
and only steer readers to different cases; making taking a lease atomic
across server processes and refusing a foreign answer to a leased case
(issue "Many readers, one truth") builds on this module's interface:
:meth:`Leases.take`, :meth:`Leases.release`, :meth:`Leases.lease_of`.

What another reader sees of a lease never names its holder (:func:`lease_view`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class Lease:
    case_id: str
    holder: str
    until: float  # wall-clock time (seconds since the epoch) the lease ends

    @property
    def until_iso(self) -> str:
        return datetime.fromtimestamp(self.until, timezone.utc).isoformat(timespec="seconds")


class Leases:
    """The server's leases, thread-safe (routes run in a thread pool); expired leases are dropped as they are read."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.time):
        self.minutes, self.clock = float(minutes), clock
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def _expire(self) -> None:
        now = self.clock()
        for case_id in [c for c, lease in self._held.items() if lease.until < now]:
            del self._held[case_id]

    def hold(self, case_id: str, holder: str) -> Lease:
        """Give ``case_id`` to ``holder`` (or renew their lease), whoever held it ("Next sample" when every open case is held)."""
        with self._lock:
            lease = self._held[case_id] = Lease(case_id, holder, self.clock() + self.minutes * 60)
            return lease

    def take(self, case_id: str, holder: str) -> Lease | None:
        """Take or renew the lease unless another reader holds it (None then)."""
        with self._lock:
            self._expire()
            current = self._held.get(case_id)
            if current is not None and current.holder != holder:
                return None
            lease = self._held[case_id] = Lease(case_id, holder, self.clock() + self.minutes * 60)
            return lease

    def release(self, case_id: str, holder: str) -> bool:
        """End ``holder``'s lease on ``case_id``; False when they hold none (only the holder releases)."""
        with self._lock:
            self._expire()
            current = self._held.get(case_id)
            if current is None or current.holder != holder:
                return False
            del self._held[case_id]
            return True

    def lease_of(self, case_id: str) -> Lease | None:
        with self._lock:
            self._expire()
            return self._held.get(case_id)

    def held_by(self) -> dict[str, str]:
        """Case -> holder, for every live lease."""
        with self._lock:
            self._expire()
            return {c: lease.holder for c, lease in self._held.items()}


def lease_view(lease: Lease | None, viewer: str) -> dict:
    """A lease as ``viewer`` may see it: their own with its end, another reader's without a name."""
    if lease is None:
        return {"state": "free"}
    if lease.holder == viewer:
        return {"state": "yours", "until": lease.until_iso}
    return {"state": "other"}


__all__ = ["Lease", "Leases", "lease_view"]
