"""The optional QA-loss fine-tuning mode: a frozen QA regressor as an extra loss term on unlabeled cases."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from alqa_core.config.models import ModelSpec
from alqa_core.config.sections import QALossConfig, QARegressorConfig, TrainConfig
from alqa_core.ensemble.checkpoint import CheckpointMeta, Lineage, save_checkpoint
from alqa_core.ensemble.networks import build_network
from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable
from alqa_core.qa.montage import downsample, qa_montage
from alqa_core.qa.regressor import build_qa_regressor, save_qa_regressor, train_qa_regressor
from alqa_core.training.cases import TrainingCase
from alqa_core.training.losses import masked_dice_bce_loss
from alqa_core.training.qa_loss import QALossTerm, UnlabeledCase, build_qa_loss, montage_slice_indices, qa_montage_tensor
from alqa_core.training.sampling import PatchSampler
from alqa_core.training.trainer import train

TABLE = OrganTable.from_pairs([(1, "spleen"), (2, "kidney_right"), (5, "liver")])
SPEC = ModelSpec("unet", "tiny", len(TABLE))
SHAPE = (32, 32, 16)
MONTAGE_PX = 32
REG_CFG = QARegressorConfig(epochs=2, batch_size=4, widen_factor=0.125, input_px=MONTAGE_PX, num_threads=1, val_fraction=0.34)


def blob_case(seed: int, shape=SHAPE) -> TrainingCase:
    """Three ellipsoid organs with distinct intensities, jittered by the seed; fully labeled."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    n = np.asarray(shape, dtype=np.float32)
    image = np.full(shape, 0.3, dtype=np.float32)
    label = np.zeros(shape, np.uint8)
    for name, centre, radii, intensity in [
        ("liver", (0.3, 0.45, 0.5), (0.2, 0.22, 0.3), 0.6),
        ("spleen", (0.72, 0.55, 0.5), (0.1, 0.12, 0.25), 0.75),
        ("kidney_right", (0.35, 0.75, 0.45), (0.09, 0.09, 0.25), 0.9),
    ]:
        c = (np.asarray(centre) + rng.uniform(-0.04, 0.04, 3)) * n
        r = np.asarray(radii) * rng.uniform(0.85, 1.15, 3) * n
        inside = (((grid - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
        image[inside] = intensity
        label[inside] = TABLE.value_of(name)
    image = np.clip(image + rng.normal(0, 0.03, shape).astype(np.float32), 0, 1).astype(np.float32)
    return TrainingCase(f"blob{seed:02d}", image, label, TABLE.names)


def unlabeled(seeds=(10, 11, 12)) -> list[UnlabeledCase]:
    return [UnlabeledCase(f"u{s}", blob_case(s).image) for s in seeds]


@pytest.fixture(scope="module")
def regressor_path(tmp_path_factory):
    """A tiny real QA regressor trained (2 epochs) on montages of good (0) and wrong (2) masks."""
    montages, grades = [], []
    for seed in range(6):
        case = blob_case(seed)
        good = case.label
        bad = np.where(case.label > 0, 0, TABLE.value_of("liver")).astype(np.uint8)  # everything but the organs
        for label, grade in ((good, 0.0), (bad, 2.0)):
            montages.append((case.case_id, downsample(qa_montage(case.image, label, TABLE), MONTAGE_PX)))
            grades.append(grade)
    result = train_qa_regressor(montages, grades, REG_CFG)
    return save_qa_regressor(tmp_path_factory.mktemp("qa") / "regressor.pt", result)


def _term(regressor_path, weight=1.0, **kw) -> QALossTerm:
    term = build_qa_loss(QALossConfig(weight=weight, regressor=regressor_path, via_px=None, **kw), unlabeled(), TABLE)
    assert isinstance(term, QALossTerm)
    return term


def _net(seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(SPEC).train()


def _grads(network) -> list[torch.Tensor]:
    return [p.grad.clone() for p in network.parameters()]


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- config and building


def test_mode_off_builds_no_term(regressor_path):
    assert build_qa_loss(QALossConfig(), unlabeled(), TABLE) is None
    assert build_qa_loss(QALossConfig(weight=0.0, regressor=regressor_path), unlabeled(), TABLE) is None
    assert not QALossConfig(weight=0.0).enabled and QALossConfig(weight=0.5, regressor=regressor_path).enabled


def test_config_refuses_bad_values(regressor_path):
    with pytest.raises(AlqaInputError, match="needs a regressor"):
        QALossConfig(weight=1.0)
    with pytest.raises(AlqaInputError, match="weight"):
        QALossConfig(weight=-0.1, regressor=regressor_path)
    with pytest.raises(AlqaInputError, match="penalty"):
        QALossConfig(weight=1.0, regressor=regressor_path, penalty="l1")
    with pytest.raises(AlqaInputError, match="cases_per_step"):
        QALossConfig(weight=1.0, regressor=regressor_path, cases_per_step=0)
    with pytest.raises(AlqaInputError, match="invalid case id"):
        QALossConfig(weight=1.0, regressor=regressor_path, case_ids=("../etc",))


def test_a_regressor_checkpoint_that_does_not_load_names_the_file(tmp_path, regressor_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    missing = tmp_path / "missing.pt"
    seg = tmp_path / "segmentation.pt"  # a valid alqa checkpoint, but of a segmentation network
    meta = CheckpointMeta(SPEC, TABLE, (5.0, 5.0, 5.0), Lineage(None, None, "0" * 64))
    save_checkpoint(seg, build_network(SPEC), meta)
    for path in (garbage, missing, seg):
        with pytest.raises(AlqaInputError) as err:
            build_qa_loss(QALossConfig(weight=1.0, regressor=path), unlabeled(), TABLE)
        assert err.value.path == str(path) and str(path) in str(err.value)
    with pytest.raises(AlqaInputError, match="trained on 32 px") as err:
        build_qa_loss(QALossConfig(weight=1.0, regressor=regressor_path, montage_px=64), unlabeled(), TABLE)
    assert err.value.path == str(regressor_path)


def test_unlabeled_cases_are_checked(regressor_path):
    cfg = QALossConfig(weight=1.0, regressor=regressor_path, case_ids=("u10", "u99"))
    with pytest.raises(AlqaInputError, match="u99"):
        build_qa_loss(cfg, unlabeled(), TABLE)
    with pytest.raises(AlqaInputError, match="duplicate"):
        build_qa_loss(QALossConfig(weight=1.0, regressor=regressor_path), unlabeled((10, 10)), TABLE)
    with pytest.raises(AlqaInputError, match="no unlabeled case"):
        build_qa_loss(QALossConfig(weight=1.0, regressor=regressor_path), [], TABLE)
    with pytest.raises(AlqaInputError, match="case u1"):
        UnlabeledCase("u1", np.zeros((4, 4), np.float32))
    term = build_qa_loss(QALossConfig(weight=1.0, regressor=regressor_path, case_ids=("u12", "u10")), unlabeled(), TABLE)
    assert [c.case_id for c in term.cases] == ["u10", "u12"]


def test_cases_per_step_are_a_pure_function_of_seed_and_step(regressor_path):
    term = _term(regressor_path, cases_per_step=2, every_n_steps=3, seed=7)
    drawn = [tuple(c.case_id for c in term.cases_for_step(s)) for s in range(12)]
    assert drawn == [tuple(c.case_id for c in term.cases_for_step(s)) for s in range(12)]
    assert all(d == () for s, d in enumerate(drawn) if (s + 1) % 3)  # every 3rd step: 2, 5, 8, 11
    fired = [d for s, d in enumerate(drawn) if (s + 1) % 3 == 0]
    assert len(fired) == 4 and all(len(d) == 2 and len(set(d)) == 2 for d in fired)
    assert len(set(fired)) > 1  # not the same pair every time


def test_montage_slice_indices_are_evenly_spaced():
    idx = montage_slice_indices(48, 16)
    assert len(idx) == 16 and idx[0] == 0 and idx[-1] == 47
    assert set(np.diff(idx).tolist()) <= {3, 4}
    assert np.array_equal(montage_slice_indices(10, None), np.arange(10))
    assert np.array_equal(montage_slice_indices(10, 12), np.arange(10))


def test_montage_of_chosen_slices_is_what_the_regressor_sees():
    case = blob_case(3)
    idx = montage_slice_indices(SHAPE[2], 9)
    expected = downsample(qa_montage(case.image[..., idx], case.label[..., idx], TABLE), 64)
    one_hot = torch.from_numpy(np.stack([(case.label == v) for v in TABLE.values]).astype(np.float32))
    got = qa_montage_tensor(torch.from_numpy(np.array(case.image)), one_hot, TABLE, 64, montage_slices=9)
    assert got.shape == (3, 64, 64)
    diff = np.abs(got.permute(1, 2, 0).numpy() * 255.0 - expected.astype(np.float32))
    assert diff.mean() < 1.0 and diff.max() <= 6.0


# ---------------------------------------------------------------- gradients


def test_gradient_reaches_the_segmentation_network_only(regressor_path):
    term = _term(regressor_path, montage_slices=9)
    before = _state(term.regressor)
    network = _net()
    loss = term(network, 0)
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters())
    assert all(p.grad is None and not p.requires_grad for p in term.regressor.parameters())
    assert not term.regressor.training
    after = _state(term.regressor)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats too


def test_the_term_changes_segmentation_gradients_and_weight_zero_leaves_them_bit_identical(regressor_path):
    sampler = PatchSampler([blob_case(0), blob_case(1)], TABLE, (32, 32, 16), seed=0)
    batch = sampler.batch(2)
    base = _net()

    def step_grads(extra_term):
        network = copy.deepcopy(base)
        logits = network(batch.image)
        loss = masked_dice_bce_loss(logits, batch.target, batch.organ_weight, batch.voxel_mask)
        if extra_term is not None:
            loss = loss + extra_term(network, 0).float()
        loss.backward()
        return _grads(network)

    plain = step_grads(None)
    weighted = step_grads(_term(regressor_path, weight=0.5))
    term0 = _term(regressor_path)
    zero = QALossTerm(QALossConfig(weight=0.0, regressor=regressor_path), term0.cases, TABLE, term0.regressor, MONTAGE_PX, "test")
    zeroed = step_grads(zero)
    assert all(torch.equal(a, b) for a, b in zip(plain, zeroed))
    assert any(not torch.allclose(a, b) for a, b in zip(plain, weighted))


def test_descending_the_term_lowers_the_predicted_grade(regressor_path):
    term = _term(regressor_path, case_ids=("u10",), weight=1.0)
    network = _net(1)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    case = term.cases
    first = float(term.grades(term.montages(network, case)).detach()[0])
    for step in range(4):
        optimizer.zero_grad()
        term(network, step).backward()
        optimizer.step()
    last = float(term.grades(term.montages(network, case)).detach()[0])
    assert last < first


# ---------------------------------------------------------------- through train()


def _train(extra_loss, iterations=2):
    cfg = TrainConfig(
        patch_size_vox=(32, 32, 16), batch_size=2, max_epochs=1, iterations_per_epoch=iterations, val_case_ids=("blob02",), seed=0, device="cpu"
    )
    return train(SPEC, [blob_case(0), blob_case(1), blob_case(2)], cfg, TABLE, (5.0, 5.0, 5.0), extra_loss=extra_loss)


def test_training_with_the_term_off_or_silent_is_bit_identical_and_on_differs(regressor_path):
    plain = _state(_train(None).network)
    # the hook is called at every step but adds nothing (weight 0 is covered step by step above)
    silent = build_qa_loss(QALossConfig(weight=1.0, regressor=regressor_path, every_n_steps=100, via_px=None), unlabeled(), TABLE)
    state = _state(_train(silent).network)
    assert all(torch.equal(plain[k], state[k]) for k in plain)
    on = _train(_term(regressor_path))
    assert any(not torch.equal(plain[k], v) for k, v in _state(on.network).items())
    assert on.history[0].extra_loss is not None and on.history[0].extra_loss > 0
    assert on.meta.run_info["extra_loss"]["kind"] == "qa_loss"
    assert on.meta.run_info["extra_loss"]["regressor"] == str(regressor_path)


def test_frozen_regressor_is_unchanged_by_a_training_step(regressor_path):
    from alqa_core.qa.regressor import load_qa_regressor

    reference = _state(load_qa_regressor(regressor_path).network)
    term = _term(regressor_path)
    _train(term, iterations=2)
    after = _state(term.regressor)
    assert reference.keys() == after.keys()
    assert all(torch.equal(reference[k], after[k]) for k in reference)
    assert not term.regressor.training
    assert all(not p.requires_grad and p.grad is None for p in term.regressor.parameters())


def test_a_given_network_is_copied_and_left_as_it_was():
    regressor = build_qa_regressor(REG_CFG).train()
    before = _state(regressor)
    term = build_qa_loss(QALossConfig(weight=1.0, regressor=regressor, montage_px=MONTAGE_PX, via_px=None), unlabeled(), TABLE)
    assert term.regressor is not regressor and term.montage_px == MONTAGE_PX
    term(_net(), 0).backward()
    assert regressor.training and all(p.requires_grad and p.grad is None for p in regressor.parameters())
    assert all(torch.equal(before[k], v) for k, v in _state(regressor).items())


def test_campaign_wiring_draws_the_cases_outside_the_training_set(tmp_path, regressor_path):
    import pandas as pd

    from alqa_core.io.nifti import write_nifti
    from alqa_core.training.fit import qa_loss_term
    from alqa_core.training.training_set import TrainingSource, is_holdout
    from alqa_core.workspace import WorkspaceLayout

    layout = WorkspaceLayout(tmp_path / "ws")
    free = [f"c{i}" for i in range(100) if not is_holdout(f"c{i}", 0.5)][:4]
    held = next(f"h{i}" for i in range(100) if is_holdout(f"h{i}", 0.5))
    for seed, case_id in enumerate([*free, held]):
        write_nifti(layout.preprocessed(case_id), blob_case(seed).image, np.eye(4))
    # free[1]: in the training set; free[3]: test split; held: the evaluation hold-out; c_late: not
    # preprocessed yet -- none of them may feed the QA term
    cases = pd.DataFrame({"case_id": [*free, held, "c_late"], "split": ["train", "train", "train", "test", "train", "train"]})
    sources = [TrainingSource(free[1], tmp_path / "unused.nii.gz", TABLE.names, "original")]
    assert qa_loss_term(QALossConfig(), layout, cases, sources, TABLE, 0.5) is None
    term = qa_loss_term(QALossConfig(weight=0.5, regressor=regressor_path, via_px=None), layout, cases, sources, TABLE, 0.5)
    assert term.describe()["case_ids"] == sorted([free[0], free[2]])
    np.testing.assert_array_equal(term.cases[0].image, blob_case(0).image)
