"""Eq. 1-3 compiled with numba: :mod:`.kernel`'s arithmetic in two fused passes, bit-identical to it.

Loaded only when attention is computed on a large block (never by importing
the package, a sensor or the CLI; see ``kernel.AUTO_NUMBA_MIN_BYTES``).
Measured cost: importing numba 0.12-0.2 s; compiling these functions ~8 s on
the first call ever; ``cache=True`` keeps the machine code on disk (~1 MB in
``__pycache__`` beside this file, else numba's user cache), after which a new
process's first call costs ~0.2 s.

Why numba here: the numpy kernel makes ~10 passes over each chunk of words
(one per ufunc) and gathers bytes per organ with fancy indexing, which left
it at 30-45% of memcpy bandwidth on organ-like blocks; fused loops read each
byte of the block once (pass 1) and the active words of an organ once more
(pass 2), for 60-80% (``benchmarks/bench_attention.py``).

The same steps as :mod:`.kernel` (its docstring explains them), on the block
as uint64 words (8 voxels each; a block whose voxel count is not a multiple
of 8 is copied once, zero-padded: a 0 byte is never active nor high, so the
padding adds nothing):

1. :func:`active_words`: per chunk of words, the OR across the members
   covering each organ; a word is active for a scored organ if some byte
   exceeds ``QuietLevels.low``; the per-byte-lane count of organs with a byte
   >= 128 finds the words where Eq. 3 can fire, and Eq. 3 is evaluated there
   8 voxels at a time (lane arithmetic, per member), while the chunk is in
   cache.
2. :func:`~alqa_core.attention.kernel_jit_band.band_stats`: per organ, on its active words, the voxel
   classification and Eq. 1-2 with the same integer sums and the same float64
   operations in the same order (entropy summed member by member from 0.0,
   then divided; ``sqrt(d) / (n * 255)``), without fastmath, so the floats are
   bit-identical.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from alqa_core.attention.constants import entropy_lut, quiet_levels, std_threshold_int
from alqa_core.attention.kernel_jit_band import band_stats
from alqa_core.attention.organ_stats import OrganStats
from alqa_core.config.sections import AttentionConfig

#: Words per chunk of pass 1: 8192 words = 64 KiB per (member, organ) row.
JIT_CHUNK_WORDS = 8192
#: Active words per step of pass 2 (:func:`~alqa_core.attention.kernel_jit_band.band_stats`; its buffers stay in L1/L2).
BAND_WORDS = 512
#: Overlap-candidate words handled per batch in pass 1.
_CAND_BATCH = 256

_ONES = np.uint64(0x0101010101010101)
_BIAS = np.uint64(0x7E7E7E7E7E7E7E7E)  # a lane count c >= 2 iff c + 0x7E has bit 7 set (c <= 129)
_HIGHS = np.uint64(0x8080808080808080)
_SEVEN = np.uint64(7)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)

# error_model="numpy": no Python-style division checks, so loops vectorise; no fastmath: IEEE as numpy.
_JIT = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")


@numba.njit(**_JIT)
def _grow(arr, cap):
    out = np.empty(cap, arr.dtype)
    out[: arr.size] = arr
    return out


@numba.njit(**_JIT)
def _overlap_voxel(block3, coverage, one_hot, v, ov_vox, ov_organ, n_ov):
    """Eq. 3 at voxel ``v`` with :mod:`.kernel`'s per-voxel rule (for one-hot members); appends pairs, returns the count."""
    m_count, c_count = block3.shape[0], block3.shape[1]
    count = np.zeros(m_count, np.int64)
    total = 0
    for m in range(m_count):
        for c in range(c_count):
            count[m] += (block3[m, c, v] >> 7) & coverage[m, c]
        total += count[m]
    for c in range(c_count):
        per = 0
        for m in range(m_count):
            per += (block3[m, c, v] >> 7) & coverage[m, c]
        hit = False
        for m in range(m_count):
            if (block3[m, c, v] >> 7) & coverage[m, c]:
                if count[m] >= 2:
                    hit = True
                elif one_hot[m] and (total - count[m]) - (per - 1) >= 1:
                    # a one-hot member cannot overlap itself: other members' other organs count
                    hit = True
        if hit:
            ov_vox[n_ov] = v
            ov_organ[n_ov] = c
            n_ov += 1
    return n_ov


