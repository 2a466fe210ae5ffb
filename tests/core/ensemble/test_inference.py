"""Inference: sliding window vs direct forward, MC dropout, batches on the original grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from alqa_core.config.models import ModelSpec
from alqa_core.config.sections import InferenceConfig, PreprocessConfig
from alqa_core.ensemble import inference
from alqa_core.ensemble.checkpoint import CheckpointMeta, Lineage, save_checkpoint
from alqa_core.ensemble.inference import effective_roi, mc_dropout_predict, predict_batch, predict_batch_from_checkpoints, predict_probabilities, prepare_network
from alqa_core.ensemble.networks import build_network
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.preprocess import preprocess_ct
from alqa_core.organs import OrganTable
from alqa_core.volume import CTVolume, quantize_probabilities

CFG = InferenceConfig(roi_size_vox=(32, 32, 32), sw_batch_size=2, roi_divisible_by=16, device="cpu")


def _unet(n_organs: int = 3, dropout: float = 0.0, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(ModelSpec("unet", "tiny", n_organs, dropout)).eval()


def _image(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# --------------------------------------------------------------------------- sliding window


def test_one_roi_equals_direct_forward():
    net = _unet()
    img = _image((32, 32, 32))
    probs = predict_probabilities(net, img, CFG)
    with torch.no_grad():
        direct = torch.sigmoid(net(torch.from_numpy(img)[None, None]))[0].numpy()
    assert probs.shape == (3, 32, 32, 32) and probs.dtype == np.float32
    assert np.abs(probs - direct).max() <= 1e-5
    assert probs.min() >= 0.0 and probs.max() <= 1.0


def test_many_windows_match_plain_monai_call():
    """Constant blending over 8 windows: the fast path equals MONAI's plain call on the untouched net."""
    net = _unet()
    img = _image((48, 48, 40), seed=1)
    cfg = InferenceConfig(roi_size_vox=(32, 32, 32), sw_batch_size=3, blend_mode="constant", roi_divisible_by=16, device="cpu")
    probs = predict_probabilities(net, img, cfg)
    with torch.no_grad():
        plain = torch.sigmoid(sliding_window_inference(torch.from_numpy(img)[None, None], (32, 32, 32), 1, net))[0].numpy()
    assert probs.shape == (3, 48, 48, 40)
    assert np.abs(probs - plain).max() <= 1e-5


def test_gaussian_blend_gives_valid_probabilities_and_leaves_network_alone():
    net = _unet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    probs = predict_probabilities(net, _image((40, 36, 20), seed=2), InferenceConfig(roi_size_vox=(32, 32, 32), roi_divisible_by=16, device="cpu"))
    assert probs.shape == (3, 40, 36, 20)
    assert np.isfinite(probs).all() and probs.min() >= 0.0 and probs.max() <= 1.0
    assert not net.training and next(net.parameters()).requires_grad
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert next(net.parameters()).is_contiguous()  # the caller's weights were not converted to channels-last


def test_roi_is_clamped_to_the_volume():
    cfg = InferenceConfig(roi_size_vox=(96, 96, 96), roi_divisible_by=16)
    assert effective_roi((160, 40, 20), cfg) == (96, 48, 32)


def test_uint8_storage_round_trip_error_is_at_most_half_a_step():
    probs = predict_probabilities(_unet(), _image((32, 32, 32), seed=3), CFG)
    stored = quantize_probabilities(probs)
    assert stored.dtype == np.uint8
    assert np.abs(stored.astype(np.float32) / 255.0 - probs).max() <= 1.0 / 510.0 + 1e-7


def test_bad_config_and_image_are_rejected():
    with pytest.raises(ValueError, match="overlap"):
        InferenceConfig(overlap=1.0)
    with pytest.raises(ValueError, match="blend_mode"):
        InferenceConfig(blend_mode="median")
    with pytest.raises(ValueError, match="3D"):
        predict_probabilities(_unet(), _image((1, 32, 32, 32)), CFG)


# --------------------------------------------------------------------------- MC dropout


