"""Training streams its cases: on-demand handles, a bounded sliding pool, one validation case at a time, a bounded QA pool."""

from __future__ import annotations

import json
import math
import weakref

import numpy as np
import pytest
import torch

from alqa_core.config.models import ModelSpec
from alqa_core.config.sections import PreprocessConfig, QALossConfig, QARegressorConfig, TrainConfig
from alqa_core.ensemble.networks import build_network
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.preprocess import preprocess_ct
from alqa_core.io.atomic import atomic_write_text
from alqa_core.io.nifti import write_label, write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE, OrganTable
from alqa_core.phantoms.generate import PhantomSpec, generate_case
from alqa_core.qa.regressor import build_qa_regressor
from alqa_core.training.cases import LazyCase, TrainingCase
from alqa_core.training.data import lazy_training_cases, load_training_cases
from alqa_core.training.pool import CasePool, covering_step, pool_window
from alqa_core.training.qa_loss import UnlabeledCase, UnlabeledFile, build_qa_loss
from alqa_core.training.sampling import MAX_FOREGROUND_VOXELS, PatchSampler, foreground_budget, prepare_case, sample_patch
from alqa_core.training.trainer import train
from alqa_core.training.training_set import TrainingSource
from alqa_core.workspace import WorkspaceLayout

TABLE = OrganTable.from_pairs([(1, "spleen"), (2, "kidney_right"), (5, "liver")])
SPEC = ModelSpec("unet", "tiny", len(TABLE))


