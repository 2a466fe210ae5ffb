"""Phantom CT cases and campaigns: determinism, anatomy, phases, hard cases, dataset layout."""

from __future__ import annotations

import csv
import json
from functools import lru_cache

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_ct, read_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as TABLE
from alqa_core.phantoms.anatomy import PHASES, PLAUSIBLE_VOLUME_ML, tissue_hu
from alqa_core.phantoms.campaign import CASE_ID_PATTERN, CampaignSpec, DatasetSpec, plan_campaign, write_campaign
from alqa_core.phantoms.generate import PhantomSpec, generate_case
from alqa_core.phantoms.hard_cases import HARD_KINDS

SPACING = (4.0, 4.0, 4.0)


@lru_cache(maxsize=64)
def case(seed=0, phase="portal", hard_kind=None, spacing=SPACING, axcodes="RAS"):
    return generate_case(PhantomSpec(seed, spacing_mm=spacing, phase=phase, hard_kind=hard_kind, axcodes=axcodes))


def arrays(c):
    return np.asarray(c.ct.array), np.asarray(c.labels.array)


def centroid_world(c, organ: str) -> np.ndarray:
    """World (RAS mm) centroid of an organ, through the affine."""
    idx = np.argwhere(np.asarray(c.labels.array) == TABLE.value_of(organ))
    assert idx.size, f"{organ} absent"
    return (c.labels.affine @ np.append(idx.mean(axis=0), 1.0))[:3]


def organ_median_hu(c, organ: str) -> float:
    """Median HU inside the organ, one voxel in from its border (no partial volume)."""
    ct, lab = arrays(c)
    mask = ndimage.binary_erosion(lab == TABLE.value_of(organ))
    return float(np.median(ct[mask]))


def body_mask(c) -> np.ndarray:
    return np.asarray(c.ct.array) > -500


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_case_and_different_seed_does_not():
    a = generate_case(PhantomSpec(7, spacing_mm=(5.0, 5.0, 5.0)))
    b = generate_case(PhantomSpec(7, spacing_mm=(5.0, 5.0, 5.0)))
    c = generate_case(PhantomSpec(8, spacing_mm=(5.0, 5.0, 5.0)))
    assert np.array_equal(a.ct.array, b.ct.array)
    assert np.array_equal(a.labels.array, b.labels.array)
    assert np.array_equal(a.ct.affine, b.ct.affine)
    assert a.ct.array.shape != c.ct.array.shape or not np.array_equal(a.labels.array, c.labels.array)
    assert a.organ_volumes_ml != c.organ_volumes_ml


def test_anatomy_does_not_depend_on_phase_or_spacing():
    portal, arterial = case(3, "portal"), case(3, "arterial")
    assert np.array_equal(portal.labels.array, arterial.labels.array)
    assert not np.array_equal(portal.ct.array, arterial.ct.array)
    fine = case(3, spacing=(3.0, 3.0, 3.0))
    for organ, v in portal.organ_volumes_ml.items():
        assert fine.organ_volumes_ml[organ] == pytest.approx(v, rel=0.15), organ


def test_types_dtypes_and_geometry():
    c = case(0)
    assert c.ct.array.dtype == np.float32 and c.labels.array.dtype == np.uint8
    assert c.ct.grid.matches(c.labels.grid)
    assert c.ct.spacing_mm == pytest.approx(SPACING)
    assert nib.aff2axcodes(c.ct.affine) == ("R", "A", "S")
    extent = np.array(c.ct.shape) * np.array(SPACING)
    assert 340 <= extent[0] <= 380 and 260 <= extent[1] <= 300 and 195 <= extent[2] <= 255
    assert c.phase == "portal" and c.hard_kind is None and c.absent_organs == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"phase": "venous"},
        {"hard_kind": "broken_leg"},
        {"spacing_mm": (0.0, 1.0, 1.0)},
        {"spacing_mm": (1.0, 1.0)},
        {"axcodes": "RRS"},
        {"noise_hu": -1.0},
    ],
)
def test_bad_spec_is_refused(kwargs):
    with pytest.raises(AlqaInputError):
        PhantomSpec(0, **kwargs)
    with pytest.raises(AlqaInputError):
        PhantomSpec(-1)


