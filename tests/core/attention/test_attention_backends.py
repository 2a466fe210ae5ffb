"""The attention kernel's backends (numpy, numba, torch) give the same bits, and the fallback when numba is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from alqa_core.attention import kernel_jit
from alqa_core.attention.compute import compute_attention
from alqa_core.attention.kernel import AUTO_NUMBA_MIN_BYTES, organ_statistics, resolve_backend
from alqa_core.attention.kernel_torch import attention_device
from alqa_core.config.sections import AttentionConfig
from alqa_core.errors import AlqaInputError

REPO = Path(__file__).resolve().parents[3]
FIELDS = ("band", "inconsistent", "uncertain", "std", "entropy", "overlap")


def _u8(p) -> np.ndarray:
    return np.clip(np.rint(np.asarray(p, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def _organ_like(rng, members, organs, shape):
    """Smooth fields with sigmoid edges, jittered per member: most voxels 0, interiors 255, bands between."""
    base = ndimage.gaussian_filter(rng.random((organs, *shape)), (0, 2.0, 2.0, 2.0))
    out = np.zeros((members, organs, *shape))
    for m in range(members):
        field = base + ndimage.gaussian_filter(rng.random((organs, *shape)), (0, 2, 2, 2)) * 0.02
        for c in range(organs):
            t = np.quantile(field[c], 0.8)
            out[m, c] = 1 / (1 + np.exp(-(field[c] - t) / (field[c].std() * 0.15)))
    return _u8(out)


def _label_member(rng, organs, shape) -> np.ndarray:
    """A one-hot member: the argmax of smooth fields (background included), 0/255 per organ."""
    label = ndimage.gaussian_filter(rng.random((organs + 1, *shape)), (0, 2, 2, 2)).argmax(axis=0)
    return np.stack([label == c + 1 for c in range(organs)]).astype(np.uint8) * 255


def _assert_same_bits(a: dict, b: dict):
    assert a.keys() == b.keys()
    for c in a:
        for f in FIELDS:
            x, y = getattr(a[c], f), getattr(b[c], f)
            assert x.dtype == y.dtype and x.shape == y.shape, (c, f, x.dtype, y.dtype, x.shape, y.shape)
            assert x.tobytes() == y.tobytes(), (c, f)  # floats compared bit for bit
        assert a[c].organ_voxels == b[c].organ_voxels, c


def _cases():
    rng = np.random.default_rng(21)
    organ_like = _organ_like(rng, 3, 6, (24, 20, 16))
    hot = organ_like.copy()
    hot[1] = _label_member(rng, 6, (24, 20, 16))
    partial = np.ones((3, 6), bool)
    partial[2, 1] = partial[0, 4] = partial[1, 5] = False
    five = _organ_like(rng, 5, 4, (12, 10, 9))  # 5 members: two groups of 4 rows in pass 1; 1080 voxels, not a multiple of 8
    return {
        "organ-like": (organ_like, None, None),
        "one-hot member, partial coverage": (hot, [False, True, False], partial),
        "noise, odd voxel count": (rng.integers(0, 256, (3, 5, 13, 11, 7), dtype=np.uint8), None, None),
        "five members": (five, None, None),
        "two one-hot members": (np.stack([_label_member(rng, 6, (16, 12, 8)), _label_member(rng, 6, (16, 12, 8))]), [True, True], None),
        "one member": (organ_like[:1], None, None),
        "one organ": (organ_like[:, :1], None, None),
        "tiny": (rng.integers(0, 256, (2, 3, 1, 1, 5), dtype=np.uint8), None, None),
    }


CONFIGS = [
    AttentionConfig(),
    AttentionConfig(entropy="entr"),
    AttentionConfig(inconsistency_threshold=1e-3, uncertainty_threshold=1e-3),  # QuietLevels.low = 0: every nonzero voxel is active
    AttentionConfig(inconsistency_threshold=0.45, uncertainty_threshold=0.6),  # high thresholds: wide quiet levels
]


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "entr", "tiny-thresholds", "high-thresholds"])
def test_backends_give_identical_bits(case, cfg):
    block, one_hot, coverage = _cases()[case]
    m_count, c_count = block.shape[:2]
    block3 = block.reshape(m_count, c_count, -1)
    coverage = np.ones((m_count, c_count), bool) if coverage is None else coverage
    hot = np.zeros(m_count, bool) if one_hot is None else np.asarray(one_hot)
    scored = [c for c in range(c_count) if coverage[:, c].any()][::-1][: max(1, c_count - 1)]  # not all organs, any order
    ref = organ_statistics(block3, coverage, hot, scored, cfg, backend="numpy")
    assert any(s.band.size for s in ref.values()) or case == "tiny"
    _assert_same_bits(ref, organ_statistics(block3, coverage, hot, scored, cfg, backend="numba"))
    _assert_same_bits(ref, organ_statistics(block3, coverage, hot, scored, cfg, backend="torch", device="cpu"))


def test_numba_kernel_over_many_chunks_and_candidate_batches(monkeypatch):
    """Chunk boundaries of pass 1, more overlap candidates than one batch, band buffers refilled many times."""
    rng = np.random.default_rng(4)
    block = rng.integers(0, 256, (3, 4, 40, 30, 20), dtype=np.uint8)  # noise: nearly every word is an overlap candidate
    block[:, :, :20] = _organ_like(rng, 3, 4, (20, 30, 20))
    block3 = block.reshape(3, 4, -1)
    args = (block3, np.ones((3, 4), bool), np.zeros(3, bool), [0, 1, 2, 3], AttentionConfig())
    ref = organ_statistics(*args, backend="numpy")
    assert sum(s.overlap.size for s in ref.values()) > 8 * kernel_jit._CAND_BATCH
    _assert_same_bits(ref, organ_statistics(*args, backend="numba"))
    monkeypatch.setattr(kernel_jit, "JIT_CHUNK_WORDS", 24)
    monkeypatch.setattr(kernel_jit, "BAND_WORDS", 3)
    _assert_same_bits(ref, organ_statistics(*args, backend="numba"))


def test_auto_is_numba_for_large_blocks_and_the_results_of_compute_attention_agree():
    assert resolve_backend("auto") == "numba"  # numba is a dependency: a missing one fails here, not silently
    assert resolve_backend("auto", AUTO_NUMBA_MIN_BYTES) == "numba"
    assert resolve_backend("auto", AUTO_NUMBA_MIN_BYTES - 1) == "numpy"  # not worth loading numba for
    assert resolve_backend("numba", 10) == "numba" and resolve_backend("torch", 10) == "torch"
    rng = np.random.default_rng(8)
    block = _organ_like(rng, 3, 4, (20, 18, 16))
    results = {b: compute_attention(block, organs=list("abcd"), spacing_mm=(2.0, 2.0, 2.0), backend=b) for b in ("numpy", "numba", "torch")}
    assert results["numpy"].heatmap.any()
    for r in results.values():
        assert np.array_equal(r.heatmap, results["numpy"].heatmap)
        assert [o.attention_ml for o in r.size.organs] == [o.attention_ml for o in results["numpy"].size.organs]


def test_unknown_backend_and_missing_cuda_are_refused():
    block3 = np.zeros((2, 1, 8), np.uint8)
    with pytest.raises(ValueError, match="backend must be one of"):
        organ_statistics(block3, np.ones((2, 1), bool), np.zeros(2, bool), [0], AttentionConfig(), backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(AlqaInputError, match="CUDA is not available"):
            attention_device("cuda")
        with pytest.raises(AlqaInputError, match="CUDA is not available"):
            organ_statistics(block3, np.ones((2, 1), bool), np.zeros(2, bool), [0], AttentionConfig(), backend="torch", device="cuda:0")
    assert attention_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert attention_device("cpu").type == "cpu"


def test_torch_backend_takes_a_tensor_where_it_lies():
    rng = np.random.default_rng(2)
    block3 = _organ_like(rng, 3, 3, (12, 12, 8)).reshape(3, 3, -1)
    args = (np.ones((3, 3), bool), np.zeros(3, bool), [0, 1, 2], AttentionConfig())
    _assert_same_bits(organ_statistics(block3, *args, backend="numpy"), organ_statistics(torch.from_numpy(block3), *args, backend="torch"))
    with pytest.raises(AlqaInputError, match="uint8"):
        organ_statistics(torch.zeros((3, 3, 8)), *args, backend="torch")


def test_without_numba_auto_falls_back_to_numpy_and_numba_is_refused_clearly():
    """A fresh interpreter in which ``import numba`` fails (as when it is not installed)."""
    script = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["numba"] = None  # import numba raises ImportError
        import numpy as np
        from alqa_core.attention.compute import compute_attention
        from alqa_core.attention.kernel import resolve_backend
        block = np.zeros((3, 1, 10, 10, 10), np.uint8)
        block[0, 0, 2:8, 2:8, 2:8] = 255
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert resolve_backend("auto") == "numpy"  # a large block's choice
        assert any("numba is not importable" in str(w.message) for w in caught), caught
        assert compute_attention(block, organs=["a"], spacing_mm=(2.0, 2.0, 2.0)).heatmap.any()
        try:
            compute_attention(block, organs=["a"], spacing_mm=(2.0, 2.0, 2.0), backend="numba")
        except ImportError as exc:
            assert "needs the numba package" in str(exc), exc
        else:
            raise AssertionError("backend='numba' without numba did not raise")
        assert "numba" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
        print("fallback ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "fallback ok" in out.stdout


def test_auto_loads_numba_only_for_a_large_block():
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from alqa_core.attention.compute import compute_attention
        from alqa_core.attention.kernel import AUTO_NUMBA_MIN_BYTES
        small = np.zeros((3, 2, 20, 20, 20), np.uint8)
        small[0, 0, 5:15, 5:15, 5:15] = 255
        a = compute_attention(small, organs=["a", "b"], spacing_mm=(2.0, 2.0, 2.0))
        assert a.heatmap.any() and "numba" not in sys.modules
        k = AUTO_NUMBA_MIN_BYTES // (3 * 2 * 64 * 64) + 1
        large = np.zeros((3, 2, 64, 64, k), np.uint8)
        large[:, :, :20, :20, :20] = small
        b = compute_attention(large, organs=["a", "b"], spacing_mm=(2.0, 2.0, 2.0))
        assert "numba" in sys.modules
        assert np.array_equal(b.heatmap[:, :20, :20, :20], a.heatmap) and not b.heatmap[:, 20:].any()
        print("auto ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "auto ok" in out.stdout


def test_importing_the_attention_package_loads_neither_numba_nor_torch():
    script = (
        "import sys; import alqa_core.attention as a; from alqa_core.attention import compute, kernel, size, cleaning; "
        "print(sorted(m for m in ('numba', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"
