"""Does the QA loss help? Fine-tune one parent with and without it on tiny 5 mm phantoms (issue 5 item 4).

Run: ``.venv/bin/python benchmarks/bench_qa_loss.py`` (about 4-5 minutes on 2 shared cores, 1 thread).
Options: ``--seeds 0 1`` (fine-tune seeds; the parent, the regressor and the data stay fixed),
``--weights 0.1 1.0`` (one QA fine-tune per weight; default 0.1), ``--no-placebo``, ``--lr``
(default: the fine-tuning lr 1e-4), ``--epochs``, ``--iterations``, ``--all-organs`` (all 9 organs).

The experiment, after 001_e60473b22d13ca03.txt (labeled cases through the
Dice loss, QA-graded unlabeled cases through a frozen ResNet-18 on montages):

1. phantoms at 5 mm, preprocessed like the platform does, scored on the 5
   organs a tiny U-Net learns within the budget at 5 mm (spleen, kidneys,
   liver, stomach; the others become background): ``labeled`` cases
   (full ground truth) train the parent, one of them validates; ``unlabeled``
   cases have no labels for segmentation; ``test`` cases are held out;
2. a tiny U-Net parent is trained from scratch on the labeled cases;
3. a tiny ResNet-18 QA regressor is trained (split by case) on montages of
   the unlabeled cases' predictions: the parent's soft prediction and
   deliberately degraded masks (eroded, dilated, shifted, organs dropped or
   swapped, blurred), each graded as a reviewer would from its mean Dice
   against the ground truth (:func:`alqa_core.simulator.oracle.grade_from_dice`:
   2 below 0.5, 1 below 0.8, else 0). Montages come from the same
   differentiable function the loss uses, so train and use see one layout;
4. from the same parent, the same seed and the same steps: a baseline
   fine-tune (masked Dice + BCE on the labeled cases) and a QA fine-tune
   (the same + ``weight`` x the frozen regressor's MSE-to-0 on one unlabeled
   case per step), one epoch each so the best-epoch rule keeps the last
   weights of every run, and a placebo QA fine-tune: the same term with a regressor
   that learned nothing (random weights, bias at the mean grade), which tells
   whether a gain comes from what the regressor knows or from any extra
   gradient at all;
5. held-out Dice per organ for the parent and both fine-tunes, the QA/baseline
   ratio, a paired Wilcoxon test over test cases, the oracle's grades and the
   regressor's own grades of the test predictions (a QA loss that fools its
   regressor lowers the predicted grade without raising Dice).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_dice
from scipy import ndimage, stats

from alqa_core.config.models import ModelSpec
from alqa_core.config.sections import PreprocessConfig, QALossConfig, QARegressorConfig, TrainConfig
from alqa_core.ensemble.checkpoint import save_checkpoint
from alqa_core.ingest.preprocess import preprocess_ct, preprocess_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE, OrganTable
from alqa_core.phantoms.generate import PhantomSpec, generate_case
from alqa_core.qa.regressor import build_qa_regressor, save_qa_regressor, score_montages, train_qa_regressor
from alqa_core.simulator.oracle import grade_from_dice
from alqa_core.training.cases import TrainingCase, one_hot_organs
from alqa_core.training.qa_loss import UnlabeledCase, build_qa_loss, qa_montage_tensor
from alqa_core.training.trainer import train
from alqa_core.training.validation import predict_logits

LARGE_ORGANS = ("spleen", "kidney_right", "kidney_left", "liver", "stomach")
TABLE = OrganTable.from_pairs((DEFAULT_ORGAN_TABLE.value_of(n), n) for n in LARGE_ORGANS)  # --all-organs: the default table
SPACING_MM = (5.0, 5.0, 5.0)
PATCH_VOX = (32, 32, 32)
MONTAGE_PX = 128
MONTAGE_SLICES = 16
LABELED_SEEDS = (100, 101, 102, 103)  # the last one validates
UNLABELED_SEEDS = tuple(range(200, 208))
TEST_SEEDS = tuple(range(300, 306))


# ---------------------------------------------------------------- data


def phantom(seed: int, prefix: str) -> TrainingCase:
    """A fully labeled case on TABLE's organs (other organs' voxels are background)."""
    case = generate_case(PhantomSpec(seed, spacing_mm=SPACING_MM))
    pre = preprocess_ct(case.ct, PreprocessConfig(spacing_mm=SPACING_MM))
    label = preprocess_label(case.labels, pre.record)
    label = np.where(np.isin(label, TABLE.values), label, 0).astype(np.uint8)
    return TrainingCase(f"{prefix}{seed}", np.ascontiguousarray(pre.array), label, TABLE.names)


def probabilities(network, case: TrainingCase) -> np.ndarray:
    return torch.sigmoid(predict_logits(network, case.image, PATCH_VOX, torch.device("cpu")))[0].numpy()


def dice_per_organ(prob: np.ndarray, case: TrainingCase) -> np.ndarray:
    """(C,) Dice of ``prob > 0.5`` per organ; NaN where the organ is absent from the ground truth."""
    pred = torch.from_numpy(prob > 0.5).float()[None]
    truth = torch.from_numpy(one_hot_organs(np.asarray(case.label), TABLE))[None]
    return compute_dice(pred, truth, include_background=True, ignore_empty=True)[0].numpy()


def grade(prob: np.ndarray, case: TrainingCase) -> int:
    return grade_from_dice(float(np.nanmean(dice_per_organ(prob, case))))


def montage_u8(image: np.ndarray, prob: np.ndarray) -> np.ndarray:
    m = qa_montage_tensor(torch.from_numpy(np.array(image)), torch.from_numpy(prob), TABLE, MONTAGE_PX, MONTAGE_SLICES, via_px=None)
    return np.rint(m.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)


def degraded(case: TrainingCase, parent_prob: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Predictions of known quality for one case: (C, i, j, k) probabilities."""
    truth = one_hot_organs(np.asarray(case.label), TABLE)
    ball = ndimage.generate_binary_structure(3, 1)
    per_organ = lambda f: np.stack([f(t > 0.5) for t in truth]).astype(np.float32)  # noqa: E731
    shift = lambda a, d: np.roll(a, d, axis=(1, 2))  # noqa: E731
    keep = rng.random(len(TABLE)) < 0.5
    swap = rng.permutation(len(TABLE))
    return {
        "truth": truth,
        "blur": ndimage.gaussian_filter(truth, (0, 1.0, 1.0, 1.0)),
        "erode1": per_organ(lambda m: ndimage.binary_erosion(m, ball)),
        "dilate2": per_organ(lambda m: ndimage.binary_dilation(m, ball, iterations=2)),
        "shift2": shift(truth, (2, -2)),
        "shift5": shift(truth, (5, 4)),
        "drop_half": truth * keep[:, None, None, None],
        "swap": truth[swap],
        "parent": parent_prob,
        "parent_shift3": shift(parent_prob, (3, 0)),
        "parent_dilate": ndimage.grey_dilation(parent_prob, size=(1, 3, 3, 3)),
    }