def test_mc_dropout_samples_differ_and_summaries_are_bounded():
    net = _unet(dropout=0.3)
    img = _image((32, 32, 32), seed=4)
    a = mc_dropout_predict(net, img, 1, CFG, seed=1).mean_probabilities
    b = mc_dropout_predict(net, img, 1, CFG, seed=2).mean_probabilities
    a_again = mc_dropout_predict(net, img, 1, CFG, seed=1).mean_probabilities
    assert np.abs(a - b).max() > 1e-3  # dropout is active: two samples differ
    assert np.array_equal(a, a_again)  # and the seed makes it reproducible

    res = mc_dropout_predict(net, img, 4, CFG, seed=0)
    assert res.n_samples == 4
    assert res.mean_probabilities.shape == res.predictive_entropy.shape == (3, 32, 32, 32)
    assert res.total_entropy.shape == (32, 32, 32)
    assert res.mean_probabilities.min() >= 0.0 and res.mean_probabilities.max() <= 1.0
    assert res.predictive_entropy.min() >= 0.0 and res.predictive_entropy.max() <= math.log(2) + 1e-6
    p = res.mean_probabilities.astype(np.float64)
    expected = -(p * np.log(np.clip(p, 1e-7, 1)) + (1 - p) * np.log(np.clip(1 - p, 1e-7, 1)))
    assert np.abs(res.predictive_entropy - expected).max() < 1e-4
    assert np.allclose(res.total_entropy, res.predictive_entropy.sum(0), atol=1e-5)
    # The mean of 4 samples differs from the deterministic (dropout off) prediction.
    assert np.abs(res.mean_probabilities - predict_probabilities(net, img, CFG)).max() > 1e-4
    assert not net.training  # the caller's network stays in eval mode


def test_mc_dropout_keeps_norms_in_eval_mode():
    prepared = prepare_network(_unet(dropout=0.3), CFG, mc_dropout=True)
    modes = {type(m).__name__: m.training for m in prepared.module.modules() if not list(m.children())}
    assert modes["Dropout"] is True
    assert modes["InstanceNorm3d"] is False
    with pytest.raises(ValueError, match="prepared with MC dropout"):
        predict_probabilities(prepared, _image((32, 32, 32)), CFG)


def test_mc_dropout_without_dropout_is_an_error():
    with pytest.raises(ValueError, match="dropout"):
        mc_dropout_predict(_unet(dropout=0.0), _image((32, 32, 32)), 2, CFG)


# --------------------------------------------------------------------------- batches


