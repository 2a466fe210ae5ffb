"""The CUDA code paths, checked on the CPU where they can run: AMP choice and autocast, channels-last, device errors, the trainer's AMP switch, bench_gpu."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alqa_core.config.models import ModelSpec
from alqa_core.config.sections import InferenceConfig, TrainConfig
from alqa_core.ensemble import inference
from alqa_core.ensemble.device import resolve_device
from alqa_core.ensemble.inference import predict_probabilities, prepare_network
from alqa_core.ensemble.networks import build_network
from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable
from alqa_core.training.cases import TrainingCase
from alqa_core.training.trainer import TrainingStarted, resolve_amp, train

REPO = Path(__file__).resolve().parents[3]
TABLE = OrganTable.from_pairs([(1, "spleen"), (5, "liver")])
CUDA = torch.cuda.is_available()


def _cfg(**kw) -> InferenceConfig:
    return InferenceConfig(**{"roi_size_vox": (32, 32, 32), "sw_batch_size": 2, "roi_divisible_by": 16, "device": "cpu", **kw})


def _unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(ModelSpec("unet", "tiny", 2)).eval()


def _image(shape=(40, 36, 32), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _case(seed: int, shape=(24, 24, 24)) -> TrainingCase:
    rng = np.random.default_rng(seed)
    image = rng.normal(0.4, 0.03, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[4:12, 4:14, 6:16] = 5  # liver
    label[14:20, 12:20, 4:10] = 1  # spleen
    image[label == 5] += 0.2
    image[label == 1] += 0.3
    return TrainingCase(f"c{seed}", np.clip(image, 0, 1), label, TABLE.names)


# --------------------------------------------------------------------------- inference: AMP


def test_amp_dtype_follows_the_setting_and_the_device():
    net = _unet()
    for amp, want in (("auto", None), ("off", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        assert prepare_network(net, _cfg(amp=amp)).amp_dtype == want, amp
    # "auto" on a CUDA device: bf16 where the GPU has it, else fp16 (a decision on the device's name, nothing moves)
    want = torch.bfloat16 if CUDA and torch.cuda.is_bf16_supported() else torch.float16
    assert inference._amp_dtype("auto", torch.device("cuda")) == want
    assert inference._amp_dtype("off", torch.device("cuda")) is None
    assert inference._amp_dtype("auto", torch.device("cpu")) is None


def test_autocast_path_runs_on_the_cpu_and_stays_near_float32():
    """amp="bf16" forced on the CPU goes through the same autocast branch of the forward as CUDA's default."""
    net, img = _unet(), _image()
    ref = predict_probabilities(net, img, _cfg(amp="off"))
    out = predict_probabilities(net, img, _cfg(amp="bf16"))
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    diff = np.abs(out - ref).max()
    assert 0.0 < diff < 0.05  # the math changed (bf16), a little; stitching stayed float32


# --------------------------------------------------------------------------- inference: layout and device


def test_channels_last_is_decided_per_setting_and_leaves_results_alone():
    net, img = _unet(), _image(seed=1)
    conv = lambda p: next(m.weight for m in p.module.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)  # noqa: E731
    auto = prepare_network(net, _cfg(channels_last="auto"))  # CPU: on (oneDNN's layout)
    off = prepare_network(net, _cfg(channels_last="off"))
    on = prepare_network(net, _cfg(channels_last="on"))
    assert auto.channels_last and on.channels_last and not off.channels_last
    assert conv(auto).is_contiguous(memory_format=torch.channels_last_3d) and not conv(auto).is_contiguous()
    assert conv(off).is_contiguous()
    a, b = predict_probabilities(auto, img, _cfg()), predict_probabilities(off, img, _cfg(channels_last="off"))
    assert np.abs(a - b).max() <= 1e-5
    assert next(net.parameters()).is_contiguous()  # the caller's module is untouched


def test_devices_resolve_and_a_missing_gpu_is_named():
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert prepare_network(_unet(), _cfg()).device == torch.device("cpu")
    if CUDA:
        assert prepare_network(_unet(), _cfg(device="cuda")).device.type == "cuda"
        return
    with pytest.raises(AlqaInputError, match=r"inference.device='cuda:1' but CUDA is not available"):
        resolve_device("cuda:1", "inference.device")
    with pytest.raises(AlqaInputError, match="inference.device"):
        prepare_network(_unet(), _cfg(device="cuda"))
    with pytest.raises(AlqaInputError, match="training.device"):
        train(ModelSpec("unet", "tiny", 2), [_case(0), _case(1)], TrainConfig(device="cuda", patch_size_vox=(16, 16, 16)), TABLE, (2.0, 2.0, 2.0))


# --------------------------------------------------------------------------- training: AMP switch


def test_trainer_amp_switch_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_amp("auto", cpu) is False and resolve_amp(False, cpu) is False
    assert resolve_amp("auto", cuda) is True and resolve_amp(True, cuda) is True and resolve_amp(False, cuda) is False
    with pytest.raises(AlqaInputError, match="training.amp=true needs a CUDA device"):
        resolve_amp(True, cpu)


def test_training_on_the_cpu_runs_with_autocast_and_the_grad_scaler_disabled():
    events = []
    cfg = TrainConfig(patch_size_vox=(16, 16, 16), batch_size=2, max_epochs=1, iterations_per_epoch=2, device="auto", sw_batch_size=1)
    result = train(ModelSpec("unet", "tiny", 2), [_case(0), _case(1), _case(2)], cfg, TABLE, (2.0, 2.0, 2.0), progress=events.append)
    started = next(e for e in events if isinstance(e, TrainingStarted))
    assert started.amp is CUDA and started.device == ("cuda" if CUDA else "cpu") == result.meta.run_info["device"].split(":")[0]
    assert result.meta.run_info["amp"] is CUDA
    assert all(np.isfinite(r.train_loss) for r in result.history)


# --------------------------------------------------------------------------- benchmarks/bench_gpu.py


def _bench_gpu(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=900)


@pytest.mark.skipif(CUDA, reason="checks the message printed where no GPU is")
def test_bench_gpu_without_a_gpu_says_so_and_exits_0():
    out = _bench_gpu()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "No CUDA GPU is available here" in out.stdout and "nothing measured" in out.stdout


@pytest.mark.slow
def test_bench_gpu_smoke_runs_every_part_on_the_cpu():
    out = _bench_gpu("--device", "cpu", "--tiny")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for part in ("== 1. inference", "== 2. one fine-tuning round", "== 3. attention", "== projection"):
        assert part in out.stdout, part
    assert "bits equal: True" in out.stdout
    assert "8448 cases x 3 members" in out.stdout
