"""QA montages: geometry, slice order, radiological orientation, overlay colours, PNG, torch path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alqa_core.errors import AlqaInputError
from alqa_core.organs import DEFAULT_ORGAN_TABLE as TABLE
from alqa_core.qa.montage import downsample, montage_layout, montage_png, montage_tensor, qa_montage, read_montage_png
from alqa_core.render import color_lut


def _center_px(layout, k):
    top, left, bottom, right = layout.slice_box_px(k)
    return int((top + bottom) / 2), int((left + right) / 2)


def test_sizes_and_grid():
    ct = np.full((20, 12, 10), 0.5, dtype=np.float32)
    layout = montage_layout(ct.shape)
    assert (layout.n_slices, layout.cols, layout.tile_vox, layout.slice_hw_vox) == (10, 4, 20, (12, 20))
    m = qa_montage(ct, None, TABLE)
    assert m.shape == (1344, 1344, 3) and m.dtype == np.uint8
    small = downsample(m, 256)
    assert small.shape == (256, 256, 3) and small.dtype == np.uint8
    assert qa_montage(ct, None, TABLE, size_px=256).shape == (256, 256, 3)
    # 10 slices on a 4 x 4 grid: tiles 10..15 are blank (black), used ones grey
    for k in range(10):
        r, c = _center_px(layout, k)
        assert m[r, c, 0] == 128
    blank = m[int(3.5 * layout.tile_vox * layout.px_per_vox), int(3.5 * layout.tile_vox * layout.px_per_vox)]
    assert blank.tolist() == [0, 0, 0]
    for n_slices in (1, 2, 5, 16, 17):
        assert montage_layout((4, 4, n_slices)).cols == math.ceil(math.sqrt(n_slices))


def test_slices_go_row_major_from_inferior_to_superior():
    n_k = 7
    ct = np.broadcast_to(((np.arange(n_k) + 1) / n_k).astype(np.float32), (16, 16, n_k)).copy()
    m = qa_montage(ct, None, TABLE, size_px=300)
    layout = montage_layout(ct.shape, 300)
    values = [int(m[_center_px(layout, k)][0]) for k in range(n_k)]
    assert values == [round(255 * (k + 1) / n_k) for k in range(n_k)]
    assert layout.tile_of(3) == (1, 0)  # 3 columns: slice 3 starts the second row


def test_radiological_orientation_right_on_the_left_anterior_on_top():
    n_i, n_j = 30, 30
    ct = np.zeros((n_i, n_j, 1), dtype=np.float32)
    ct[n_i - 6 :, 10:20, 0] = 1.0  # patient's right (RAS: +i is right)
    ct[13:17, n_j - 6 :, 0] = 0.5  # anterior (+j), mid-line
    m = qa_montage(ct, None, TABLE, size_px=300).astype(int)[..., 0]  # 10 px per voxel
    assert m[110:190, :50].min() == 255  # the right-side marker: image's left
    assert m[:, 200:].sum() == 0  # nothing on the image's right
    assert m[:50, 140:160].min() == 128  # the anterior marker: image's top
    assert m[250:].sum() == 0


def test_organs_overlaid_in_their_colour():
    ct = np.full((20, 20, 4), 0.5, dtype=np.float32)
    label = np.zeros(ct.shape, dtype=np.uint8)
    liver, spleen = TABLE.value_of("liver"), TABLE.value_of("spleen")
    label[:, :, 1] = liver
    label[:, :, 2] = spleen
    before = (ct.copy(), label.copy())
    m = qa_montage(ct, label, TABLE, size_px=200).astype(float)
    np.testing.assert_array_equal(ct, before[0])  # inputs untouched
    np.testing.assert_array_equal(label, before[1])
    layout = montage_layout(ct.shape, 200)
    lut = color_lut(TABLE).astype(float)
    for k, value in ((1, liver), (2, spleen)):
        expected = 0.6 * 127.5 + 0.4 * lut[value]
        np.testing.assert_allclose(m[_center_px(layout, k)], expected, atol=1.0)
    np.testing.assert_allclose(m[_center_px(layout, 0)], [128, 128, 128], atol=1.0)
    assert not np.allclose(lut[liver], lut[spleen])


def test_non_square_slices_are_padded_not_stretched():
    ct = np.ones((40, 10, 1), dtype=np.float32)  # wide (40 columns) and short (10 rows)
    layout = montage_layout(ct.shape, 400)
    m = qa_montage(ct, None, TABLE, size_px=400)[..., 0]
    top, left, bottom, right = layout.slice_box_px(0)
    assert (top, left, bottom, right) == (150.0, 0.0, 250.0, 400.0)
    assert m[160:240].min() == 255 and m[:140].max() == 0 and m[260:].max() == 0


def test_bad_inputs_are_refused():
    ct = np.zeros((8, 8, 3), dtype=np.float32)
    with pytest.raises(AlqaInputError, match="not in the organ table"):
        qa_montage(ct, np.full(ct.shape, 42, dtype=np.uint8), TABLE)
    with pytest.raises(AlqaInputError, match="shape"):
        qa_montage(ct, np.zeros((8, 8, 2), dtype=np.uint8), TABLE)
    with pytest.raises(AlqaInputError, match="3D"):
        qa_montage(ct[..., 0], None, TABLE)
    with pytest.raises(AlqaInputError, match="integer"):
        qa_montage(ct, np.zeros(ct.shape, dtype=np.float32), TABLE)
    with pytest.raises(AlqaInputError, match="finite"):
        qa_montage(np.full(ct.shape, np.nan, dtype=np.float32), None, TABLE)


def test_png_round_trip_and_unreadable_png(tmp_path):
    rng = np.random.default_rng(0)
    m = qa_montage(rng.random((12, 12, 5)).astype(np.float32), None, TABLE, size_px=64)
    path = tmp_path / "m.png"
    path.write_bytes(montage_png(m))
    np.testing.assert_array_equal(read_montage_png(path), m)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(AlqaInputError) as err:
        read_montage_png(bad)
    assert "bad.png" in str(err.value)
    with pytest.raises(AlqaInputError):
        read_montage_png(tmp_path / "missing.png")


def test_torch_montage_matches_the_regressor_input_and_is_differentiable():
    rng = np.random.default_rng(1)
    ct = rng.random((30, 24, 11)).astype(np.float32)
    label = np.zeros(ct.shape, dtype=np.uint8)
    label[3:15, 4:20, 2:9] = TABLE.value_of("liver")
    label[18:28, 2:10, :] = TABLE.value_of("kidney_left")
    reference = downsample(qa_montage(ct, label, TABLE)).astype(np.float32)
    one_hot = torch.stack([torch.from_numpy(label == v) for v in TABLE.values]).float().requires_grad_(True)
    m = montage_tensor(torch.from_numpy(ct), one_hot, TABLE)
    assert m.shape == (3, 256, 256)
    diff = np.abs(m.detach().permute(1, 2, 0).numpy() * 255 - reference)
    assert diff.mean() < 0.5 and diff.max() < 3
    m.mean().backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0


def test_one_slice_montage_matches_the_overview_render():
    """Same display convention and overlay as alqa_core.render (what annotators see in previews)."""
    import io

    from PIL import Image

    from alqa_core.render import render_overview

    rng = np.random.default_rng(2)
    ct = rng.random((32, 24, 1)).astype(np.float32)
    label = np.zeros(ct.shape, dtype=np.uint8)
    label[20:30, 3:12, 0] = TABLE.value_of("spleen")
    hu = ct * 450.0 - 175.0
    png = render_overview(hu, np.eye(4), TABLE, label=label, slice_index=0, max_edge_px=32)
    overview = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)  # 24 rows x 32 cols
    tile = qa_montage(ct, label, TABLE, size_px=32).astype(int)[4:28]  # centred, padded rows removed
    assert overview.shape == tile.shape == (24, 32, 3)
    assert np.abs(overview - tile).max() <= 1