@numba.njit(**_JIT)
def active_words(words, block3, members4, scored, low_mask, coverage, one_hot, need_overlap, chunk, flat):
    """Pass 1 over ``words`` (M, C, nw) uint64; ``block3`` is the same memory as uint8 (M, C, 8 nw).

    ``members4[c]``: the members covering organ c, padded to a multiple of 4
    by repeating the last one (OR is idempotent: one fused loop per 4 rows,
    no intermediate stores); ``-1`` everywhere for an organ no member covers.
    ``coverage``: uint8 (M, C). Writes the active words of the scored organs
    to ``flat`` (int32, room for C * nw, allocated by the caller; written
    from its start, so only the pages needed are touched), chunk after
    chunk, organ after organ. Returns ``(counts, segments, ov_vox, ov_organ,
    n_ov)``: ``counts[c]`` active words of organ c, ``segments[k, c]`` where
    chunk k's words of organ c start in ``flat`` (ascending within a
    segment), and the ``n_ov`` pairs (voxel, organ) where Eq. 3 is 1, by
    ascending voxel then organ.
    """
    m_count, c_count, nw = words.shape
    counts = np.zeros(c_count, np.int64)
    segments = np.zeros(((nw + chunk - 1) // chunk + 1, c_count), np.int64)
    n_flat = 0
    cap = 1024
    ov_vox = np.empty(cap, np.int32)  # voxel counts stay below 2^31 (checked by the caller)
    ov_organ = np.empty(cap, np.uint8)  # at most 129 organs
    n_ov = 0
    u = np.empty(chunk, np.uint64)
    lanes = np.empty(chunk, np.uint64)
    flags = np.zeros(chunk + 8, np.uint8)
    flags8 = flags.view(np.uint64)  # 8 word flags per test: most groups are inactive
    multi = np.empty(m_count, np.uint64)
    hits = np.empty(c_count, np.uint64)
    cw = np.empty(chunk, np.int64)  # candidate words of a chunk
    hb = np.empty((_CAND_BATCH, m_count, c_count), np.uint64)  # their high bits (lane bit 0)
    any_hot = one_hot.any()
    groups = members4.shape[1]
    for a in range(0, nw, chunk):
        n = min(chunk, nw - a)
        lanes[:n] = _ZERO
        for c in range(c_count):
            segments[a // chunk, c] = n_flat
            if members4[c, 0] < 0:
                continue
            for g in range(0, groups, 4):
                r0 = words[members4[c, g], c, a : a + n]
                r1 = words[members4[c, g + 1], c, a : a + n]
                r2 = words[members4[c, g + 2], c, a : a + n]
                r3 = words[members4[c, g + 3], c, a : a + n]
                if g + 4 < groups:  # more members to come
                    if g == 0:
                        for w in range(n):
                            u[w] = r0[w] | r1[w] | r2[w] | r3[w]
                    else:
                        for w in range(n):
                            u[w] |= r0[w] | r1[w] | r2[w] | r3[w]
                    continue
                # the last 4 rows: the lane count and the activity flags in the same loop
                if g == 0:
                    for w in range(n):
                        x = r0[w] | r1[w] | r2[w] | r3[w]
                        lanes[w] += (x >> _SEVEN) & _ONES
                        flags[w] = (x & low_mask) != _ZERO
                else:
                    for w in range(n):
                        x = u[w] | r0[w] | r1[w] | r2[w] | r3[w]
                        lanes[w] += (x >> _SEVEN) & _ONES
                        flags[w] = (x & low_mask) != _ZERO
            if scored[c]:
                flags[n : n + 8] = 0
                start = n_flat
                for g in range((n + 7) // 8):
                    if flags8[g] != _ZERO:
                        for w in range(8 * g, 8 * g + 8):
                            if flags[w]:
                                flat[n_flat] = a + w
                                n_flat += 1
                counts[c] += n_flat - start
        if not need_overlap:
            continue
        nc = 0
        for w in range(n):
            if ((lanes[w] + _BIAS) & _HIGHS) != _ZERO:  # >= 2 organs high in some member
                cw[nc] = a + w
                nc += 1
        if n_ov + 8 * c_count * nc > cap:
            cap = 2 * cap + 8 * c_count * nc
            ov_vox = _grow(ov_vox, cap)
            ov_organ = _grow(ov_organ, cap)
        if any_hot:
            for t in range(nc):
                for v in range(8):
                    n_ov = _overlap_voxel(block3, coverage, one_hot, cw[t] * 8 + v, ov_vox, ov_organ, n_ov)
            continue
        for b0 in range(0, nc, _CAND_BATCH):
            nb = min(_CAND_BATCH, nc - b0)
            # The candidates' high bits, gathered row by row: rows lie a multiple of 4 KiB apart
            # in a CT-sized block, so reading all rows at one word would thrash the cache sets.
            for m in range(m_count):
                for c in range(c_count):
                    if coverage[m, c]:
                        row = words[m, c]
                        for t in range(nb):
                            hb[t, m, c] = (row[cw[b0 + t]] >> _SEVEN) & _ONES
                    else:
                        for t in range(nb):
                            hb[t, m, c] = _ZERO
            for t in range(nb):
                # Eq. 3, 8 voxels at once: organ c is 1 where some member has it high and another organ high too
                for m in range(m_count):
                    cnt = _ZERO
                    for c in range(c_count):
                        cnt += hb[t, m, c]
                    multi[m] = ((cnt + _BIAS) & _HIGHS) >> _SEVEN
                any_hit = _ZERO
                for c in range(c_count):
                    hit = _ZERO
                    for m in range(m_count):
                        hit |= hb[t, m, c] & multi[m]
                    hits[c] = hit
                    any_hit |= hit
                for v in range(8):  # pairs by ascending voxel, then organ
                    shift = np.uint64(8 * v)
                    if (any_hit >> shift) & _ONE:
                        for c in range(c_count):
                            if (hits[c] >> shift) & _ONE:
                                ov_vox[n_ov] = cw[b0 + t] * 8 + v
                                ov_organ[n_ov] = c
                                n_ov += 1
    segments[-1, :] = n_flat  # the end of the last chunk's last segment
    return counts, segments, ov_vox, ov_organ, n_ov


@numba.njit(**_JIT)
def split_by_organ(vox, organ, c_count):
    """Counting sort of (voxel, organ) pairs by organ, stable: ``(voxels, starts)``, organ c's at ``voxels[starts[c]:starts[c + 1]]``."""
    starts = np.zeros(c_count + 1, np.int64)
    for t in range(organ.size):
        starts[organ[t] + 1] += 1
    for c in range(c_count):
        starts[c + 1] += starts[c]
    fill = starts[:-1].copy()
    out = np.empty(vox.size, np.int64)
    for t in range(vox.size):
        out[fill[organ[t]]] = vox[t]
        fill[organ[t]] += 1
    return out, starts


@functools.lru_cache(maxsize=None)
def entropy_tables(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 2's entropy per stored value, and ``lut2[256 * q0 + q1] = lut[q0] + lut[q1]`` (the first two members'
    sum, rounded as the member-by-member sum from 0.0 is: ``0.0 + x == x``). Built once per process (512 KiB)."""
    lut = np.ascontiguousarray(entropy_lut(kind))
    lut2 = (lut[:, None] + lut[None, :]).ravel()
    lut2.flags.writeable = False
    return lut, lut2


def organ_statistics_jit(
    block3: np.ndarray, coverage: np.ndarray, one_hot: np.ndarray, scored: list[int], config: AttentionConfig
) -> dict[int, OrganStats]:
    """:func:`alqa_core.attention.kernel.organ_statistics` through the compiled passes (same arguments, same result)."""
    m_count, c_count, n = block3.shape
    if n + 8 >= 2**31:
        raise ValueError(f"at most 2^31 - 9 voxels per channel are supported, got {n}")
    block3 = np.ascontiguousarray(block3)
    if n % 8:  # whole words only: a zero-padded copy (zeros are never active nor high)
        padded = np.zeros((m_count, c_count, n + 8 - n % 8), np.uint8)
        padded[:, :, :n] = block3
        block3 = padded
    words = block3.view(np.uint64)
    levels = quiet_levels(config)
    coverage = np.asarray(coverage, dtype=bool)
    covered = [c for c in range(c_count) if coverage[:, c].any()]
    need_overlap = len(covered) >= 2
    if need_overlap and c_count > 129:
        raise ValueError(f"at most 129 organ channels are supported, got {c_count}")
    members_of = [np.flatnonzero(coverage[:, c]).astype(np.int64) for c in range(c_count)]
    members4 = np.full((c_count, 4 * -(-m_count // 4)), -1, np.int64)
    for c, ms in enumerate(members_of):
        if ms.size:
            members4[c, : ms.size] = ms
            members4[c, ms.size :] = ms[-1]
    is_scored = np.zeros(c_count, np.bool_)
    is_scored[list(scored)] = True
    hot = np.ascontiguousarray(one_hot, dtype=np.bool_)
    flat = np.empty(c_count * words.shape[2], np.int32)  # written from its start: only the pages needed are touched
    chunk = JIT_CHUNK_WORDS
    counts, segments, ov_vox, ov_organ, n_ov = active_words(
        words, block3, members4, is_scored, levels.low_word_mask, coverage.astype(np.uint8), hot, need_overlap, chunk, flat
    )
    ov_vox, ov_starts = split_by_organ(ov_vox[:n_ov], ov_organ[:n_ov], c_count)
    lut, lut2 = entropy_tables(config.entropy)
    scored_arr = np.asarray(scored, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(8 * counts[scored_arr]))).astype(np.int64)
    band = np.empty(int(starts[-1]), np.int64)  # room for every voxel of the active words, organ after organ
    inc, unc = np.empty(band.size, bool), np.empty(band.size, bool)
    std, ent = np.empty(band.size, np.float64), np.empty(band.size, np.float64)
    n_members = np.array([ms.size for ms in members_of], np.int64)
    members = np.zeros((c_count, max(m_count, 1)), np.int64)
    for c, ms in enumerate(members_of):
        members[c, : ms.size] = ms
    std_thr = np.array([std_threshold_int(config.inconsistency_threshold, int(n_members[c])) for c in scored], np.int64)
    ks, organs = band_stats(
        words, scored_arr, members, n_members, flat, segments, counts, chunk, lut, lut2, levels.low, levels.high, std_thr,
        float(config.uncertainty_threshold), BAND_WORDS, starts, band, inc, unc, std, ent,
    )
    empty = np.zeros(0, dtype=np.int64)
    out = {}
    for i, c in enumerate(scored):
        a, b = starts[i], starts[i] + ks[i]
        out[c] = OrganStats(
            band=band[a:b],
            inconsistent=inc[a:b],
            uncertain=unc[a:b],
            std=std[a:b],
            entropy=ent[a:b],
            overlap=ov_vox[ov_starts[c] : ov_starts[c + 1]] if need_overlap else empty,
            organ_voxels=int(organs[i]),
        )
    return out
