"""Campaign config: the template validates; errors name the file and the field."""

from __future__ import annotations

import pytest

from alqa_core.config.campaign import load_campaign
from alqa_core.config.template import render_template, write_template
from alqa_core.errors import AlqaInputError


def _write(tmp_path, text):
    p = tmp_path / "campaign.yaml"
    p.write_text(text)
    return p


def test_template_loads_with_core_configs(tmp_path):
    p = write_template(tmp_path / "c.yaml", datasets=("data/D1",), spacing_mm=3.0, architectures=(("unet", "tiny"), ("segresnet", "tiny")))
    cfg = load_campaign(p)
    assert cfg.datasets[0].path == (tmp_path / "data" / "D1")
    assert cfg.preprocess.spacing_mm == (3.0, 3.0, 3.0)
    assert [a.name for a in cfg.architectures] == ["unet", "segresnet"]
    assert cfg.attention.inconsistency_threshold == 0.1
    assert cfg.budget.fraction == 0.05
    with pytest.raises(FileExistsError):
        write_template(p)


def test_external_only_campaign_is_valid(tmp_path):
    text = render_template(datasets=("d",), architectures=()).replace(
        "external_members: []", "external_members:\n  - name: totalseg\n    class_map: total"
    )
    cfg = load_campaign(_write(tmp_path, text))
    assert cfg.architectures == () and cfg.member_names == ("totalseg",)


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("max_epochs: 200", "max_epochs: ten", "training.max_epochs"),
        ("hu_min: -175.0", "hu_mni: -175.0", "preprocess: unknown key"),
        ("size: tiny", "size: huge", "architectures[0].size"),
        ("- name: unet", "- name: vnet", "architectures[0].name"),
        ("fraction: 0.05", "fraction: 5", "budget.fraction"),
        ("spacing_mm: [1.5, 1.5, 1.5]", "spacing_mm: [1.5, 1.5]", "preprocess.spacing_mm"),
    ],
)
def test_errors_name_the_field(tmp_path, old, new, field):
    text = render_template(datasets=("d",))
    assert old in text
    p = _write(tmp_path, text.replace(old, new))
    with pytest.raises(AlqaInputError) as err:
        load_campaign(p)
    assert field in str(err.value) and str(p) in str(err.value)


def test_no_members_and_bad_yaml(tmp_path):
    with pytest.raises(AlqaInputError, match="at least one member"):
        load_campaign(_write(tmp_path, render_template(datasets=("d",), architectures=())))
    with pytest.raises(AlqaInputError, match="not valid YAML"):
        load_campaign(_write(tmp_path, "a: [1, 2"))
    with pytest.raises(AlqaInputError, match="does not exist"):
        load_campaign(tmp_path / "missing.yaml")


def test_qa_loss_section_is_off_by_default_and_needs_a_regressor_when_on(tmp_path):
    text = render_template(datasets=("d",))
    assert load_campaign(_write(tmp_path, text)).qa_loss.enabled is False
    on = text.replace("  weight: 0.0 ", "  weight: 0.1\n  regressor: qa/regressor.pt ")
    cfg = load_campaign(_write(tmp_path, on))
    assert cfg.qa_loss.enabled and cfg.qa_loss.regressor == tmp_path / "qa" / "regressor.pt"
    with pytest.raises(AlqaInputError) as err:
        load_campaign(_write(tmp_path, text.replace("  weight: 0.0 ", "  weight: 0.1 ")))
    assert "regressor" in str(err.value)


def test_members_per_architecture_name_seeded_networks(tmp_path):
    cfg = load_campaign(write_template(tmp_path / "c.yaml", datasets=("d",), architectures=(("unet", "tiny", 3), ("segresnet", "tiny"))))
    assert [(m.name, m.arch.name, m.seed_offset) for m in cfg.trained_members] == [
        ("unet", "unet", 0), ("unet-s1", "unet", 1), ("unet-s2", "unet", 2), ("segresnet", "segresnet", 0)]
    assert cfg.member_names == ("unet", "unet-s1", "unet-s2", "segresnet")
    default = load_campaign(write_template(tmp_path / "d.yaml", datasets=("d",)))
    assert len(default.member_names) >= 2  # alqa init's ensemble can see inconsistency (Eq. 1)
    bad = render_template(datasets=("d",)).replace("members: 2", "members: 0")
    with pytest.raises(AlqaInputError, match="architectures\\[0\\].members"):
        load_campaign(_write(tmp_path, bad))


def test_rounds_settings_are_validated(tmp_path):
    text = render_template(datasets=("d",))
    assert load_campaign(_write(tmp_path, text)).rounds.timeout_hours is None
    with pytest.raises(AlqaInputError, match="rounds.timeout_hours"):
        load_campaign(_write(tmp_path, text.replace("timeout_hours: null", "timeout_hours: -1")))


def test_batch_and_tick_budget_settings_are_validated(tmp_path):
    text = render_template(datasets=("d",))
    cfg = load_campaign(_write(tmp_path, text))
    assert cfg.batch.cases_per_run == 50 and cfg.submissions.max_tick_seconds == 20.0
    assert load_campaign(_write(tmp_path, text.replace("cases_per_run: 50", "cases_per_run: 200"))).batch.cases_per_run == 200
    with pytest.raises(AlqaInputError, match="batch.cases_per_run"):
        load_campaign(_write(tmp_path, text.replace("cases_per_run: 50", "cases_per_run: 0")))
    with pytest.raises(AlqaInputError, match="submissions.max_tick_seconds"):
        load_campaign(_write(tmp_path, text.replace("max_tick_seconds: 20.0", "max_tick_seconds: 0")))
