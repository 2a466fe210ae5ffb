"""A bounded pool of loaded cases: a seeded window sliding over the whole set, so memory holds at most ``capacity`` of them.

The window follows MONAI's ``SmartCacheDataset`` (Clara Train's SmartCache):
the set is put in one seeded order, the pool holds ``capacity`` consecutive
items of it, and at each refresh the oldest ``step`` leave and as many next
ones come in, wrapping round at the end. Every item thus spends the same
number of refreshes in the pool, so over a pass each case is drawn from
equally often on expectation. ``step`` is a quarter of the pool (SmartCache's
``replace_rate``, 0.1 by default there), or more when the caller says how
many refreshes a run has (``refreshes``, e.g. the epochs): enough for the
window to pass over the whole set within them (:func:`covering_step`), so a
large campaign is not trained on its first few hundred cases only. When
``capacity`` covers the whole set, the window is the set in its given order
and never moves: the pool then behaves exactly like a plain list of every case.

Kept here rather than using ``SmartCacheDataset`` itself: it prepares the
replacements in a background thread, and when one of them fails to load (a
corrupt or missing file) that thread dies and ``update_cache()`` waits for it
forever (tried with MONAI 1.6.1), where alqa must stop with the error naming
the file. Loading here happens in the caller's thread, in a fixed order, so a
bad case raises at once and a seed always gives the same pools. Torch-free.
"""

from __future__ import annotations

import math
from typing import Callable, Generic, TypeVar

import numpy as np

T = TypeVar("T")

#: share of the pool replaced at each refresh (SmartCacheDataset's ``replace_rate``; it defaults to 0.1)
REPLACE_FRACTION = 0.25


def covering_step(n_items: int, capacity: int, refreshes: int | None = None) -> int:
    """Items replaced per refresh: a quarter of the pool, or enough to pass over all ``n_items`` in ``refreshes`` (at most the pool)."""
    step = max(1, math.ceil(capacity * REPLACE_FRACTION))
    if refreshes is not None and n_items > capacity:
        step = max(step, math.ceil((n_items - capacity) / max(1, int(refreshes) - 1)))
    return min(step, capacity)


def pool_window(n_items: int, capacity: int, refresh: int, seed: int, refreshes: int | None = None) -> tuple[int, ...]:
    """Indices (into the whole set) of the items in the pool at ``refresh``: a pure function of its arguments."""
    if n_items < 1 or capacity < 1 or refresh < 0:
        raise ValueError(f"need n_items >= 1, capacity >= 1 and refresh >= 0, got {n_items}, {capacity}, {refresh}")
    if capacity >= n_items:
        return tuple(range(n_items))
    return _window(_order(n_items, seed), capacity, refresh, covering_step(n_items, capacity, refreshes))


def _order(n_items: int, seed: int) -> np.ndarray:
    # its own stream (seed, 0x9001): drawing the order never moves the caller's generator seeded by ``seed``
    return np.random.default_rng((int(seed), 0x9001)).permutation(n_items)


def _window(order: np.ndarray, capacity: int, refresh: int, step: int) -> tuple[int, ...]:
    n = len(order)
    start = (refresh * step) % n
    return tuple(int(order[(start + i) % n]) for i in range(capacity))


class CasePool(Generic[T]):
    """At most ``capacity`` items loaded by ``load(index)``, those of the current :func:`pool_window`.

    :meth:`items` loads the whole window (the patch sampler: errors surface at
    the refresh); :meth:`get` loads one window member when first asked (the QA
    term, which draws few cases per step). On moving to another window the
    items that left are released *before* the newcomers load, so the pool never
    holds more than ``capacity`` items plus the one being loaded.
    """

    def __init__(self, n_items: int, capacity: int, seed: int, load: Callable[[int], T], refreshes: int | None = None):
        if n_items < 1:
            raise ValueError("CasePool needs at least one item")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.n_items = int(n_items)
        self.capacity = min(int(capacity), self.n_items)
        self.seed = int(seed)
        #: items replaced per refresh (:func:`covering_step`)
        self.step = covering_step(self.n_items, self.capacity, refreshes)
        self._load = load
        self._order = None if self.capacity >= self.n_items else _order(self.n_items, self.seed)
        self._refresh: int | None = None
        self._members: tuple[int, ...] = ()
        self._loaded: dict[int, T] = {}
        #: how many times ``load`` was called (a case re-entering the pool loads again)
        self.loads = 0

    @property
    def holds_everything(self) -> bool:
        return self.capacity >= self.n_items

    def window(self, refresh: int) -> tuple[int, ...]:
        """The indices of the items in the pool at ``refresh`` (as :func:`pool_window`)."""
        if refresh < 0:
            raise ValueError(f"refresh must be >= 0, got {refresh}")
        if self._order is None:
            return tuple(range(self.n_items))
        return _window(self._order, self.capacity, int(refresh), self.step)

    def _move_to(self, refresh: int) -> tuple[int, ...]:
        if refresh != self._refresh:
            members = self.window(refresh)
            if members != self._members:
                keep = set(members)
                for index in [i for i in self._loaded if i not in keep]:
                    del self._loaded[index]  # released before anything new loads
                self._members = members
            self._refresh = refresh
        return self._members

    def get(self, refresh: int, position: int) -> T:
        """The item at ``position`` of the window at ``refresh``, loaded now if it is not yet."""
        index = self._move_to(refresh)[position]
        if index not in self._loaded:
            self._loaded[index] = self._load(index)
            self.loads += 1
        return self._loaded[index]

    def items(self, refresh: int) -> tuple[T, ...]:
        """Every item of the window at ``refresh``, in window order (loading the ones not yet loaded)."""
        return tuple(self.get(refresh, p) for p in range(len(self._move_to(refresh))))

    def loaded_count(self) -> int:
        return len(self._loaded)


__all__ = ["REPLACE_FRACTION", "CasePool", "covering_step", "pool_window"]