def _phantom_case(centre_vox, seed: int) -> CTVolume:
    """A flipped (LPS-like) grid: soft-tissue box in air with a bright off-centre sphere."""
    shape = (56, 48, 18)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[6:50, 5:43, 2:16] = 40.0
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    spacing = (0.8, 0.8, 2.5)
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip((ii, jj, kk), centre_vox, spacing))
    hu[dist2 <= 9.0**2] = 200.0
    hu += np.random.default_rng(seed).normal(0, 5, shape).astype(np.float32)
    affine = np.array([[-0.8, 0, 0, 20.0], [0, -0.8, 0, 15.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
    return CTVolume(hu, affine)


def _intensity_net() -> torch.nn.Module:
    """A real 1x1x1 conv: channel 0 fires on the bright sphere, channel 1 on the whole body."""
    conv = torch.nn.Conv3d(1, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([40.0, 40.0]).view(2, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor([-40.0 * 0.65, -40.0 * 0.2]))
    return conv.eval()


def test_predict_batch_prepares_each_member_once_and_lands_on_the_original_grid(monkeypatch):
    calls = []
    real_prepare = inference.prepare_network

    def counting_prepare(network, config, **kw):
        calls.append(id(network))
        return real_prepare(network, config, **kw)

    monkeypatch.setattr(inference, "prepare_network", counting_prepare)
    pre = PreprocessConfig(spacing_mm=(1.6, 1.6, 2.5))
    cts = {f"case_{n}": _phantom_case(c, n) for n, c in enumerate([(20, 18, 9), (36, 30, 8), (28, 16, 10)])}
    cases = [(cid, preprocess_ct(ct, pre)) for cid, ct in cts.items()]
    members = [("intensity", _intensity_net()), ("unet", _unet(n_organs=2))]
    out = list(predict_batch(members, cases, CFG, ("liver", "spleen")))

    assert len(calls) == 2  # once per member, not once per case (3 cases)
    assert [(c, m) for c, m, _ in out] == [(c, m) for m, _ in members for c in cts]
    for case_id, member, pred in out:
        ct = cts[case_id]
        assert pred.member == member and pred.organs == ("liver", "spleen")
        assert pred.array.dtype == np.uint8 and pred.array.shape == (2, *ct.shape)
        assert np.allclose(pred.affine, ct.affine)
        if member == "intensity":
            # The bright sphere found on the original grid (a flip or shift would break this).
            truth = ct.array > 120.0
            found = pred.array[0] > 127
            dice = 2 * np.count_nonzero(truth & found) / (truth.sum() + found.sum())
            assert dice > 0.95, f"{case_id}: dice {dice:.3f}"  # a 1.6 mm shift gives ~0.87
            assert pred.array[0][ct.array < -500].max() == 0  # air outside the body is 0


def test_predict_batch_with_mc_samples_yields_each_pass_as_a_member(monkeypatch):
    ct = _phantom_case((28, 24, 9), 0)
    case = preprocess_ct(ct, PreprocessConfig(spacing_mm=(1.6, 1.6, 2.5)))
    net = _unet(n_organs=2, dropout=0.3)
    mc_cfg = InferenceConfig(roi_size_vox=(32, 32, 32), roi_divisible_by=16, device="cpu", mc_samples=3)
    samples = list(predict_batch([("unet", net)], [("c0", case)], mc_cfg, ("liver", "spleen")))
    (_, _, det), = predict_batch([("unet", net)], [("c0", case)], CFG, ("liver", "spleen"))
    assert [name for _, name, _ in samples] == ["unet-mc00", "unet-mc01", "unet-mc02"]
    arrays = [pred.array.astype(int) for _, _, pred in samples]
    assert all(a.shape == det.array.shape == (2, *ct.shape) for a in arrays)
    # the passes differ from each other (Eq. 1's spread is not zero) and from the deterministic pass
    assert np.abs(arrays[0] - arrays[1]).max() > 0 and np.abs(arrays[0] - det.array.astype(int)).max() > 0
    again = list(predict_batch([("unet", net)], [("c0", case)], mc_cfg, ("liver", "spleen")))
    assert all(np.array_equal(a.array, b.array) for (_, _, a), (_, _, b) in zip(samples, again))  # seeded
    with pytest.raises(ValueError, match="dropout"):
        list(predict_batch([("nodrop", _unet(n_organs=2))], [("c0", case)], mc_cfg, ("liver", "spleen")))


def test_predict_batch_rejects_a_channel_count_mismatch():
    case = preprocess_ct(_phantom_case((28, 24, 9), 0), PreprocessConfig(spacing_mm=(1.6, 1.6, 2.5)))
    with pytest.raises(ValueError, match="3 channels for 2 organs"):
        list(predict_batch([("unet", _unet(n_organs=3))], [("c0", case)], CFG, ("liver", "spleen")))


def _save(path, net, spec, table):
    meta = CheckpointMeta(spec=spec, organ_table=table, spacing_mm=(1.6, 1.6, 2.5),
                          lineage=Lineage(None, None, "0" * 64, 0))
    return save_checkpoint(path, net, meta)


def test_predict_batch_from_checkpoints_loads_each_once(tmp_path, monkeypatch):
    table = OrganTable.from_pairs([(1, "spleen"), (5, "liver")])
    spec = ModelSpec("unet", "tiny", 2)
    paths = [_save(tmp_path / f"m{i}.pt", _unet(2, seed=i), spec, table) for i in range(2)]
    loads = []
    real_load = inference.load_checkpoint
    monkeypatch.setattr(inference, "load_checkpoint", lambda p, d="cpu": loads.append(str(p)) or real_load(p, d))

    cases = [(f"c{n}", preprocess_ct(_phantom_case((28, 24, 9), n), PreprocessConfig(spacing_mm=(1.6, 1.6, 2.5))))
             for n in range(3)]
    out = list(predict_batch_from_checkpoints([("a", paths[0]), ("b", paths[1])], cases, CFG))
    assert loads == [str(p) for p in paths]
    assert len(out) == 6 and all(pred.organs == ("spleen", "liver") for _, _, pred in out)
    # Different weights give different predictions for the same case.
    assert not np.array_equal(out[0][2].array, out[3][2].array)

    other = _save(tmp_path / "other.pt", _unet(2), spec, OrganTable.from_pairs([(1, "spleen"), (2, "kidney_right")]))
    with pytest.raises(AlqaInputError, match="other.pt"):
        list(predict_batch_from_checkpoints([("a", paths[0]), ("x", other)], cases[:1], CFG))
