#!/usr/bin/env bash
# A GPU-sized campaign with trained models (issue 15), one command:
#
#     bash scripts/gpu_campaign.sh [OUT] [more `alqa simulate` options, which override these]
#
# What it runs: a new phantom campaign of 160 cases at 2 mm (five datasets with partial
# labels, 25% hard cases), an ensemble of three full-size MONAI networks (U-Net, SegResNet,
# DynUNet; one member per architecture, as production trains one), M_0 trained on the
# original partial labels, then attention, outlier-first, USS and foreground-aware random for
# 3 rounds at 150 effort units each (about 8 whole volumes), every strategy fine-tuned and
# scored on the same held-out test cases. The aim is M_0 Dice > 0.8 (the CPU-sized
# simulator's tiny networks reach 0.24, too weak to rank anything).
#
# Sizes: 2 mm phantoms are ~180 x 140 x 120 voxels; 96^3 patches, batch 2, AMP on CUDA;
# M_0 60 epochs x 250 iterations per network, fine-tuning 20 epochs per round. Nothing of
# this was run here (no GPU was available): the duration is not measured. The round
# itself (attention, queue, strategies) is the platform's own code (alqa_core/simulator/steps.py).
#
# The report lands in OUT/run/report/report.md (rounds.csv, test_metrics.csv, dice_vs_effort.png;
# round 0 of rounds.csv is M_0) and in the catalog OUT/run/catalog, table `simulation`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-sim/gpu_campaign}
shift || true
exec .venv/bin/alqa simulate "$OUT/campaign" --out "$OUT/run" --name gpu_campaign \
    --phantoms 160 --phantom-spacing-mm 2.0 --spacing-mm 2.0 \
    --members 1 --arch unet --arch segresnet --arch dynunet --model-size full \
    --epochs 60 --finetune-epochs 20 --iterations 250 --patch 96 --device cuda \
    --strategies attention,outliers,uss,fg_random --rounds 3 --budget 150 \
    "$@"
