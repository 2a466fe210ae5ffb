"""Invertible preprocessing on real arrays: phantoms in world space and the real CT's label grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from alqa_core.config.sections import PreprocessConfig
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.preprocess import GridRecord, preprocess_ct, preprocess_label, to_original_grid
from alqa_core.volume import CTVolume, Grid, LabelMap, quantize_probabilities

BODY_HU, AIR_HU = 40.0, -1000.0
# label value -> (centre mm, radii mm, HU); ellipsoids in RAS world space
ORGANS = {
    1: ((-22.0, 6.0, 0.0), (12.0, 12.0, 12.0), 120.0),
    2: ((20.0, -8.0, 5.0), (10.0, 8.0, 15.0), 180.0),
    3: ((0.0, 20.0, -8.0), (8.0, 8.0, 8.0), 90.0),
    5: ((18.0, 16.0, 0.0), (14.0, 9.0, 18.0), 60.0),
}
BODY_RADII_MM = (45.0, 35.0)

# array axis n <- (RAS axis, sign): how a scan stores its voxels
LAYOUTS = {
    "ras": ((0, 1), (1, 1), (2, 1)),
    "lps": ((0, -1), (1, -1), (2, 1)),  # DICOM patient order, as read from a series
    "permuted": ((2, 1), (0, -1), (1, 1)),  # (S, L, A): a sagittal-ish storage order
}


def make_grid(layout: str, spacing_ras, fov_ras_mm, rotate_deg: float = 0.0) -> Grid:
    """A grid centred on the world origin covering ``fov_ras_mm``, stored in ``layout`` order."""
    axes = LAYOUTS[layout]
    shape = tuple(int(round(fov_ras_mm[ras] / spacing_ras[ras])) for ras, _ in axes)
    affine = np.eye(4)
    for n, (ras, sign) in enumerate(axes):
        affine[:3, n] = 0.0
        affine[ras, n] = sign * spacing_ras[ras]
    t = np.deg2rad(rotate_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine[:3, :3] = rot @ affine[:3, :3]
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return Grid(shape, affine)


def world_coords(grid: Grid) -> np.ndarray:
    idx = np.indices(grid.shape, dtype=np.float64).reshape(3, -1)
    return (grid.affine[:3, :3] @ idx + grid.affine[:3, 3:4]).reshape(3, *grid.shape)


def phantom(grid: Grid, organs=ORGANS, markers=()) -> tuple[CTVolume, LabelMap]:
    """Body cylinder (along S) with ellipsoid organs, rasterised on ``grid``."""
    x, y, z = world_coords(grid)
    body = (x / BODY_RADII_MM[0]) ** 2 + (y / BODY_RADII_MM[1]) ** 2 <= 1.0
    hu = np.where(body, BODY_HU, AIR_HU).astype(np.float32)
    label = np.zeros(grid.shape, dtype=np.uint8)
    for value, (centre, radii, organ_hu) in organs.items():
        inside = sum(((c - m) / r) ** 2 for c, m, r in zip((x, y, z), centre, radii)) <= 1.0
        label[inside] = value
        hu[inside] = organ_hu
    for index, marker_hu in markers:
        hu[index] = marker_hu
    return CTVolume(hu, grid.affine), LabelMap(label, grid.affine)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 2.0 * np.count_nonzero(a & b) / total if total else 1.0


def per_organ_dice(a: np.ndarray, b: np.ndarray, values=tuple(ORGANS)) -> dict[int, float]:
    return {v: dice(a == v, b == v) for v in values}


def output_voxel_of_world(record: GridRecord, xyz) -> np.ndarray:
    return np.linalg.solve(record.output.affine, np.append(np.asarray(xyz, dtype=np.float64), 1.0))[:3]


SPACING = (1.2, 1.0, 2.5)
FOV = (120.0, 100.0, 60.0)


@pytest.mark.parametrize("layout", ["ras", "lps", "permuted"])
def test_round_trip_at_own_spacing_is_exact(layout):
    grid = make_grid(layout, SPACING, FOV)
    ct, label = phantom(grid)
    codes = {"ras": ("R", "A", "S"), "lps": ("L", "P", "S"), "permuted": ("S", "L", "A")}
    assert nib.aff2axcodes(ct.affine) == codes[layout]
    pre = preprocess_ct(ct, PreprocessConfig(spacing_mm=SPACING))
    rec = pre.record
    assert nib.aff2axcodes(rec.output.affine) == ("R", "A", "S")
    np.testing.assert_allclose(rec.output.spacing_mm, SPACING, rtol=1e-9)
    assert rec.original.matches(ct.grid, tolerance_mm=0.0)
    assert pre.array.dtype == np.float32 and pre.array.shape == rec.output.shape
    assert all(n % 16 == 0 for n in pre.array.shape)

    on_output = preprocess_label(label, rec)
    assert on_output.dtype == np.uint8 and on_output.shape == rec.output.shape
    back = to_original_grid(on_output, rec, mode="nearest")
    assert back.shape == label.shape
    scores = per_organ_dice(back, label.array)
    assert min(scores.values()) >= 0.99, scores
    np.testing.assert_array_equal(back, label.array)  # own spacing: a pure re-indexing


@pytest.mark.parametrize("layout", ["lps", "permuted"])
def test_round_trip_through_coarser_spacing(layout):
    grid = make_grid(layout, (1.0, 1.0, 1.0), (110.0, 90.0, 50.0))
    ct, label = phantom(grid)
    rec = preprocess_ct(ct, PreprocessConfig(spacing_mm=(1.5, 1.5, 1.5))).record
    assert rec.output.shape != ct.shape
    np.testing.assert_allclose(rec.output.spacing_mm, (1.5, 1.5, 1.5), rtol=1e-9)
    on_output = preprocess_label(label, rec)
    nearest = per_organ_dice(to_original_grid(on_output, rec, mode="nearest"), label.array)
    probs = quantize_probabilities(np.stack([(on_output == v) for v in ORGANS]).astype(np.float32))
    back_probs = to_original_grid(probs, rec, mode="linear")
    linear = {v: dice(back_probs[c] >= 128, label.array == v) for c, v in enumerate(ORGANS)}
    print(f"{layout} 1 mm -> 1.5 mm -> 1 mm Dice: nearest {nearest}, linear {linear}")
    assert min(nearest.values()) >= 0.9, nearest
    assert min(linear.values()) >= 0.9, linear


def test_marker_keeps_its_world_position():
    grid = make_grid("permuted", SPACING, FOV)
    marker = (15, 25, 60)  # (S, L, A) voxel, off centre on every axis
    ct, _ = phantom(grid, organs={}, markers=[(marker, 250.0)])
    marker_xyz = ct.affine @ np.array([*marker, 1.0])
    cfg = PreprocessConfig(spacing_mm=(1.5, 1.5, 1.5))
    pre = preprocess_ct(ct, cfg)
    peak = np.unravel_index(np.argmax(pre.array), pre.array.shape)
    peak_xyz = pre.record.output.affine @ np.array([*peak, 1.0])
    # output axes are R, A, S: half an output voxel per axis
    assert np.all(np.abs(peak_xyz - marker_xyz)[:3] <= np.asarray(cfg.spacing_mm) / 2 + 1e-6), (peak_xyz, marker_xyz)
    back = to_original_grid(pre.array, pre.record, mode="linear")
    assert back.dtype == np.float32
    back_peak = np.unravel_index(np.argmax(back), back.shape)
    assert np.all(np.abs(np.subtract(back_peak, marker)) <= 1), (back_peak, marker)


def test_hu_window_exact_and_inputs_untouched():
    grid = make_grid("ras", (1.0, 1.0, 2.0), (16.0, 16.0, 16.0))
    hu = np.full(grid.shape, AIR_HU, dtype=np.float32)
    probes = {(1, 1, 1): -175.0, (2, 2, 2): 275.0, (3, 3, 3): 50.0}
    probes.update({(4, 4, 4): -176.0, (5, 5, 5): 276.0, (6, 6, 6): 3000.0})
    for index, value in probes.items():
        hu[index] = value
    ct = CTVolume(hu, grid.affine)
    before = ct.array.copy()
    pre = preprocess_ct(ct, PreprocessConfig(spacing_mm=(1.0, 1.0, 2.0), crop_to_body=False, pad_to_multiple=1))
    assert pre.record.output.matches(grid, tolerance_mm=1e-9)
    expected = {(1, 1, 1): 0.0, (2, 2, 2): 1.0, (3, 3, 3): np.float32(225.0) / np.float32(450.0), (4, 4, 4): 0.0}
    expected.update({(5, 5, 5): 1.0, (6, 6, 6): 1.0})
    for index, value in expected.items():
        assert pre.array[index] == value, (index, pre.array[index], value)
    assert pre.array.min() == 0.0 and pre.array.max() == 1.0
    np.testing.assert_array_equal(ct.array, before)

    probs = np.ascontiguousarray(pre.array[None].repeat(2, axis=0))
    probs_before = probs.copy()
    to_original_grid(probs, pre.record)
    np.testing.assert_array_equal(probs, probs_before)


def test_crop_keeps_the_body_and_drops_air_and_specks():
    grid = make_grid("lps", (1.0, 1.0, 2.0), (200.0, 180.0, 40.0))
    speck = tuple(int(v) for v in np.round(np.linalg.solve(grid.affine, [90.0, 80.0, 0.0, 1.0])[:3]))
    ct, _ = phantom(grid, markers=[(speck, 50.0)])
    cfg = PreprocessConfig(spacing_mm=(1.5, 1.5, 1.5), crop_margin_mm=10.0)
    cropped = preprocess_ct(ct, cfg)
    full = preprocess_ct(ct, PreprocessConfig(spacing_mm=(1.5, 1.5, 1.5), crop_to_body=False))
    rec = cropped.record
    assert np.prod(rec.output.shape) < 0.6 * np.prod(full.record.output.shape)

    # every body voxel lies inside the output grid, with the margin to spare in-plane
    x, y, z = world_coords(grid)
    body = ct.array > cfg.body_hu_min
    body[speck] = False
    pts = np.stack([x[body], y[body], z[body], np.ones(np.count_nonzero(body))])
    vox = np.linalg.solve(rec.output.affine, pts)[:3]
    n = np.asarray(rec.output.shape)[:, None]
    margin_vox = cfg.crop_margin_mm / 1.5
    assert np.all(vox[:2] >= margin_vox - 1) and np.all(vox[:2] <= n[:2] - 1 - margin_vox + 1)
    # ...and the windowed body is there: 40 HU -> (40 + 175) / 450 on the body's voxels
    assert np.isclose(np.median(cropped.array[cropped.array > 0.01]), 215.0 / 450.0, atol=1e-3)
    # the isolated speck (not the largest component) and the air around it are gone
    speck_vox = output_voxel_of_world(rec, (ct.affine @ np.array([*speck, 1.0]))[:3])[:2]
    assert np.any((speck_vox < -0.5) | (speck_vox > np.asarray(rec.output.shape[:2]) - 0.5))
    # in-plane extent: body + 2 margins + padding to 16, no more
    extent_mm = np.asarray(rec.output.shape[:2]) * 1.5
    body_mm = 2 * np.asarray(BODY_RADII_MM)
    assert np.all(extent_mm <= body_mm + 2 * cfg.crop_margin_mm + 3 * 1.5 + 15 * 1.5)
    # padding is air (0) and the label round trip is unaffected by the crop
    _, label = phantom(grid)
    back = to_original_grid(preprocess_label(label, rec), rec, mode="nearest")
    assert min(per_organ_dice(back, label.array).values()) >= 0.9


@pytest.mark.parametrize("multiple", [1, 7, 16])
def test_padding_to_multiple(multiple):
    grid = make_grid("ras", (1.0, 1.0, 2.0), (37.0, 41.0, 26.0))
    ct, _ = phantom(grid, organs={})
    pre = preprocess_ct(ct, PreprocessConfig(spacing_mm=(1.0, 1.0, 2.0), crop_to_body=False, pad_to_multiple=multiple))
    assert all(n % multiple == 0 for n in pre.array.shape)
    assert all(0 <= o - i < multiple for o, i in zip(pre.array.shape, grid.shape))
    # the unpadded interior is the scan, exactly; the pad is air (0) and does not leak back
    back = to_original_grid(pre.array, pre.record)
    np.testing.assert_array_equal(back, np.clip((ct.array + 175.0) / 450.0, 0, 1).astype(np.float32))
    total = sum(pre.array.shape[a] - grid.shape[a] for a in range(3))
    if total:
        pad_mask = np.ones(pre.array.shape, bool)
        start = [(pre.array.shape[a] - grid.shape[a]) // 2 for a in range(3)]
        pad_mask[tuple(slice(s, s + n) for s, n in zip(start, grid.shape))] = False
        assert np.all(pre.array[pad_mask] == 0.0)


def test_grid_record_json_round_trip():
    grid = make_grid("permuted", SPACING, FOV)
    ct, label = phantom(grid)
    rec = preprocess_ct(ct, PreprocessConfig(spacing_mm=(1.5, 1.5, 1.5))).record
    loaded = GridRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    for a, b in ((loaded.original, rec.original), (loaded.output, rec.output)):
        assert a.shape == b.shape and np.array_equal(a.affine, b.affine)
    probs = quantize_probabilities(np.stack([preprocess_label(label, rec) == v for v in ORGANS]).astype(np.float32))
    np.testing.assert_array_equal(to_original_grid(probs, loaded), to_original_grid(probs, rec))

    with pytest.raises(AlqaInputError, match="version"):
        GridRecord.from_dict({"original": {}, "output": {}})
    bad = rec.to_dict()
    bad["output"]["affine"] = np.zeros((4, 4)).tolist()
    with pytest.raises(AlqaInputError, match="output"):
        GridRecord.from_dict(bad)
    bad = rec.to_dict()
    del bad["original"]["shape"]
    with pytest.raises(AlqaInputError, match="original"):
        GridRecord.from_dict(bad)


def test_4d_probabilities_keep_dtype_and_layout():
    grid = make_grid("lps", SPACING, FOV)
    ct, label = phantom(grid)
    rec = preprocess_ct(ct, PreprocessConfig(spacing_mm=(1.5, 1.5, 1.5))).record
    on_output = preprocess_label(label, rec)
    rng = np.random.default_rng(0)
    probs = quantize_probabilities(rng.random((3, *rec.output.shape), dtype=np.float32))
    back = to_original_grid(probs, rec)
    assert back.dtype == np.uint8 and back.shape == (3, *ct.shape)
    for c in range(3):  # channels are independent
        np.testing.assert_array_equal(back[c], to_original_grid(probs[c], rec))
    as_float = to_original_grid(probs.astype(np.float32) / 255.0, rec)
    assert as_float.dtype == np.float32 and as_float.shape == back.shape
    assert np.max(np.abs(as_float * 255.0 - back)) <= 0.5 + 1e-3  # uint8 out = rounded float result
    # a constant channel stays constant inside the output grid, 0 outside it
    const = np.full((1, *rec.output.shape), 200, dtype=np.uint8)
    assert set(np.unique(to_original_grid(const, rec))) <= {0, 200}
    assert np.count_nonzero(on_output) > 0


def test_oblique_scan_keeps_direction_and_round_trips():
    grid = make_grid("lps", SPACING, FOV, rotate_deg=15.0)
    ct, label = phantom(grid)
    rec = preprocess_ct(ct, PreprocessConfig(spacing_mm=SPACING)).record
    assert nib.aff2axcodes(rec.output.affine) == ("R", "A", "S")
    np.testing.assert_allclose(rec.output.spacing_mm, SPACING, rtol=1e-9)
    back = to_original_grid(preprocess_label(label, rec), rec, mode="nearest")
    np.testing.assert_array_equal(back, label.array)

    # a label stored on a differently rotated grid goes through world space (non axis-aligned path)
    other = make_grid("ras", (1.0, 1.0, 2.0), FOV, rotate_deg=-20.0)
    _, other_label = phantom(other)
    on_output = preprocess_label(other_label, rec)
    _, truth = phantom(rec.output)
    scores = per_organ_dice(on_output, truth.array)
    assert min(scores.values()) >= 0.85, scores


def test_bad_input_is_rejected():
    grid = make_grid("ras", (1.0, 1.0, 2.0), (20.0, 20.0, 20.0))
    ct, label = phantom(grid, organs={})
    rec = preprocess_ct(ct, PreprocessConfig(spacing_mm=(1.0, 1.0, 2.0), crop_to_body=False)).record
    with pytest.raises(AlqaInputError, match="not on the preprocessed grid"):
        to_original_grid(np.zeros((4, 4, 4), np.float32), rec)
    with pytest.raises(ValueError, match="mode"):
        to_original_grid(np.zeros(rec.output.shape, np.float32), rec, mode="cubic")
    with pytest.raises(AlqaInputError, match="spacing_mm"):
        PreprocessConfig(spacing_mm=(1.0, 0.0, 1.0))
    with pytest.raises(AlqaInputError, match="hu_min"):
        PreprocessConfig(hu_min=100.0, hu_max=-100.0)
    with pytest.raises(AlqaInputError, match=r"\[0, 255\]"):
        preprocess_label(LabelMap(np.full(grid.shape, 300, np.uint16), grid.affine), rec)
    # an all-air scan: nothing to crop to, the full field of view is kept
    air = CTVolume(np.full(grid.shape, AIR_HU, np.float32), grid.affine)
    assert preprocess_ct(air, PreprocessConfig(spacing_mm=(1.0, 1.0, 2.0), pad_to_multiple=1)).array.shape == grid.shape


def test_real_ct_label_round_trip(real_ct_dir):
    img = nib.load(str(real_ct_dir / "totalsegmentator_v2_labels.nii.gz"))
    lab = np.asarray(img.dataobj).astype(np.uint8)
    label = LabelMap(lab, img.affine, class_map_name="total")
    # a CT on the label's grid: the labelled tissue as soft tissue, the rest air
    ct = CTVolume(np.where(lab > 0, BODY_HU, AIR_HU).astype(np.float32), img.affine)
    own = tuple(ct.spacing_mm)  # (0.977, 0.977, 2.0); LAS storage, so RAS needs a flip

    rec = preprocess_ct(ct, PreprocessConfig(spacing_mm=own, crop_to_body=False)).record
    assert nib.aff2axcodes(rec.output.affine) == ("R", "A", "S")
    back = to_original_grid(preprocess_label(label, rec), rec, mode="nearest")
    assert dice(back == 5, lab == 5) >= 0.99
    np.testing.assert_array_equal(back, lab)

    coarse = preprocess_ct(ct, PreprocessConfig(spacing_mm=(1.5, 1.5, 1.5)))  # with the body crop
    rec = coarse.record
    on_output = preprocess_label(label, rec)
    liver_prob = quantize_probabilities((on_output == 5).astype(np.float32))
    liver_nearest = dice(to_original_grid(on_output, rec, mode="nearest") == 5, lab == 5)
    liver_linear = dice(to_original_grid(liver_prob, rec) >= 128, lab == 5)
    print(f"real CT liver 1.5 mm round trip Dice: nearest {liver_nearest:.4f}, linear {liver_linear:.4f}")
    assert liver_nearest >= 0.95 and liver_linear >= 0.95
    assert np.count_nonzero(on_output == 5) > 0.9 * np.count_nonzero(lab == 5) * np.prod(ct.spacing_mm) / 1.5**3
