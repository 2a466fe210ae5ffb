"""Checkpoints: round trip, lineage, fingerprints, corrupt files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from alqa_core.config.models import ModelSpec
from alqa_core.ensemble.checkpoint import CheckpointMeta, Lineage, checkpoint_sha256, load_checkpoint, save_checkpoint
from alqa_core.ensemble.networks import build_network
from alqa_core.errors import AlqaInputError
from alqa_core.organs import DEFAULT_ORGAN_TABLE, OrganTable
from alqa_core.training.training_set import training_set_fingerprint


def _meta(spec: ModelSpec, table: OrganTable = DEFAULT_ORGAN_TABLE, parent=None, round_index=0) -> CheckpointMeta:
    return CheckpointMeta(
        spec=spec,
        organ_table=table,
        spacing_mm=(3.0, 3.0, 2.5),
        lineage=Lineage(
            parent_path=None if parent is None else str(parent),
            parent_sha256=None if parent is None else checkpoint_sha256(parent),
            training_set_sha256=training_set_fingerprint([("case_a", b"label-a"), ("case_b", b"label-b")]),
            round_index=round_index,
        ),
        train_config={"patch_size_vox": (32, 32, 32), "lr": 1e-3, "val_case_ids": ["case_b"]},
        val_metrics={"dice_mean": 0.81, "dice_liver": 0.9},
        run_info={"device": "cpu", "best_epoch": 3, "val_case_ids": ("case_b",)},
    )


@pytest.mark.parametrize("arch", ["unet", "segresnet"])
def test_round_trip_gives_identical_outputs(tmp_path, arch):
    torch.manual_seed(0)
    spec = ModelSpec(arch, "tiny", len(DEFAULT_ORGAN_TABLE))
    net = build_network(spec).eval()
    # Perturb away from the init so a loader that re-initialises would be caught.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = net(x)
    path = save_checkpoint(tmp_path / "m.pt", net, _meta(spec))
    loaded = load_checkpoint(path)
    assert not loaded.network.training
    with torch.no_grad():
        got = loaded.network(x)
    assert torch.equal(expected, got)
    assert loaded.meta.spec == spec
    assert loaded.meta.organ_table == DEFAULT_ORGAN_TABLE
    assert loaded.meta.spacing_mm == (3.0, 3.0, 2.5)
    assert loaded.meta.train_config["patch_size_vox"] == [32, 32, 32]
    assert loaded.meta.val_metrics["dice_liver"] == pytest.approx(0.9)
    assert dict(loaded.meta.run_info) == {"device": "cpu", "best_epoch": 3, "val_case_ids": ["case_b"]}
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write left nothing behind


def test_lineage_survives_and_parent_hash_matches(tmp_path):
    spec = ModelSpec("unet", "tiny", 2, overrides={"channels": (4, 8, 16, 32)})
    table = OrganTable.from_pairs([(1, "liver"), (2, "spleen")])
    parent = save_checkpoint(tmp_path / "r0.pt", build_network(spec), _meta(spec, table))
    child = save_checkpoint(tmp_path / "r1.pt", build_network(spec), _meta(spec, table, parent=parent, round_index=1))
    meta = load_checkpoint(child).meta
    assert meta.lineage.parent_path == str(parent)
    assert meta.lineage.parent_sha256 == hashlib.sha256(parent.read_bytes()).hexdigest()
    assert meta.lineage.round_index == 1
    assert meta.lineage.training_set_sha256 == _meta(spec, table).lineage.training_set_sha256
    assert meta.spec == spec and tuple(meta.spec.overrides["channels"]) == (4, 8, 16, 32)
    assert meta.organ_table.names == ("liver", "spleen")
    assert load_checkpoint(parent).meta.lineage.parent_path is None
    assert meta.created_at.endswith("+00:00")


def test_training_set_fingerprint_properties():
    a = training_set_fingerprint([("c1", b"x"), ("c2", b"y")])
    assert a == training_set_fingerprint([("c2", b"y"), ("c1", b"x")])  # order-free
    assert a == training_set_fingerprint([("c1", hashlib.sha256(b"x").hexdigest()), ("c2", b"y")])  # bytes or hash
    assert a != training_set_fingerprint([("c1", b"x"), ("c2", b"z")])  # label content
    assert a != training_set_fingerprint([("c1", b"x"), ("c3", b"y")])  # case id
    assert a != training_set_fingerprint([("c1", b"x")])
    with pytest.raises(ValueError):
        training_set_fingerprint([("c1", "not-a-hash")])
    with pytest.raises(ValueError):
        training_set_fingerprint([("c1", b"x"), ("c1", b"y")])


def test_corrupt_and_foreign_files_raise_input_error(tmp_path):
    spec = ModelSpec("unet", "tiny", len(DEFAULT_ORGAN_TABLE))
    good = save_checkpoint(tmp_path / "good.pt", build_network(spec), _meta(spec))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    wrong_weights = tmp_path / "wrong.pt"
    payload = torch.load(good, weights_only=True)
    payload["state_dict"] = {k: v for i, (k, v) in enumerate(payload["state_dict"].items()) if i > 0}
    torch.save(payload, wrong_weights)
    for path in (truncated, garbage, foreign, wrong_weights, tmp_path / "missing.pt"):
        with pytest.raises(AlqaInputError) as err:
            load_checkpoint(path)
        assert str(path) in str(err.value)
    with pytest.raises(AlqaInputError):
        checkpoint_sha256(tmp_path / "missing.pt")


def test_meta_rejects_spec_table_mismatch():
    with pytest.raises(ValueError):
        _meta(ModelSpec("unet", "tiny", 3))


def test_checkpoint_is_plain_data(tmp_path):
    spec = ModelSpec("unet", "tiny", len(DEFAULT_ORGAN_TABLE))
    path = save_checkpoint(tmp_path / "m.pt", build_network(spec), _meta(spec))
    payload = torch.load(path, weights_only=True)  # would raise on any pickled object
    assert payload["format"] == "alqa-checkpoint"
    assert isinstance(payload["meta"]["organ_table"], list)
    assert np.isclose(payload["meta"]["val_metrics"]["dice_mean"], 0.81)
