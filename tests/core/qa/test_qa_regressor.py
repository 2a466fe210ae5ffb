"""The QA regressor: MONAI ResNet-18 on 256 px montages, split by case, checkpoints, the QA loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alqa_core.config.sections import QARegressorConfig
from alqa_core.errors import AlqaInputError
from alqa_core.organs import DEFAULT_ORGAN_TABLE as TABLE
from alqa_core.qa.montage import downsample, montage_tensor, qa_montage
from alqa_core.qa.regressor import build_qa_regressor, freeze_regressor, load_qa_regressor, qa_loss, save_qa_regressor, score_montages, split_by_case, train_qa_regressor

LIVER, STOMACH = TABLE.value_of("liver"), TABLE.value_of("stomach")
# tiny ResNet-18 (channels 8..64), one thread: the test machine's 2 cores are shared
TINY = dict(widen_factor=0.125, num_threads=1, batch_size=2)


def _phantom_montage(rng: np.random.Generator, grade: int) -> np.ndarray:
    """A 256 px montage of a tiny CT whose overlay shows the grade.

    0: the mask is the bright organ; 1: it spills well beyond it; 2: gross
    failure, the whole volume labelled as another organ.
    """
    shape = (20, 20, 6)
    i, j = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    ci, cj = rng.integers(7, 13, 2)
    dist2 = np.broadcast_to(((i - ci) ** 2 + (j - cj) ** 2)[..., None], shape)
    ct = (0.2 + 0.1 * rng.random(shape)).astype(np.float32)
    ct[dist2 < 9] += 0.5
    label = np.zeros(shape, dtype=np.uint8)
    if grade == 0:
        label[dist2 < 9] = LIVER
    elif grade == 1:
        label[dist2 < 25] = LIVER
    else:
        label[:] = STOMACH
    return downsample(qa_montage(ct, label, TABLE))


def _dataset(seed: int = 0, n_cases: int = 9):
    rng = np.random.default_rng(seed)
    montages = [(f"c{c}", _phantom_montage(rng, c % 3)) for c in range(n_cases)]
    return montages, [float(c % 3) for c in range(n_cases)]


def test_split_by_case_is_deterministic_and_keeps_a_case_on_one_side():
    ids = [f"case{i:02d}" for i in range(10)] * 2  # two rounds of montages per case
    cfg = QARegressorConfig(val_fraction=0.2, seed=3)
    train, val = split_by_case(ids, cfg)
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    assert split_by_case(list(reversed(ids)), cfg) == (train, val)  # input order does not matter
    assert split_by_case(ids, QARegressorConfig(val_fraction=0.2, seed=4)) != (train, val)
    assert split_by_case(ids, QARegressorConfig(val_case_ids=("case03",)))[1] == ("case03",)
    with pytest.raises(AlqaInputError, match="no montage"):
        split_by_case(ids, QARegressorConfig(val_case_ids=("nope",)))
    with pytest.raises(AlqaInputError, match="at least 2 cases"):
        split_by_case(["a", "a"], cfg)


def test_regressor_learns_the_grade_from_the_overlay(tmp_path):
    montages, grades = _dataset()
    cfg = QARegressorConfig(epochs=30, lr=3e-3, val_case_ids=("c0", "c4", "c8"), seed=0, **TINY)
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    result = train_qa_regressor(montages, grades, cfg)
    assert torch.equal(torch.get_rng_state(), rng_before) and torch.get_num_threads() == threads_before
    assert result.val_case_ids == ("c0", "c4", "c8")
    assert len(result.history) == 30 and 1 <= result.best_epoch <= 30
    assert result.val_mse == min(h.val_mse for h in result.history)
    assert result.baseline_val_mse == pytest.approx(2 / 3)  # predicting the training mean (1.0) on grades 0, 1, 2
    assert result.val_mse < 0.5 * result.baseline_val_mse
    scores = score_montages(result.network, [m for _, m in montages])
    assert scores.shape == (9,) and scores.min() >= 0.0 and scores.max() <= 2.0
    val_scores = scores[[0, 4, 8]]  # grades 0, 1, 2
    assert val_scores[0] < val_scores[1] < val_scores[2]

    path = save_qa_regressor(tmp_path / "qa.pt", result)
    loaded = load_qa_regressor(path)
    assert not loaded.network.training and loaded.config == cfg
    assert loaded.val_mse == pytest.approx(result.val_mse) and loaded.val_case_ids == result.val_case_ids
    np.testing.assert_allclose(score_montages(loaded.network, [m for _, m in montages]), scores, atol=1e-6)


def test_training_is_deterministic_for_a_seed():
    montages, grades = _dataset(n_cases=6)
    cfg = QARegressorConfig(epochs=2, lr=1e-3, val_fraction=0.34, seed=5, **TINY)
    a, b = (train_qa_regressor(montages, grades, cfg) for _ in range(2))
    assert a.history == b.history and a.val_case_ids == b.val_case_ids
    for (k, va), vb in zip(a.network.state_dict().items(), b.network.state_dict().values()):
        assert torch.equal(va, vb), k


def test_bad_training_input():
    montages, grades = _dataset(n_cases=4)
    cfg = QARegressorConfig(epochs=1, **TINY)
    with pytest.raises(AlqaInputError, match="4 montages but 3 grades"):
        train_qa_regressor(montages, grades[:3], cfg)
    with pytest.raises(AlqaInputError, match=r"\[0, 2\]"):
        train_qa_regressor(montages, [0.0, 1.0, 2.0, 3.0], cfg)
    with pytest.raises(AlqaInputError, match="256 px"):
        train_qa_regressor([(c, m[:128, :128]) for c, m in montages], grades, cfg)
    with pytest.raises(AlqaInputError, match="invalid case id"):
        train_qa_regressor([("bad id", m) for _, m in montages], grades, cfg)
    with pytest.raises(AlqaInputError, match="uint8"):
        score_montages(build_qa_regressor(QARegressorConfig(widen_factor=0.125)), [np.zeros((8, 8, 3), np.float32)])


def test_corrupt_or_foreign_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AlqaInputError) as err:
        load_qa_regressor(bad)
    assert str(bad) in str(err.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(AlqaInputError, match="marker"):
        load_qa_regressor(foreign)
    with pytest.raises(AlqaInputError, match="does not exist"):
        load_qa_regressor(tmp_path / "missing.pt")


def test_qa_loss_reaches_the_segmentation_probabilities():
    torch.manual_seed(0)
    net = build_qa_regressor(QARegressorConfig(widen_factor=0.125))
    with pytest.raises(ValueError, match="frozen"):
        qa_loss(net, torch.rand(1, 3, 64, 64))
    frozen = freeze_regressor(net)
    assert net.training and all(p.requires_grad for p in net.parameters())  # the original is untouched
    ct = torch.rand(16, 16, 4)
    logits = torch.randn(len(TABLE), 16, 16, 4, requires_grad=True)
    montage = montage_tensor(ct, torch.sigmoid(logits), TABLE, size_px=64)
    loss = qa_loss(frozen, montage)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in frozen.parameters())