# ---------------------------------------------------------------- plausibility


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_organ_volumes_are_plausible_and_every_organ_present(seed):
    volumes = case(seed).organ_volumes_ml
    for organ, (lo, hi) in PLAUSIBLE_VOLUME_ML.items():
        assert lo <= volumes[organ] <= hi, f"seed {seed}: {organ} {volumes[organ]:.0f} mL not in [{lo}, {hi}]"


@pytest.mark.parametrize("seed", [0, 5])
def test_air_body_fat_muscle_and_bone_are_there(seed):
    c = case(seed)
    ct, lab = arrays(c)
    vox_ml = c.labels.voxel_volume_ml
    corners = ct[[0, 0, -1, -1], [0, -1, 0, -1], :]
    assert np.median(corners) < -950  # air outside the body
    body = body_mask(c)
    assert 0.3 < body.mean() < 0.8
    inside_bg = ct[body & (lab == 0)]
    fat = np.count_nonzero((inside_bg > -150) & (inside_bg < -50)) * vox_ml
    muscle = np.count_nonzero((inside_bg > 30) & (inside_bg < 90)) * vox_ml
    bone = np.count_nonzero(ct > 400) * vox_ml
    assert fat > 500 and muscle > 300, (fat, muscle)
    assert bone > 40, bone
    # organs never sit on bone, and each organ is one piece
    assert np.count_nonzero(lab[ct > 600]) <= 0.02 * np.count_nonzero(ct > 600)
    for organ in TABLE.names:
        mask = lab == TABLE.value_of(organ)
        comp, n = ndimage.label(mask)
        largest = np.bincount(comp.ravel())[1:].max()
        assert largest >= 0.9 * mask.sum(), f"{organ} is fragmented into {n} pieces"


@pytest.mark.parametrize("phase", PHASES)
def test_organ_hu_follow_the_phase_table(phase):
    c = case(1, phase)
    organs = ("liver", "spleen", "kidney_right", "kidney_left", "aorta", "inferior_vena_cava", "pancreas")
    organs += ("gallbladder",)
    for organ in organs:
        expected = tissue_hu(organ, phase)
        # patient variation: contrast uptake x0.8-1.2 and +-10 HU, plus noise and blur
        tolerance = 0.2 * abs(expected - tissue_hu(organ, "pre")) + 20.0
        assert organ_median_hu(c, organ) == pytest.approx(expected, abs=tolerance), organ


def test_phase_changes_enhancement_as_the_table_says():
    pre, arterial, portal = (case(2, p) for p in ("pre", "arterial", "portal"))
    aorta = [organ_median_hu(c, "aorta") for c in (pre, arterial, portal)]
    assert aorta[1] > aorta[2] + 80 > aorta[0] + 80
    liver = [organ_median_hu(c, "liver") for c in (pre, arterial, portal)]
    assert liver[2] > liver[1] > liver[0] - 5 and liver[2] - liver[0] > 35
    kidney = [organ_median_hu(c, "kidney_left") for c in (pre, arterial, portal)]
    assert kidney[1] - kidney[0] > 100 and kidney[2] - kidney[0] > 90


# ---------------------------------------------------------------- left / right


@pytest.mark.parametrize("seed", [0, 4])
def test_organs_sit_where_anatomy_says_in_ras(seed):
    c = case(seed)
    liver, spleen = centroid_world(c, "liver"), centroid_world(c, "spleen")
    assert liver[0] > 0 > spleen[0]  # RAS+: +x is the patient's right
    assert centroid_world(c, "kidney_right")[0] > centroid_world(c, "kidney_left")[0]
    aorta, ivc = centroid_world(c, "aorta"), centroid_world(c, "inferior_vena_cava")
    assert ivc[0] > aorta[0]
    assert centroid_world(c, "pancreas")[1] > aorta[1]  # +y is anterior
    for kidney in ("kidney_right", "kidney_left"):
        assert centroid_world(c, kidney)[1] < aorta[1]
    assert centroid_world(c, "stomach")[0] < 0 and centroid_world(c, "gallbladder")[0] > 0
    assert liver[2] > centroid_world(c, "kidney_right")[2]  # +z is superior


