"""The GPU path: CUDA tensors through the Rust core, the towers and the training loop on CUDA.

Skipped without a CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/test_cuda.py``. The references are the same computations on the
CPU, in fp32 with TF32 off, so a difference is the device path's, not precision's.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lightclip
from lightclip.checkpoint import load_checkpoint, model_state
from lightclip.losses import TokenAlignmentLoss
from quiet_run import quiet_config
from train_fakes import FakePipeline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY_SWIN = dict(
    image_tower="swin",
    image_size=64,
    swin_embed_dim=16,
    swin_depths=[1, 1, 1, 1],
    swin_heads=[1, 2, 2, 4],
    window_size=2,
)
MODELS = {
    "mnv2": ("lightclip-tiny-mnv2", {}),
    "r18": ("lightclip-tiny-r18", {}),
    "swin": ("lightclip-tiny-r18", TINY_SWIN),
}


@pytest.fixture
def exact_fp32():
    """TF32 off, so CUDA fp32 matches the CPU to fp32 rounding."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_token_alignment_loss_on_cuda_equals_the_cpu_loss():
    gen = torch.Generator().manual_seed(1)
    image = F.normalize(torch.randn(16, 49, 32, generator=gen), dim=-1)
    words = F.normalize(torch.randn(16, 30, 32, generator=gen), dim=-1)
    lengths = torch.randint(1, 31, (16,), generator=gen)
    loss_fn = TokenAlignmentLoss()
    cpu = loss_fn(image, words, lengths)
    gpu_image = image.cuda().requires_grad_()
    gpu = loss_fn(gpu_image, words.cuda(), lengths.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
    gpu.backward()
    assert gpu_image.grad is not None and torch.isfinite(gpu_image.grad).all()


@pytest.mark.parametrize("tower", list(MODELS))
def test_each_tower_computes_on_cuda_what_it_computes_on_the_cpu(tower, exact_fp32):
    name, overrides = MODELS[tower]
    model = lightclip.create_model(name, seed=0, **overrides).eval()
    gpu_model = copy.deepcopy(model).cuda()
    size = model.config.image_size
    images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(2))
    text = lightclip.tokenize(["a dog runs", "two people on a bench", "red", ""])
    text = text[:, : model.config.context_length]
    masked = text.clone()
    masked[:, 2] = lightclip.MASK_TOKEN
    with torch.no_grad():
        cpu = model(images, text, masked_text=masked)
        gpu = gpu_model(images.cuda(), text.cuda(), masked_text=masked.cuda())
    for key, value in cpu.items():
        if value is None:
            assert gpu[key] is None, key
            continue
        assert gpu[key].is_cuda, key
        torch.testing.assert_close(gpu[key].cpu(), value, atol=2e-4, rtol=1e-3, msg=key)


def _train(tmp_path: Path, name: str, on_step=None, **overrides) -> lightclip.TrainResult:
    defaults = dict(steps=4, batch_size=8, name=name, warmup=1, lr=1e-3, device="cuda")
    config = quiet_config(tmp_path, **{**defaults, **overrides})
    return lightclip.train(
        config,
        data=FakePipeline(num_samples=32, batch_size=8),
        on_step=on_step,
    )


@pytest.mark.parametrize("precision", ["fp32", "amp", "amp_bf16", "bf16"])
def test_training_on_cuda_runs_every_precision_with_finite_losses(tmp_path, precision):
    # Clipping makes the fp16 run unscale its gradients through the GradScaler first.
    # fp16 gets more steps: its GradScaler starts at 2**16 and skips the steps whose
    # gradients overflow (their norm is inf/nan) while it backs off.
    steps = 12 if precision == "amp" else 4
    result = _train(tmp_path, precision, precision=precision, grad_clip_norm=1.0, steps=steps)
    assert result.step == steps and len(result.history) == steps
    for row in result.history:
        for key in ("loss", "loss_ins", "loss_tok", "loss_mlm"):
            assert math.isfinite(row[key]), (precision, row)
    norms = [math.isfinite(row["grad_norm"]) for row in result.history]
    assert norms[-1] if precision == "amp" else all(norms), (precision, result.history)
    state = model_state(load_checkpoint(result.checkpoint, map_location="cpu"))
    weights = [v for v in state.values() if v.is_floating_point()]
    assert weights and all(torch.isfinite(w).all() for w in weights)


def test_a_cuda_run_interrupted_and_resumed_continues_the_same_curve(tmp_path, exact_fp32):
    straight = _train(tmp_path, "straight")

    def press_ctrl_c(step: int, _metrics: dict) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, handled by the loop

    first = _train(tmp_path, "split", on_step=press_ctrl_c)
    assert first.interrupted and first.step == 2
    resumed = _train(tmp_path, "split", resume="latest")
    assert [h["step"] for h in resumed.history] == [3, 4]
    for a, b in zip(straight.history, first.history + resumed.history, strict=True):
        # cuDNN's and atomics' summation order may differ from run to run on the GPU.
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3), (a, b)


class PinnedFakePipeline(FakePipeline):
    """The fake's batches in pinned memory, as DataPipeline hands them to a CUDA run: a copy
    from pageable memory makes the host wait too."""

    def __iter__(self):
        for batch in super().__iter__():
            yield {k: v.pin_memory() for k, v in batch.items()}


def _host_waits(tmp_path: Path, name: str, steps: int, on_step=None, **overrides) -> int:
    """How often a clip-recipe CUDA run made the host wait for the GPU from Python (CUDA's
    sync debug mode warns at each such call: .item(), float(), .cpu(), ...). One epoch is
    16 steps, so runs of up to 16 steps differ only in their steps."""
    config = quiet_config(
        tmp_path,
        name=name,
        steps=steps,
        batch_size=8,
        device="cuda",
        recipe="clip",
        precision="amp_bf16",
        log_every_n_steps=100,
        **overrides,
    )
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = PinnedFakePipeline(num_samples=128, batch_size=8)
            lightclip.train(config, data=data, on_step=on_step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_the_loop_reads_metrics_off_the_gpu_only_when_they_are_needed(tmp_path):
    # Between log rows a step makes the host wait for the GPU once: the model's read of the
    # batch's ids (checked_eot), no float(loss). Setup and the final save cost runs of 4 and
    # 8 steps the same, so 4 more steps may add 4 waits. A hook reads every step's metrics
    # as well, so its runs add twice as many: proof that the count can fail.
    def extra_waits(name: str, on_step=None, **overrides) -> int:
        short = _host_waits(tmp_path, f"{name}-4", steps=4, on_step=on_step, **overrides)
        return _host_waits(tmp_path, f"{name}-8", steps=8, on_step=on_step, **overrides) - short

    assert extra_waits("hooked", on_step=lambda *_: None) >= 8
    assert extra_waits("quiet") <= 4
    assert extra_waits("averaged", model_ema=True) <= 4  # the weight average waits for nothing


def test_a_cuda_run_records_the_gpu_and_its_libraries():
    from lightclip.machine import describe_machine, machine_label

    machine = describe_machine("cuda:0")
    assert machine["device"] == torch.cuda.get_device_name(0) != "cuda"
    assert machine["cudnn"] == torch.backends.cudnn.version()
    assert describe_machine() == machine  # the default is where "auto" trains
    assert f", {machine['device']}, cuDNN {machine['cudnn']}, " in machine_label(machine)
