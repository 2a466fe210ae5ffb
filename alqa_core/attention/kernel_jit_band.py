"""Pass 2 of the compiled attention kernel (:mod:`.kernel_jit`): Eq. 1-2 on each organ's band, bit-identical to :mod:`.kernel`."""

from __future__ import annotations

import math

import numba
import numpy as np

_ZERO = np.uint64(0)

# as in kernel_jit: no Python division checks (loops vectorise), no fastmath (IEEE, as numpy)
_JIT = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")


@numba.njit(**_JIT)
def band_stats(words, scored, members, n_members, flat, segments, counts, chunk, lut, lut2, low, high, std_thr, unc_thr, buf_words, starts, band, inc, unc, std, ent):
    """Pass 2, for each scored organ ``scored[i]``: Eq. 1-2 on its band, written from ``starts[i]``.

    ``members[c, :n_members[c]]``: the members covering organ c;
    ``flat``, ``segments``, ``counts``, ``chunk``: its active words, as
    :func:`active_words` left them; ``lut``, ``lut2``: :func:`entropy_tables`; ``std_thr[i]``: Eq. 1's integer
    threshold for its member count. The outputs (allocated by the caller:
    numpy reuses its allocations from call to call, while fresh pages cost
    ~2 us each) need room for 8 entries per active word. Returns
    ``(k, organ_voxels)`` per scored organ: its band voxels and its organ
    voxel count.

    The members' words of ``buf_words`` active words at a time are gathered
    into a small buffer; max and min across members, the band's compaction,
    its sums (member outer, voxel inner: each voxel's entropy is still summed
    member by member, in member order) and the outputs are loops over it.
    """
    m_count = words.shape[0]
    size = buf_words * 8
    g64 = np.empty((m_count, buf_words), np.uint64)  # gathered words, one row per member
    g = g64.view(np.uint8).reshape((m_count, size))
    hi = np.empty(size, np.uint8)
    lo = np.empty(size, np.uint8)
    sel = np.empty(size, np.int64)  # band entries of the buffer
    s1 = np.empty(size, np.int64)
    s2 = np.empty(size, np.int64)
    e = np.empty(size, np.float64)
    inband = np.empty(size, np.uint8)
    inband8 = inband.view(np.uint64)
    ks = np.zeros(scored.size, np.int64)
    organs = np.zeros(scored.size, np.int64)
    idx = np.empty(counts.max() if counts.size else 0, np.int32)
    nw_all = words.shape[2]
    for i in range(scored.size):
        c = scored[i]
        nm = n_members[c]
        nw = 0
        for ch in range((nw_all + chunk - 1) // chunk):  # the organ's words, chunk after chunk (ascending)
            seg_start = segments[ch, c]
            seg_stop = segments[ch, c + 1] if c + 1 < segments.shape[1] else segments[ch + 1, 0]
            for t in range(seg_start, seg_stop):
                idx[nw] = flat[t]
                nw += 1
        scale = nm * 255.0
        nmf = float(nm)
        k = starts[i]
        organ = 0
        for a in range(0, nw, buf_words):
            b = min(a + buf_words, nw)
            L = (b - a) * 8
            for j in range(nm):  # (a row view: indexing the 3-D array in the loop costs ~6% of the kernel)
                row = words[members[c, j], c]
                dst = g64[j]
                for t in range(b - a):
                    dst[t] = row[idx[a + t]]
            for t in range(L):
                hi[t] = g[0, t]
                lo[t] = g[0, t]
            for j in range(1, nm):
                for t in range(L):
                    hi[t] = max(hi[t], g[j, t])
                    lo[t] = min(lo[t], g[j, t])
            for t in range(L):  # every member confidently in: organ, no attention
                organ += np.int64(lo[t]) >= high
            for t in range(L):
                inband[t] = (np.int64(hi[t]) > low) & (np.int64(lo[t]) < high)
            r = 0
            for w in range(L // 8):  # branch-free compaction, skipping 8 voxels without band at once
                if inband8[w] != _ZERO:
                    for t in range(8 * w, 8 * w + 8):
                        sel[r] = t
                        r += inband[t]
            for t in range(r):
                q0 = np.int64(g[0, sel[t]])
                s1[t] = q0
                s2[t] = q0 * q0
            if nm == 1:
                for t in range(r):
                    e[t] = lut[g[0, sel[t]]]
            else:  # members 0 and 1 at once: lut2[q0, q1] = lut[q0] + lut[q1], the same sum in the same order
                for t in range(r):
                    q1 = np.int64(g[1, sel[t]])
                    e[t] = lut2[np.int64(g[0, sel[t]]) * 256 + q1]
                    s1[t] += q1
                    s2[t] += q1 * q1
            for j in range(2, nm):
                for t in range(r):
                    q = np.int64(g[j, sel[t]])
                    e[t] += lut[q]
                    s1[t] += q
                    s2[t] += q * q
            # the outputs, one simple loop each (fused loops do not vectorise and run 2x slower)
            for t in range(r):
                s = sel[t]
                band[k + t] = np.int64(idx[a + (s >> 3)]) * 8 + (s & 7)
            thr = std_thr[i]
            for t in range(r):
                s2[t] = s2[t] * nm - s1[t] * s1[t]  # now d = (n * 255 * std)^2, exactly
            for t in range(r):
                inc[k + t] = s2[t] > thr
            std_out = std[k : k + r]  # views: the loops below then vectorise (square root, division)
            for t in range(r):
                std_out[t] = math.sqrt(s2[t]) / scale
            ent_out = ent[k : k + r]
            for t in range(r):
                ent_out[t] = e[t] / nmf
            for t in range(r):
                unc[k + t] = ent_out[t] > unc_thr
            for t in range(r):
                organ += 2 * s1[t] > 255 * nm
            k += r
        ks[i] = k - starts[i]
        organs[i] = organ
    return ks, organs