def test_situs_inversus_mirrors_but_keeps_anatomical_names():
    c = case(4, hard_kind="situs_inversus")
    assert centroid_world(c, "liver")[0] < 0 < centroid_world(c, "spleen")[0]
    assert centroid_world(c, "aorta")[0] > centroid_world(c, "inferior_vena_cava")[0]
    # kidneys are named by their side, so kidney_right is still on the right
    assert centroid_world(c, "kidney_right")[0] > centroid_world(c, "kidney_left")[0]
    assert c.organ_volumes_ml["liver"] == pytest.approx(case(4).organ_volumes_ml["liver"])


def test_array_orientation_changes_nothing_in_world_space():
    ras, lps = case(0), case(0, axcodes="LPS")
    assert nib.aff2axcodes(lps.ct.affine) == ("L", "P", "S")
    assert lps.labels.array.shape == ras.labels.array.shape
    for organ in ("liver", "spleen", "aorta"):
        assert np.allclose(centroid_world(ras, organ), centroid_world(lps, organ), atol=1e-6)


def test_phantom_has_the_liver_on_the_same_side_as_the_real_ct(real_ct_dir):
    img = nib.load(str(real_ct_dir / "totalsegmentator_v2_labels.nii.gz"))
    lab = np.asarray(img.dataobj)

    def x_of(value):
        return (img.affine @ np.append(np.argwhere(lab == value).mean(axis=0), 1.0))[0]

    real_sign = np.sign(x_of(5) - x_of(1))  # TotalSegmentator v2: liver 5, spleen 1
    c = case(0)
    assert np.sign(centroid_world(c, "liver")[0] - centroid_world(c, "spleen")[0]) == real_sign


# ---------------------------------------------------------------- hard cases


def test_every_hard_kind_generates():
    for kind in HARD_KINDS:
        c = generate_case(PhantomSpec(11, spacing_mm=(6.0, 6.0, 6.0), hard_kind=kind))
        assert c.hard_kind == kind and np.isfinite(c.ct.array).all()


def test_splenomegaly_enlarges_the_spleen():
    normal, big = case(1).organ_volumes_ml, case(1, hard_kind="splenomegaly").organ_volumes_ml
    assert big["spleen"] > 2.5 * normal["spleen"] and big["spleen"] > 500
    assert big["stomach"] > 100 and big["kidney_left"] > 80


def test_pancreatic_tail_mass_is_labelled_pancreas_and_hypodense():
    normal, mass = case(2), case(2, hard_kind="pancreatic_tail_mass")
    assert mass.organ_volumes_ml["pancreas"] > normal.organ_volumes_ml["pancreas"] + 5
    low = [np.count_nonzero(arrays(c)[0][arrays(c)[1] == 9] < 65) for c in (normal, mass)]
    assert low[1] > low[0] + 50  # the mass (~50 HU) inside a ~90 HU pancreas
    tail_side = centroid_world(mass, "pancreas")[0] < centroid_world(normal, "pancreas")[0]
    assert tail_side  # the enlargement is on the tail (patient's left) side


def test_gastric_gas_fills_the_stomach():
    for c, gassy in ((case(3, hard_kind="gastric_gas"), True), (case(3), False)):
        ct, lab = arrays(c)
        assert (ct[lab == TABLE.value_of("stomach")].mean() < -500) == gassy


@pytest.mark.parametrize(
    "kind, candidates", [("nephrectomy", {"kidney_right", "kidney_left"}), ("cholecystectomy", {"gallbladder"})]
)
def test_missing_organ_cases_lack_the_label(kind, candidates):
    c = case(5, hard_kind=kind)
    lab = arrays(c)[1]
    assert len(c.absent_organs) == 1 and c.absent_organs[0] in candidates
    present = set(np.unique(lab)) - {0}
    assert TABLE.value_of(c.absent_organs[0]) not in present
    assert present == set(TABLE.values) - {TABLE.value_of(c.absent_organs[0])}
    assert c.organ_volumes_ml[c.absent_organs[0]] == 0.0


