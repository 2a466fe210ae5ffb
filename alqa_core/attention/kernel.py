"""Eq. 1-3 on the stored uint8 block, touching only voxels that can carry attention.

Hand-written because the obvious transcription
(float probabilities, ``std(axis=0)``, ``log``) costs ~40 ms per organ for a
160x160x64 volume, and most voxels are background where every member stores
0. The work is split by what the stored values allow:

1. One pass over the block as uint64 words (8 voxels each), in chunks that
   stay in cache: OR across members per organ, then
   - a word is *active* for an organ if some byte exceeds ``QuietLevels.low``
     (below it no threshold can fire and the organ is absent);
   - a voxel is an *overlap candidate* if at least two organs have a byte
     >= 128 in some member (counted per byte lane, without carries).
2. Per organ, on its active words only: the members' bytes are gathered;
   voxels where every member is >= ``QuietLevels.high`` are counted as organ
   (no threshold can fire there); the rest, the *band*, gets Eq. 1 from
   integer sums and sums of squares (its threshold compared exactly as an
   integer) and Eq. 2 from a 256-entry entropy table.
3. Eq. 3 on the overlap candidates only, over all members and organs.

Everything outside the active words is exactly zero, so the result equals
the dense computation.

:func:`organ_statistics` runs one of three implementations of these steps,
all bit-identical (tested): ``numpy`` (here), ``numba`` (the same passes
compiled and fused, :mod:`.kernel_jit`; ~2x faster, the default for blocks
of 32 MiB and more when numba is installed) and ``torch`` (dense, on a CPU
or a GPU, :mod:`.kernel_torch`). Neither numba nor torch is imported until a
backend needs it.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from alqa_core.attention.constants import entropy_lut, quiet_levels, std_threshold_int
from alqa_core.attention.organ_stats import OrganStats
from alqa_core.config.sections import AttentionConfig

#: Words per chunk of pass 1: 16384 words = 128 KiB per (member, organ) row.
CHUNK_WORDS = 16384
#: Above this active fraction an organ is processed on whole rows (no gather).
DENSE_FRACTION = 0.5
#: Overlap candidates are processed in slices of this many voxels (bounds memory).
OVERLAP_SLICE_VOXELS = 1 << 18
#: Implementations of :func:`organ_statistics` (``"auto"``: numba when importable, else numpy).
BACKENDS = ("auto", "numpy", "numba", "torch")
#: ``"auto"`` keeps blocks smaller than this on numpy: loading numba and its cached machine code costs
#: ~0.35 s once per process, while numba saves ~0.1 ms per MB of block (a phantom case is a few MB,
#: a real CT's ensemble block ~1 GB). Both give the same bits.
AUTO_NUMBA_MIN_BYTES = 32 * 2**20

_ONES = np.uint64(0x0101010101010101)
_BIAS = np.uint64(0x7E7E7E7E7E7E7E7E)  # a lane count c >= 2 iff c + 0x7E has bit 7 set (c <= 129)
_HIGHS = np.uint64(0x8080808080808080)
_SEVEN = np.uint64(7)


class _Positions:
    """Maps positions in a gathered byte array back to flat voxel indices."""

    def __init__(self, words: np.ndarray | None, n8: int):
        self.words = words  # None: positions are voxel indices already
        self.n8 = n8  # voxels covered by whole words in the volume

    def voxels(self, pos: np.ndarray) -> np.ndarray:
        pos = pos.astype(np.int64, copy=False)
        if self.words is None:
            return pos
        n_gathered = self.words.size * 8
        if pos.size == 0 or pos[-1] < n_gathered:  # positions are sorted: no tail voxel among them
            return self.words[pos >> 3] * 8 + (pos & 7)
        in_words = pos < n_gathered
        out = np.empty(pos.shape, dtype=np.int64)
        p = pos[in_words]
        out[in_words] = self.words[p >> 3] * 8 + (p & 7)
        out[~in_words] = self.n8 + (pos[~in_words] - n_gathered)
        return out


def _gather(block3: np.ndarray, words: np.ndarray, m: int, c: int, word_idx: np.ndarray, n8: int) -> np.ndarray:
    """Bytes of (member m, organ c) at the given words, then the tail voxels (N % 8 of them)."""
    picked = words[m, c].take(word_idx).view(np.uint8)
    if n8 == block3.shape[2]:
        return picked
    return np.concatenate((picked, block3[m, c, n8:]))


def _pass_one(words, coverage, scored, low_mask, need_overlap):
    """Active words per scored organ, and overlap-candidate voxels (all sorted)."""
    m_count, c_count, nw = words.shape
    partial = [c for c in range(c_count) if not coverage[:, c].all()]
    candidates = []
    chunk = min(CHUNK_WORDS, max(nw, 1))
    union = np.empty((c_count, chunk), dtype=np.uint64)  # buffers reused across chunks
    scratch = np.empty((c_count, chunk), dtype=np.uint64)
    lanes = np.empty(chunk, dtype=np.uint64)
    nonzero = np.zeros((c_count, nw), dtype=bool)  # per organ and word: some byte > low
    for a in range(0, nw, chunk):
        b = min(a + chunk, nw)
        u, t, lane = union[:, : b - a], scratch[:, : b - a], lanes[: b - a]
        sub = words[:, :, a:b]
        u[...] = sub[0]
        for m in range(1, m_count):
            np.bitwise_or(u, sub[m], out=u)
        for c in partial:  # a member that does not cover an organ must not count for it
            u[c] = 0
            for m in np.flatnonzero(coverage[:, c]):
                u[c] |= sub[m, c]
        if scored:
            np.bitwise_and(u, low_mask, out=t)
            np.not_equal(t, 0, out=nonzero[:, a:b])
        if need_overlap:  # per byte lane: number of organs with some member >= 128
            np.right_shift(u, _SEVEN, out=t)
            np.bitwise_and(t, _ONES, out=t)
            np.add.reduce(t, axis=0, out=lane)
            lane += _BIAS
            lane &= _HIGHS
            hit = np.flatnonzero(lane)
            if hit.size:
                flags = lane[hit].view(np.uint8).reshape(-1, 8)  # byte v of word w is voxel 8w + v
                w, v = np.nonzero(flags)
                candidates.append((hit[w] + a) * 8 + v)
    active = {c: np.flatnonzero(nonzero[c]) for c in scored}
    cand = np.concatenate(candidates).astype(np.int64, copy=False) if candidates else np.zeros(0, dtype=np.int64)
    return active, cand


def _band_stats(rows, levels, config, n_members):
    """Classify gathered voxels; Eq. 1-2 on the band. Returns (band_pos, inc, unc, std, ent, organ_voxels)."""
    hi, lo = rows[0], rows[0]
    if n_members > 1:
        hi, lo = np.maximum(rows[0], rows[1]), np.minimum(rows[0], rows[1])
        for r in rows[2:]:
            np.maximum(hi, r, out=hi)
            np.minimum(lo, r, out=lo)
    quiet_high = lo >= levels.high if levels.high <= 255 else np.zeros(lo.shape, dtype=bool)
    band = hi > levels.low
    band &= ~quiet_high
    band_pos = np.flatnonzero(band)
    wide = np.int64 if n_members > 150 else np.int32
    s1 = np.zeros(band_pos.size, dtype=wide)
    s2 = np.zeros(band_pos.size, dtype=wide)
    ent = np.zeros(band_pos.size, dtype=np.float64)
    lut = entropy_lut(config.entropy)
    for r in rows:  # a loop over members, each step vectorised over the band
        qm = r.take(band_pos)
        ent += lut.take(qm)
        qi = qm.astype(wide)
        s1 += qi
        np.multiply(qi, qi, out=qi)
        s2 += qi
    ent /= n_members
    d = s2
    d *= n_members
    d -= s1 * s1  # = (n * 255 * std)^2, exactly
    inc = d > std_threshold_int(config.inconsistency_threshold, n_members)
    std = np.sqrt(d) / (n_members * 255.0)
    unc = ent > config.uncertainty_threshold
    organ = int(np.count_nonzero(quiet_high)) + int(np.count_nonzero(2 * s1 > 255 * n_members))
    return band_pos, inc, unc, std, ent, organ


def _overlap(block3, coverage, one_hot, candidates):
    """Eq. 3 at candidate voxels (sorted flat indices): per organ, the sorted voxels where it is 1."""
    m_count, c_count = block3.shape[:2]
    out = [[] for _ in range(c_count)]
    hot = np.flatnonzero(one_hot)
    for a in range(0, candidates.size, OVERLAP_SLICE_VOXELS):
        vox = candidates[a : a + OVERLAP_SLICE_VOXELS]
        # high[m][c] = 1 where member m has organ c > 0.5, i.e. stored value >= 128 (bit 7); uncovered: 0
        high = [np.take(block3[m], vox, axis=1) >> 7 for m in range(m_count)]
        for m in range(m_count):
            high[m][~coverage[m]] = 0
        count = [h.sum(axis=0, dtype=np.uint8) for h in high]  # organs > 0.5 per member
        ovl = np.zeros((c_count, vox.size), dtype=bool)
        for m in range(m_count):
            ovl |= (high[m] & (count[m] >= 2)).view(bool)
        if hot.size:  # a one-hot member cannot overlap itself: count other members' other organs
            total = functools.reduce(np.add, [x.astype(np.int16) for x in count])
            per_organ = functools.reduce(np.add, [h.astype(np.int16) for h in high])
            for m in hot:
                others = (total - count[m])[None, :] - (per_organ - high[m])
                ovl |= high[m].view(bool) & (others >= 1)
        for c in range(c_count):
            out[c].append(vox[ovl[c]])
    empty = np.zeros(0, dtype=np.int64)
    return [np.concatenate(v) if v else empty for v in out]


@functools.cache
def _numba_kernel():
    """The compiled kernel, or None with a warning (once) when numba cannot be imported."""
    try:
        from alqa_core.attention.kernel_jit import organ_statistics_jit
    except (ImportError, RuntimeError) as exc:  # RuntimeError: numba found no writable cache directory
        warnings.warn(f"attention: numba is not importable ({exc}); the numpy kernel (about 2x slower) is used", stacklevel=3)
        return None
    return organ_statistics_jit


def resolve_backend(backend: str = "auto", nbytes: int | None = None) -> str:
    """The kernel a ``backend`` setting runs for a block of ``nbytes``.

    ``"auto"``: numpy below :data:`AUTO_NUMBA_MIN_BYTES`, else numba when
    importable (else numpy, with a warning); ``nbytes=None`` counts as large.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if nbytes is not None and nbytes < AUTO_NUMBA_MIN_BYTES:
            return "numpy"
        return "numba" if _numba_kernel() is not None else "numpy"
    if backend == "numba" and _numba_kernel() is None:
        raise ImportError("attention backend 'numba' needs the numba package (a dependency of alqa: reinstall it); backend='auto' falls back to numpy")
    return backend