def blob(seed: int, shape=(24, 20, 16), case_id: str | None = None) -> TrainingCase:
    """Three ellipsoid organs with distinct intensities, jittered by the seed; fully labeled."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    n = np.asarray(shape, dtype=np.float32)
    image = np.full(shape, 0.3, np.float32)
    label = np.zeros(shape, np.uint8)
    for name, centre, radii, intensity in [
        ("liver", (0.3, 0.45, 0.5), (0.22, 0.25, 0.3), 0.6),
        ("spleen", (0.72, 0.55, 0.5), (0.1, 0.12, 0.25), 0.75),
        ("kidney_right", (0.35, 0.78, 0.45), (0.09, 0.09, 0.25), 0.9),
    ]:
        c = (np.asarray(centre) + rng.uniform(-0.04, 0.04, 3)) * n
        r = np.asarray(radii) * rng.uniform(0.9, 1.1, 3) * n
        inside = (((grid - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
        image[inside] = intensity
        label[inside] = TABLE.value_of(name)
    image = np.clip(image + rng.normal(0, 0.03, shape).astype(np.float32), 0, 1).astype(np.float32)
    return TrainingCase(case_id or f"b{seed:02d}", image, label, TABLE.names)


class Tracked:
    """LazyCase handles over blob cases that count loads and how many loaded cases are alive at once."""

    def __init__(self, seeds):
        self.live: weakref.WeakSet = weakref.WeakSet()
        self.peak = 0
        self.loads: list[str] = []
        self.handles = [LazyCase(f"b{s:02d}", TABLE.names, self._loader(s)) for s in seeds]

    def _loader(self, seed):
        def load():
            case = blob(seed)
            self.live.add(case)
            self.peak = max(self.peak, len(self.live))
            self.loads.append(case.case_id)
            return case

        return load


def _config(**kw) -> TrainConfig:
    base = dict(patch_size_vox=(16, 16, 16), batch_size=2, max_epochs=2, iterations_per_epoch=2, seed=0, device="cpu", sw_batch_size=4, num_threads=1)
    return TrainConfig(**{**base, **kw})


def _state(result) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.network.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- the pool


def test_pool_window_is_seeded_slides_and_gives_every_case_the_same_time_in_the_pool():
    assert pool_window(5, 8, 3, seed=1) == (0, 1, 2, 3, 4)  # the pool holds everything: the set, in order, never moving
    windows = [pool_window(10, 4, r, seed=3) for r in range(10)]
    assert windows == [pool_window(10, 4, r, seed=3) for r in range(10)]  # a pure function
    assert all(len(w) == len(set(w)) == 4 for w in windows)
    assert all(len(set(a) & set(b)) == 3 for a, b in zip(windows, windows[1:]))  # ceil(4 * 0.25) = 1 replaced per refresh
    time_in_pool = np.bincount(np.concatenate(windows), minlength=10)
    assert set(time_in_pool.tolist()) == {4}  # over a full cycle every case spends 4 refreshes in the pool
    assert windows[0] != pool_window(10, 4, 0, seed=4)


def test_given_the_run_s_length_the_window_passes_over_every_case():
    assert covering_step(10, 4) == 1 and covering_step(10, 4, refreshes=3) == 3 and covering_step(100, 4, refreshes=3) == 4
    assert covering_step(6758, 64, refreshes=200) == 34  # 80% of AbdomenAtlas: 16 a refresh would see under half of it
    assert covering_step(8, 8, refreshes=2) == 2  # the pool holds everything: the step is never used
    seen = set().union(*(pool_window(30, 4, r, seed=0, refreshes=10) for r in range(10)))
    assert seen == set(range(30))
    assert len(set().union(*(pool_window(30, 4, r, seed=0) for r in range(10)))) == 4 + 9  # a quarter a refresh: 13 of 30


def test_case_pool_releases_the_leavers_before_loading_newcomers():
    class Item:
        pass

    live: weakref.WeakSet = weakref.WeakSet()
    peaks = []

    def load(i):
        item = Item()
        live.add(item)
        peaks.append(len(live))
        return item

    pool = CasePool(12, 3, seed=0, load=load)
    for refresh in range(15):
        assert len(pool.items(refresh)) == 3 and pool.loaded_count() == 3
    assert max(peaks) == 3 and pool.loads == 3 + 14  # one newcomer per refresh, never a 4th item alive
    lazy = CasePool(12, 3, seed=0, load=load)
    lazy.get(0, 1)
    assert lazy.loaded_count() == 1 and lazy.get(0, 1) is lazy.get(0, 1) and lazy.loads == 1  # loaded once, kept in its window


# ---------------------------------------------------------------- the sampler


def test_a_pool_holding_every_case_samples_exactly_as_a_list_of_every_case():
    """The reference is the sampler as it was before pools: every case prepared in one list, one generator."""
    cases = [blob(s) for s in range(4)]
    rng = np.random.default_rng(3)
    prepared = [prepare_case(c, TABLE, (16, 16, 16)) for c in cases]
    pooled = PatchSampler(Tracked(range(4)).handles, TABLE, (16, 16, 16), seed=3, cases_in_memory=4)
    assert [p.case.case_id for p in pooled.prepared] == [c.case_id for c in cases]
    for epoch in range(3):
        pooled.set_epoch(epoch)
        for _ in range(6):
            want = sample_patch(prepared[int(rng.integers(len(prepared)))], TABLE, (16, 16, 16), rng, 0.67)
            got = pooled.patch()
            assert (got.case_id, got.centre_vox) == (want.case_id, want.centre_vox)
            assert np.array_equal(got.image, want.image) and np.array_equal(got.target, want.target)


def test_a_smaller_pool_slides_over_every_case_deterministically_with_bounded_memory():
    tracked = Tracked(range(6))
    sampler = PatchSampler(tracked.handles, TABLE, (16, 16, 16), seed=5, cases_in_memory=2)
    twin = PatchSampler(Tracked(range(6)).handles, TABLE, (16, 16, 16), seed=5, cases_in_memory=2)
    seen, pools = set(), []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        twin.set_epoch(epoch)
        pool_ids = {p.case.case_id for p in sampler.prepared}
        pools.append(pool_ids)
        patches = [sampler.patch() for _ in range(8)]
        assert [p.centre_vox for p in patches] == [twin.patch().centre_vox for _ in range(8)]
        assert {p.case_id for p in patches} <= pool_ids
        seen |= {p.case_id for p in patches}
    assert all(len(p) == 2 for p in pools) and len(set(map(frozenset, pools))) == 6
    assert seen == {h.case_id for h in tracked.handles}  # a full cycle visits every case
    assert tracked.peak == 2 and len(tracked.loads) == 2 + 5  # never more than the pool alive; one newcomer per epoch


def test_foreground_budget_follows_nnunet_and_keeps_draws_on_the_organ():
    assert foreground_budget(5_000) == 5_000 and foreground_budget(MAX_FOREGROUND_VOXELS) == MAX_FOREGROUND_VOXELS
    assert foreground_budget(50_000) == MAX_FOREGROUND_VOXELS
    assert foreground_budget(3_000_000) == 30_000  # at least 1% of a huge organ
    assert foreground_budget(50_000, None) == 50_000
    case = blob(1, shape=(48, 40, 32))
    liver = TABLE.value_of("liver")
    organ = np.flatnonzero(case.label == liver)
    full = prepare_case(case, TABLE, (16, 16, 16))
    capped = prepare_case(case, TABLE, (16, 16, 16), max_foreground_voxels=800, seed=2)
    # foreground lists follow the table's order: spleen, kidney_right, liver
    kept = capped.foreground[2]
    assert kept.size == 800 < organ.size == full.foreground[2].size
    assert np.all(np.diff(kept) > 0) and np.isin(kept, organ).all()
    again = prepare_case(case, TABLE, (16, 16, 16), max_foreground_voxels=800, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(capped.foreground, again.foreground))
    assert not np.array_equal(kept, prepare_case(case, TABLE, (16, 16, 16), max_foreground_voxels=800, seed=3).foreground[2])
    assert [f.size for f in capped.foreground] == [foreground_budget(f.size, 800) for f in full.foreground]
    assert full.foreground[0].size <= 800 and np.array_equal(capped.foreground[0], full.foreground[0])  # under the cap: every voxel
    # the kept subset is a uniform sample of the organ: its centroid and spread are the organ's
    ijk_all = np.stack(np.unravel_index(organ, case.label.shape), 1).astype(float)
    ijk_kept = np.stack(np.unravel_index(kept, case.label.shape), 1).astype(float)
    assert np.abs(ijk_kept.mean(0) - ijk_all.mean(0)).max() < 1.0
    assert np.allclose(ijk_kept.std(0), ijk_all.std(0), rtol=0.12)


# ---------------------------------------------------------------- train()


def test_training_from_handles_is_bit_identical_and_a_small_pool_bounds_memory():
    cfg = _config(val_case_ids=("b05",))
    in_memory = train(SPEC, [blob(s) for s in range(6)], cfg, TABLE, (3.0, 3.0, 3.0))
    tracked = Tracked(range(6))
    lazy = train(SPEC, tracked.handles, cfg, TABLE, (3.0, 3.0, 3.0))
    assert _same(_state(in_memory), _state(lazy))
    assert in_memory.meta.lineage.training_set_sha256 == lazy.meta.lineage.training_set_sha256  # content hashed case by case
    assert [r.val_dice_mean for r in in_memory.history] == [r.val_dice_mean for r in lazy.history]

    small = _config(val_case_ids=("b04", "b05"), max_epochs=3, cases_in_memory=2)
    bounded = Tracked(range(6))
    first = train(SPEC, bounded.handles, small, TABLE, (3.0, 3.0, 3.0), training_set_sha256="0" * 64)
    # the pool of 2 training cases plus the one validation case being scored (of 2); nothing else stays loaded
    assert bounded.peak == 3
    assert [c for c in bounded.loads if c in ("b04", "b05")] == ["b04"] + ["b04", "b05"] * 3  # foreground check, then per epoch
    assert len({c for c in bounded.loads if c not in ("b04", "b05")}) == 4  # 2 + one newcomer per later epoch: all 4
    assert _same(_state(first), _state(train(SPEC, Tracked(range(6)).handles, small, TABLE, (3.0, 3.0, 3.0))))
    everything = _config(val_case_ids=("b04", "b05"), max_epochs=3)
    assert not _same(_state(first), _state(train(SPEC, Tracked(range(6)).handles, everything, TABLE, (3.0, 3.0, 3.0))))
    assert first.meta.train_config["cases_in_memory"] == 2


def test_a_handle_that_loads_another_case_is_refused_by_name():
    wrong = LazyCase("b01", ("liver",), lambda: blob(1))  # the loaded case annotates three organs
    with pytest.raises(AlqaInputError, match="case b01"):
        wrong.load()
    with pytest.raises(ValueError, match="cases_in_memory"):
        TrainConfig(cases_in_memory=0)


def _phantom_workspace(tmp_path, n: int, spacing_mm: float = 8.0) -> tuple[WorkspaceLayout, list[TrainingSource]]:
    """Phantom cases in a workspace as ingest leaves them: preprocessed volume, grid record, label on the original grid."""
    layout = WorkspaceLayout(tmp_path / "ws")
    sources = []
    for seed in range(n):
        case_id = f"ph{seed:02d}"
        phantom = generate_case(PhantomSpec(seed=seed, spacing_mm=(spacing_mm,) * 3))
        pre = preprocess_ct(phantom.ct, PreprocessConfig(spacing_mm=(spacing_mm,) * 3, pad_to_multiple=16))
        write_nifti(layout.preprocessed(case_id), pre.array, pre.record.output.affine)
        atomic_write_text(layout.grid_record(case_id), json.dumps(pre.record.to_dict()))
        write_label(layout.original_label(case_id), phantom.labels)
        sources.append(TrainingSource(case_id, layout.original_label(case_id), DEFAULT_ORGAN_TABLE.names, "original"))
    return layout, sources


def test_workspace_items_stream_from_files_exactly_as_loaded_ones_train(tmp_path):
    layout, sources = _phantom_workspace(tmp_path, 4)
    spec = ModelSpec("unet", "tiny", len(DEFAULT_ORGAN_TABLE))
    cfg = _config(patch_size_vox=(32, 32, 32), val_case_ids=("ph03",), iterations_per_epoch=1)
    eager = train(spec, load_training_cases(sources, layout), cfg, DEFAULT_ORGAN_TABLE, (8.0, 8.0, 8.0), training_set_sha256="0" * 64)
    handles = lazy_training_cases(sources, layout)
    assert all(isinstance(h, LazyCase) for h in handles) and [h.case_id for h in handles] == [s.item_id for s in sources]
    lazy = train(spec, handles, cfg, DEFAULT_ORGAN_TABLE, (8.0, 8.0, 8.0), training_set_sha256="0" * 64)
    assert _same(_state(eager), _state(lazy))
    layout.grid_record("ph02").unlink()
    with pytest.raises(AlqaInputError, match="grid record") as err:
        lazy_training_cases(sources, layout)
    assert err.value.path == str(layout.grid_record("ph02"))


# ---------------------------------------------------------------- the QA term


def test_the_qa_term_reads_its_files_through_a_bounded_pool(tmp_path):
    regressor = build_qa_regressor(QARegressorConfig(widen_factor=0.125, input_px=32, num_threads=1))
    cfg = QALossConfig(weight=1.0, regressor=regressor, montage_px=32, via_px=None, cases_per_step=2, seed=4)
    images = {f"u{s}": blob(s + 10, shape=(32, 32, 16)).image for s in range(5)}
    for case_id, image in images.items():
        write_nifti(tmp_path / f"{case_id}.nii.gz", image, np.eye(4))
    files = [UnlabeledFile(c, tmp_path / f"{c}.nii.gz") for c in images]
    in_memory = build_qa_loss(cfg, [UnlabeledCase(c, im) for c, im in images.items()], TABLE)
    streamed = build_qa_loss(cfg, files, TABLE, cases_in_memory=5)
    ids = [[c.case_id for c in term.cases_for_step(s)] for term in (in_memory, streamed) for s in range(6)]
    assert ids[:6] == ids[6:]  # a pool holding every case draws exactly as before
    torch.manual_seed(0)
    net = build_network(SPEC)
    assert torch.equal(in_memory(net, 3), streamed(net, 3))

    bounded = build_qa_loss(cfg, files, TABLE, cases_in_memory=2, steps_per_refresh=3)
    drawn = set()
    for step in range(30):
        picked = bounded.cases_for_step(step)
        window = {files[i].case_id for i in pool_window(len(files), 2, step // 3, seed=cfg.seed)}
        assert {c.case_id for c in picked} <= window and bounded.loaded_count() <= 2
        drawn |= {c.case_id for c in picked}
    assert drawn == set(images)  # the window slides over every unlabeled case
    again = build_qa_loss(cfg, files, TABLE, cases_in_memory=2, steps_per_refresh=3)
    assert [[c.case_id for c in again.cases_for_step(s)] for s in range(30)] == [
        [c.case_id for c in bounded.cases_for_step(s)] for s in range(30)
    ]
    assert bounded.describe()["cases_in_memory"] == 2 and math.isfinite(float(bounded(net, 7).detach()))