def test_low_contrast_reduces_organ_contrast():
    normal, poor = case(6), case(6, hard_kind="low_contrast")

    def spread(c):
        return np.ptp([organ_median_hu(c, o) for o in ("liver", "spleen", "kidney_left", "aorta", "pancreas")])

    ct, lab = arrays(normal)
    fat_mask = body_mask(normal) & (lab == 0) & (ct < -50) & (ct > -150)  # same anatomy in both

    def liver_vs_fat(c):
        return organ_median_hu(c, "liver") - np.median(arrays(c)[0][fat_mask])

    assert spread(poor) < 0.5 * spread(normal)
    assert liver_vs_fat(poor) < 0.6 * liver_vs_fat(normal)


def test_metal_streak_has_extreme_values_and_streaks():
    normal, metal = case(7), case(7, hard_kind="metal_streak")
    assert arrays(metal)[0].max() > 2000 and arrays(normal)[0].max() < 1500
    ct_m, ct_n = arrays(metal)[0], arrays(normal)[0]
    changed = np.abs(ct_m - ct_n) > 150
    assert changed.sum() > 200  # streaks spread far beyond the screws
    dark = (ct_m < ct_n - 300) & body_mask(normal)
    assert dark.any()


def test_truncated_fov_cuts_the_body_at_the_edge():
    normal, cut = case(8), case(8, hard_kind="truncated_fov")
    for c, expect in ((normal, False), (cut, True)):
        body = body_mask(c)
        touches = body[0].any(axis=0) & body[-1].any(axis=0)  # per slice, both lateral faces
        assert (touches.mean() > 0.5) == expect


# ---------------------------------------------------------------- campaign

SMALL = CampaignSpec(n_cases=10, seed=3, spacing_mm=(6.0, 6.0, 6.0), hard_fraction=0.3, test_fraction=0.5)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign") / "c"
    return write_campaign(root, SMALL)


def test_campaign_datasets_follow_nnunet_layout(campaign):
    plans = plan_campaign(SMALL)
    assert [p.name for p in campaign.dataset_roots] == [d.name for d in SMALL.datasets]
    for ds in SMALL.datasets:
        root = campaign.dataset_root(ds.name)
        meta = json.loads((root / "dataset.json").read_text())
        assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz"
        assert meta["labels"] == {"background": 0, **{o: TABLE.value_of(o) for o in ds.organs}}
        images = sorted(p.name for p in (root / "imagesTr").glob("*_0000.nii.gz"))
        assert meta["numTraining"] == len(images)
        mine = [p for p in plans if p.dataset == ds.name]
        assert images == sorted(f"{p.case_id}_0000.nii.gz" for p in mine if p.split == "train")
        tests = sorted(p.name for p in (root / "imagesTs").glob("*.nii.gz")) if (root / "imagesTs").exists() else []
        assert tests == sorted(f"{p.case_id}_0000.nii.gz" for p in mine if p.split == "test")
        labels = sorted(p.name for p in (root / "labelsTr").glob("*.nii.gz")) if (root / "labelsTr").exists() else []
        if ds.organs:
            assert labels == [n.removesuffix("_0000.nii.gz") + ".nii.gz" for n in images]
        else:
            assert labels == [] and meta["labels"] == {"background": 0}
    assert sum(1 for p in plans if p.split == "test") >= 2


def test_partial_labels_hold_only_the_annotated_organs(campaign):
    for rec in campaign.cases:
        truth = read_label(campaign.root / rec.ground_truth_path)
        image = read_ct(campaign.root / rec.image_path)
        assert image.grid.matches(truth.grid)
        assert nib.load(str(campaign.root / rec.image_path)).get_data_dtype() == np.int16
        if rec.label_path is None:
            continue
        ds = next(d for d in SMALL.datasets if d.name == rec.plan.dataset)
        values = [TABLE.value_of(o) for o in ds.organs]
        partial = np.asarray(read_label(campaign.root / rec.label_path).array)
        full = np.asarray(truth.array)
        assert set(np.unique(partial)) <= {0, *values}
        assert np.array_equal(partial, np.where(np.isin(full, values), full, 0))