# ---------------------------------------------------------------- runs


def finetune(parent: Path, cases, val_id: str, args, seed: int, extra_loss=None):
    cfg = TrainConfig(
        patch_size_vox=PATCH_VOX,
        batch_size=2,
        max_epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        lr=args.lr,
        val_case_ids=(val_id,),
        patience=args.epochs + 1,
        seed=seed,
        device="cpu",
        num_threads=1,
    )
    spec = ModelSpec("unet", "tiny", len(TABLE))
    return train(spec, cases, cfg, TABLE, SPACING_MM, parent=parent, extra_loss=extra_loss)


def evaluate(network, test_cases, regressor, unlabeled) -> dict:
    """Dice (cases x organs), oracle and regressor grades on the test cases; regressor grades on the unlabeled ones."""
    dice, grades, montages = [], [], []
    for case in test_cases:
        prob = probabilities(network, case)
        dice.append(dice_per_organ(prob, case))
        grades.append(grade(prob, case))
        montages.append(montage_u8(case.image, prob))
    seen = [montage_u8(c.image, probabilities(network, c)) for c in unlabeled]
    return {
        "dice": np.stack(dice),
        "oracle": grades,
        "reg_test": float(np.mean(score_montages(regressor, montages))),
        "reg_unlabeled": float(np.mean(score_montages(regressor, seen))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.1])
    parser.add_argument("--no-placebo", dest="placebo", action="store_false", help="skip the untrained-regressor control")
    parser.add_argument("--lr", type=float, default=None, help="fine-tuning lr (default 1e-4)")
    # one epoch: the best-epoch rule then keeps the last weights of every run, so runs differ only by the QA term
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--parent-epochs", type=int, default=16)
    parser.add_argument("--parent-iterations", type=int, default=25)
    parser.add_argument("--parent-lr", type=float, default=3e-3)
    parser.add_argument("--all-organs", action="store_true")
    args = parser.parse_args()
    if args.all_organs:
        global TABLE
        TABLE = DEFAULT_ORGAN_TABLE
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    clock = lambda: f"[{time.perf_counter() - t_start:6.1f} s]"  # noqa: E731

    labeled = [phantom(s, "lab") for s in LABELED_SEEDS]
    unlabeled = [phantom(s, "unl") for s in UNLABELED_SEEDS]
    test = [phantom(s, "test") for s in TEST_SEEDS]
    val_id = labeled[-1].case_id
    print(f"{clock()} phantoms at {SPACING_MM[0]:g} mm: {len(labeled)} labeled (1 validates), {len(unlabeled)} unlabeled, "
          f"{len(test)} test; volumes {labeled[0].image.shape}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = ModelSpec("unet", "tiny", len(TABLE))
        parent_cfg = TrainConfig(
            patch_size_vox=PATCH_VOX, batch_size=2, max_epochs=args.parent_epochs, iterations_per_epoch=args.parent_iterations,
            lr=args.parent_lr, val_case_ids=(val_id,), patience=args.parent_epochs + 1, seed=0, device="cpu", num_threads=1,
        )
        parent = train(spec, labeled, parent_cfg, TABLE, SPACING_MM)
        parent_path = save_checkpoint(tmp / "parent.pt", parent.network, parent.meta)
        print(f"{clock()} parent: {len(parent.history)} epochs x {args.parent_iterations} steps, val Dice {parent.meta.val_metrics['dice_mean']:.3f}")

        rng = np.random.default_rng(0)
        montages, grades = [], []
        for case in unlabeled:
            for name, prob in degraded(case, probabilities(parent.network, case), rng).items():
                montages.append((case.case_id, montage_u8(case.image, prob)))
                grades.append(float(grade(prob, case)))
        counts = np.bincount(np.asarray(grades, dtype=int), minlength=3)
        reg_cfg = QARegressorConfig(epochs=20, lr=1e-3, batch_size=16, widen_factor=0.25, input_px=MONTAGE_PX, num_threads=1, val_fraction=0.25)
        reg = train_qa_regressor(montages, grades, reg_cfg)
        with torch.random.fork_rng():
            torch.manual_seed(1)
            placebo = build_qa_regressor(reg_cfg)
            with torch.no_grad():
                placebo.fc.bias.fill_(float(np.mean(grades)))
        reg_path = save_qa_regressor(tmp / "qa_regressor.pt", reg)
        print(f"{clock()} QA regressor: {len(montages)} montages (grades 0/1/2: {counts.tolist()}), split by case; "
              f"val MSE {reg.val_mse:.3f} vs {reg.baseline_val_mse:.3f} for predicting the mean (epoch {reg.best_epoch})")

        evaluate_ = lambda network: evaluate(network, test, reg.network, unlabeled)  # noqa: E731
        parent_eval = evaluate_(parent.network)
        unlabeled_cases = [UnlabeledCase(c.case_id, c.image) for c in unlabeled]
        for seed in args.seeds:
            t0 = time.perf_counter()
            base = finetune(parent_path, labeled, val_id, args, seed)
            runs = [("baseline", evaluate_(base.network))]
            print(f"{clock()} seed {seed}: baseline fine-tune {time.perf_counter() - t0:.1f} s, best epoch {base.best_epoch}")
            variants = [(f"QA w={w:g}", w, reg_path) for w in args.weights]
            variants += [(f"placebo w={w:g}", w, placebo) for w in args.weights[:1] if args.placebo]
            for name, weight, regressor in variants:
                t0 = time.perf_counter()
                cfg = QALossConfig(
                    weight=weight, regressor=regressor, montage_slices=MONTAGE_SLICES, montage_px=MONTAGE_PX, via_px=None, seed=seed
                )
                qa = finetune(parent_path, labeled, val_id, args, seed, extra_loss=build_qa_loss(cfg, unlabeled_cases, TABLE))
                runs.append((name, evaluate_(qa.network)))
                terms = [round(r.extra_loss, 3) for r in qa.history]
                print(f"{clock()} seed {seed}: {name} fine-tune {time.perf_counter() - t0:.1f} s, "
                      f"QA term per epoch {terms}, best epoch {qa.best_epoch}")
            report(parent_eval, runs, args, seed)
    print(f"{clock()} total")


def _mean(a: np.ndarray) -> float:
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def report(parent_eval: dict, runs: list[tuple[str, dict]], args, seed: int) -> None:
    lr = args.lr if args.lr is not None else 1e-4
    base = runs[0][1]
    print(f"\nseed {seed}: held-out Dice per organ, {len(base['oracle'])} test cases "
          f"(fine-tunes from the same parent: {args.epochs} epochs x {args.iterations} steps, lr {lr:g}, best epoch kept)")
    print(f"{'organ':<20}{'parent':>8}{'baseline':>10}" + "".join(f"{name:>16}{'/base':>7}" for name, _ in runs[1:]))
    for c, name in enumerate(list(TABLE.names) + ["mean"]):
        pick = (lambda d: d) if name == "mean" else (lambda d, c=c: d[:, c])
        b = _mean(pick(base["dice"]))
        row = f"{name:<20}{_mean(pick(parent_eval['dice'])):8.3f}{b:10.3f}"
        for _, ev in runs[1:]:
            q = _mean(pick(ev["dice"]))
            row += f"{q:16.3f}{(q / b if b > 0 else math.nan):7.3f}"
        print(row)
    print(f"\n{'model':<16}{'oracle grades (test)':>26}{'regressor grade: test':>23}{'unlabeled':>11}{'QA-base per-case Dice':>24}{'better':>8}{'Wilcoxon p':>12}")
    base_case = np.nanmean(base["dice"], axis=1)
    for name, ev in [("parent", parent_eval)] + runs:
        row = f"{name:<16}{str(ev['oracle']):>26}{ev['reg_test']:23.3f}{ev['reg_unlabeled']:11.3f}"
        if name not in ("parent", "baseline"):
            diff = np.nanmean(ev["dice"], axis=1) - base_case
            p = stats.wilcoxon(diff).pvalue if np.any(diff != 0) else 1.0
            row += f"{diff.mean():+24.4f}{f'{int((diff > 0).sum())}/{len(diff)}':>8}{p:12.3f}"
        print(row)
    print()


if __name__ == "__main__":
    main()
