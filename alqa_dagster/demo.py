"""The README's main command: a phantom campaign taken through one round, then the Dagster UI.

Everything runs on the embedded default: a local folder, a sqlite Dagster
instance under ``<dir>/dagster_home`` and in-process runs, which the UI then
shows with their lineage, previews and tables.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

STEPS = 6


def run_demo(root: Path, n_cases: int = 24, start_ui: bool = True, port: int = 3000, progress=print) -> int:
    import dagster as dg

    from alqa_core.config.campaign import load_campaign
    from alqa_core.config.template import write_template
    from alqa_core.ingest.cases import index_campaign
    from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
    from alqa_core.annotation.labelled.rounds import what_next
    from alqa_core.catalog import Catalog
    from alqa_dagster.cli.common import workspace_layout
    from alqa_dagster.defs.jobs import INGEST_ASSETS, ROUND_ASSETS, ROUND_TAG
    from alqa_dagster.runner import ensure_dagster_home, full_range, materialize, register_cases

    root = root.resolve()
    campaign_dir = root / "campaign"
    config_path = root / "campaign.yaml"
    if not campaign_dir.exists():
        progress(f"generating a {n_cases}-case phantom campaign in {campaign_dir}")
        write_campaign(campaign_dir, CampaignSpec(n_cases=n_cases, seed=0))
    else:
        progress(f"reusing the phantom campaign in {campaign_dir}")
    if not config_path.exists():
        write_template(
            config_path,
            name="alqa_demo",
            workspace_root="./workspace",
            datasets=tuple(f"./campaign/datasets/{p.name}" for p in sorted((campaign_dir / "datasets").iterdir())),
            architectures=(("unet", "tiny"), ("segresnet", "tiny")),
            # 5 mm and a 48^3 patch (240 mm) let a tiny network see enough context on 2 CPU cores
            spacing_mm=5.0,
            patch_vox=48,
            roi_vox=64,
            max_epochs=14,
            iterations_per_epoch=30,
            lr=3e-3,
            lr_schedule="poly",
        )
    os.environ["ALQA_CAMPAIGN"] = str(config_path)
    home = ensure_dagster_home(root / "dagster_home")
    cfg = load_campaign(config_path)
    with dg.DagsterInstance.get() as instance:
        new = register_cases(instance, sorted(index_campaign(cfg).cases))
        progress(f"registered {len(new)} new case partitions (Dagster home {home})")
        materialize(instance, INGEST_ASSETS, full_range(instance))
        progress("ingested every case: raw_scans, original_labels, preprocessed_volumes (one batched run)")
        layout = workspace_layout()  # the workspace the resources write (ALQA_WORKSPACE, else the campaign's)
        decision = what_next(Catalog(layout.catalog))  # a re-run goes on where the last one stopped
        if decision.run == 0:
            progress(f"round 0: training {', '.join(a.name for a in cfg.architectures)} (tiny) -> predictions -> attention -> priority -> queue; this takes a few minutes")
            materialize(instance, ROUND_ASSETS, full_range(instance), tags={ROUND_TAG: "0"})
        else:
            progress(f"round 0 ran before: {decision.reason}")
        from alqa_core.annotation.labelled.status import campaign_status

        status = campaign_status(layout, cfg)
        progress("round 0 done:\n" + status.render())
    if not start_ui:
        progress.done(f"demo finished without UI; workspace {cfg.workspace_root}")
        return 0
    print(
        f"\nNext: open the UI, look at annotation_queue's work packages under {cfg.workspace_root / 'work_packages'},\n"
        f"then e.g.  ALQA_CAMPAIGN={config_path} .venv/bin/alqa confirm <case> --annotator you\n"
        "and let the sensors (enable them in the UI) take it from there.",
        flush=True,
    )
    progress(f"starting the Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops it)")
    return exec_dagster_dev(port)


def exec_dagster_dev(port: int) -> int:
    """Replace this process with ``dagster dev``.

    A non-interactive parent may leave SIGINT/SIGTERM ignored, and dagster dev
    inherits that and will not stop: reset both to their defaults first.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from alqa_dagster.definitions import PROJECT_ROOT

    exe = Path(sys.executable).with_name("dagster")
    os.execv(str(exe), [str(exe), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)])
    return 0  # not reached