def test_ground_truth_is_complete_and_manifest_matches(campaign):
    with open(campaign.manifest_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == SMALL.n_cases == len(campaign.cases)
    ids = [r["case_id"] for r in rows]
    assert len(set(ids)) == len(ids) and all(CASE_ID_PATTERN.match(i) for i in ids)
    assert sum(bool(r["hard_kind"]) for r in rows) == round(SMALL.n_cases * SMALL.hard_fraction)
    assert {r["phase"] for r in rows} <= set(PHASES)
    for row in rows:
        truth = np.asarray(read_label(campaign.root / row["ground_truth_path"]).array)
        absent = {TABLE.value_of(o) for o in row["absent_organs"].split(";") if o}
        assert set(np.unique(truth)) - {0} == set(TABLE.values) - absent
        vox = np.prod(SMALL.spacing_mm) / 1000
        assert float(row["volume_ml_liver"]) == pytest.approx(np.count_nonzero(truth == 5) * vox, abs=1e-2)
        regenerated = generate_case(
            PhantomSpec(
                int(row["seed"]), spacing_mm=SMALL.spacing_mm, phase=row["phase"], hard_kind=row["hard_kind"] or None
            )
        )
        assert np.array_equal(regenerated.labels.array, truth)
    payload = json.loads(campaign.manifest_json_path.read_text())
    assert payload["campaign"]["n_cases"] == SMALL.n_cases and len(payload["cases"]) == SMALL.n_cases


def test_campaign_refuses_to_overwrite_unless_told(campaign, tmp_path):
    with pytest.raises(AlqaInputError, match="not empty"):
        write_campaign(campaign.root, SMALL)
    root = tmp_path / "c"
    write_campaign(root, SMALL)
    (root / "notes.txt").write_text("mine")
    smaller = CampaignSpec(n_cases=5, seed=4, spacing_mm=(6.0, 6.0, 6.0))
    layout = write_campaign(root, smaller, overwrite=True)
    assert (root / "notes.txt").read_text() == "mine"  # only the campaign's own folders are replaced
    files = list((root / "ground_truth" / "labelsTr").glob("*.nii.gz"))
    assert len(files) == 5 == len(layout.cases)


def test_plan_allocation_hard_fraction_and_custom_datasets():
    spec = CampaignSpec(
        n_cases=20,
        seed=1,
        hard_fraction=0.5,
        test_fraction=0.0,
        datasets=(DatasetSpec("Dataset010_A", "A", ("liver",), 3.0), DatasetSpec("Dataset011_B", "B", (), 1.0)),
    )
    plans = plan_campaign(spec)
    assert plan_campaign(spec) == plans
    assert sum(p.dataset == "Dataset010_A" for p in plans) == 15
    assert sum(p.hard_kind is not None for p in plans) == 10
    assert len({p.hard_kind for p in plans if p.hard_kind}) == min(10, len(HARD_KINDS))
    assert all(p.split == "train" for p in plans)
    assert len({p.seed for p in plans}) == 20
    with pytest.raises(AlqaInputError):
        CampaignSpec(datasets=(DatasetSpec("Dataset010_A", "A", ("liver",), 1.0),) * 2)
    with pytest.raises(AlqaInputError):
        DatasetSpec("Dataset010_A", "A", ("heart",), 1.0)
    with pytest.raises(AlqaInputError):
        CampaignSpec(hard_fraction=1.5)


def test_campaign_is_identical_with_a_process_pool(tmp_path):
    spec = CampaignSpec(n_cases=3, seed=9, spacing_mm=(8.0, 8.0, 8.0))
    one = write_campaign(tmp_path / "one", spec, workers=1)
    two = write_campaign(tmp_path / "two", spec, workers=2)
    assert [r.row() for r in one.cases] == [r.row() for r in two.cases]
    for rec in one.cases:
        a = read_ct(tmp_path / "one" / rec.image_path).array
        b = read_ct(tmp_path / "two" / rec.image_path).array
        assert np.array_equal(a, b)