def organ_statistics(
    block3: np.ndarray,
    coverage: np.ndarray,
    one_hot: np.ndarray,
    scored: list[int],
    config: AttentionConfig,
    *,
    backend: str = "auto",
    device: str | None = None,
) -> dict[int, OrganStats]:
    """Eq. 1-3 for the ``scored`` channels of a C-contiguous uint8 block (M, C, N).

    ``coverage[m, c]``: member m predicts organ c. ``one_hot[m]``: member m is
    a label map (values 0/255). Channels a member does not cover are ignored.
    ``backend``: one of :data:`BACKENDS` (every one gives the same bits; see
    :func:`resolve_backend`); ``device`` is the torch backend's (default
    CUDA when available).
    """
    name = resolve_backend(backend, getattr(block3, "nbytes", None))
    if name == "numba":
        return _numba_kernel()(block3, coverage, one_hot, scored, config)
    if name == "torch":
        from alqa_core.attention.kernel_torch import organ_statistics_torch

        return organ_statistics_torch(block3, coverage, one_hot, scored, config, device=device)
    return _organ_statistics_numpy(block3, coverage, one_hot, scored, config)


def _organ_statistics_numpy(block3, coverage, one_hot, scored, config) -> dict[int, OrganStats]:
    m_count, c_count, n = block3.shape
    n8 = n - n % 8
    words = block3[:, :, :n8].view(np.uint64)
    nw = n8 // 8
    levels = quiet_levels(config)  # thresholds are >= 0, so levels.low >= 0
    covered = [c for c in range(c_count) if coverage[:, c].any()]
    need_overlap = len(covered) >= 2
    if need_overlap and c_count > 129:
        raise ValueError(f"at most 129 organ channels are supported, got {c_count}")
    active, cand = _pass_one(words, coverage, scored, levels.low_word_mask, need_overlap)
    if need_overlap and n8 < n:  # the last N % 8 voxels are in no word: always candidates
        cand = np.concatenate((cand, np.arange(n8, n, dtype=np.int64)))
    overlaps = _overlap(block3, coverage, one_hot, cand) if need_overlap else None
    empty = np.zeros(0, dtype=np.int64)
    out = {}
    for c in scored:
        members = np.flatnonzero(coverage[:, c])
        word_idx = active[c]
        if word_idx.size > DENSE_FRACTION * max(nw, 1):
            rows = [block3[m, c] for m in members]
            positions = _Positions(None, n8)
        else:
            rows = [_gather(block3, words, m, c, word_idx, n8) for m in members]
            positions = _Positions(word_idx, n8)
        band_pos, inc, unc, std, ent, organ = _band_stats(rows, levels, config, members.size)
        out[c] = OrganStats(
            band=positions.voxels(band_pos),
            inconsistent=inc,
            uncertain=unc,
            std=std,
            entropy=ent,
            overlap=overlaps[c] if overlaps is not None else empty,
            organ_voxels=organ,
        )
    return out
