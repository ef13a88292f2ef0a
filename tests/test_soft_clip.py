"""L_ins, `lightclip.losses.SoftClipLoss` (python/lightclip/losses/soft_clip.py, distributed.py).

Hard labels must give exactly open_clip's ClipLoss (re-written here in a few lines of torch);
soft phases must equal soft cross-entropy against independently built targets; gradients are
finite; and two gloo processes on CPU, each holding half the batch, must reproduce the
single-process loss (and gradients) on the whole batch, for SigLIP's loss too (whose other
checks are in test_siglip.py).
"""

from __future__ import annotations

import datetime
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import lightclip
from lightclip.losses import SigLipLoss, SoftClipLoss

# --- references ----------------------------------------------------------------------------------


def clip_loss_reference(f: torch.Tensor, g: torch.Tensor, scale) -> torch.Tensor:
    """open_clip's ClipLoss (single process): CE over rows of z and of zᵀ with arange labels."""
    logits_per_image = scale * f @ g.T
    logits_per_text = scale * g @ f.T
    labels = torch.arange(f.shape[0])
    return (
        F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
    ) / 2


def soft_loss_reference(f, g, scale, progress, alpha=0.2, r1=0.33, r2=0.66) -> torch.Tensor:
    """Targets by hand (masked softmax for W), soft CE via torch's probability-target CE."""
    z = scale * f @ g.T
    n = z.shape[0]
    eye = torch.eye(n, dtype=z.dtype)
    if progress < r1 or n == 1:
        y_i2t = y_t2i = eye
    elif progress < r2:
        y_i2t = y_t2i = (1 - alpha) * eye + alpha / (n - 1) * (1 - eye)
    else:
        masked = z.detach().masked_fill(eye.bool(), float("-inf"))
        y_i2t = (1 - alpha) * eye + alpha * masked.softmax(dim=1)
        y_t2i = (1 - alpha) * eye + alpha * masked.softmax(dim=0).T
    return (F.cross_entropy(z, y_i2t) + F.cross_entropy(z.T, y_t2i)) / 2


def features(n: int, d: int = 16, seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
    g = F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
    return f.to(dtype), g.to(dtype)


# --- single process ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 8, 33])
def test_hard_labels_equal_clip_loss_with_gradients(n) -> None:
    f, g = features(n, seed=n)
    scale = torch.tensor(14.285714, dtype=torch.float64)
    f1, g1, s1 = (t.clone().requires_grad_(True) for t in (f, g, scale))
    f2, g2, s2 = (t.clone().requires_grad_(True) for t in (f, g, scale))
    ours = SoftClipLoss()(f1, g1, s1, 0.1)
    ref = clip_loss_reference(f2, g2, s2)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    ours.backward()
    ref.backward()
    for a, b in ((f1, f2), (g1, g2), (s1, s2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("progress", [0.0, 0.4, 0.7, 1.0])
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5])
def test_soft_phases_equal_the_reference_loss(progress, alpha) -> None:
    f, g = features(10, seed=3)
    schedule = lightclip.LabelSchedule(alpha=alpha)
    f1, g1 = f.clone().requires_grad_(True), g.clone().requires_grad_(True)
    f2, g2 = f.clone().requires_grad_(True), g.clone().requires_grad_(True)
    ours = SoftClipLoss(schedule)(f1, g1, 20.0, progress)
    ref = soft_loss_reference(f2, g2, 20.0, progress, alpha=alpha)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    ours.backward()
    ref.backward()  # the reference also detaches the targets: gradients must agree too
    torch.testing.assert_close(f1.grad, f2.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(g1.grad, g2.grad, atol=1e-12, rtol=0)


def test_softening_changes_the_loss_and_the_ramp_interpolates() -> None:
    f, g = features(16, seed=9)
    hard = SoftClipLoss()(f, g, 30.0, 0.0)
    smooth = SoftClipLoss()(f, g, 30.0, 0.5)
    assert not torch.isclose(hard, smooth)
    ramped = SoftClipLoss(lightclip.LabelSchedule(ramp=True))(f, g, 30.0, 0.33)
    assert min(hard, smooth) < ramped < max(hard, smooth)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("progress", [0.1, 0.5, 0.9])
def test_gradients_are_finite_in_low_precision(dtype, progress) -> None:
    f, g = features(64, seed=1, dtype=dtype)
    f.requires_grad_(True)
    g.requires_grad_(True)
    scale = torch.tensor(100.0, dtype=dtype, requires_grad=True)
    loss = SoftClipLoss()(f, g, scale, progress)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for t in (f, g, scale):
        assert torch.isfinite(t.grad).all()
    ref = soft_loss_reference(f.detach().double(), g.detach().double(), 100.0, progress)
    torch.testing.assert_close(loss.double(), ref, atol=0.05, rtol=0.02)


def test_mismatched_features_are_value_errors() -> None:
    loss = SoftClipLoss()
    with pytest.raises(ValueError, match="invalid `text_features`"):
        loss(torch.randn(4, 8), torch.randn(5, 8), 10.0, 0.5)
    with pytest.raises(ValueError, match="invalid `image_features`: must be"):
        loss(torch.randn(4), torch.randn(4), 10.0, 0.5)
    with pytest.raises(ValueError, match="invalid `progress`"):
        loss(torch.randn(4, 8), torch.randn(4, 8), 10.0, 1.5)


# --- two gloo processes --------------------------------------------------------------------------

WORLD = 2
GLOBAL_N = 12
PROGRESSES = (0.1, 0.5, 0.9)
OPTIONS = [(False, False), (False, True), (True, False), (True, True)]
# Sized for a machine busy with other work (`make test` beside a training run), where a
# spawned rank may take minutes to import torch and reach the rendezvous or a collective.
RANK_TIMEOUT = datetime.timedelta(minutes=10)
JOIN_TIMEOUT_S = 15 * 60


def _distributed_worker(rank: int, init_method: str, out_path: str) -> None:
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=WORLD, timeout=RANK_TIMEOUT
    )
    try:
        torch.set_num_threads(1)
        f, g = features(GLOBAL_N, seed=42)
        n = GLOBAL_N // WORLD
        results = {}
        for local_loss, with_grad in OPTIONS:
            for p in PROGRESSES:
                fl = f[rank * n : (rank + 1) * n].clone().requires_grad_(True)
                gl = g[rank * n : (rank + 1) * n].clone().requires_grad_(True)
                loss_fn = SoftClipLoss(local_loss=local_loss, gather_with_grad=with_grad)
                loss = loss_fn(fl, gl, 25.0, p)
                loss.backward()
                results[(local_loss, with_grad, p)] = (loss.detach(), fl.grad, gl.grad)
        fl = f[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        gl = g[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        loss = SigLipLoss()(fl, gl, 10.0, -4.0)
        loss.backward()
        results["siglip"] = (loss.detach(), fl.grad, gl.grad)
        gathered = [None] * WORLD
        dist.all_gather_object(gathered, results)
        if rank == 0:
            torch.save(gathered, out_path)
        # No rank tears its group down while the other may still talk to it: a rank that
        # leaves first can make gloo abort the slower one ("terminate called ...").
        dist.barrier()
    finally:
        # After a failure without the barrier: the other rank may be gone.
        dist.destroy_process_group()


def _spawn_and_join(worker, args: tuple, nprocs: int) -> None:
    """``mp.spawn`` with a deadline: a hung rank fails the test instead of hanging the suite."""
    ranks = mp.spawn(worker, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not ranks.join(timeout=5):  # raises if a rank failed
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail(f"{nprocs} gloo ranks did not finish within {JOIN_TIMEOUT_S} s")


@pytest.mark.slow
def test_two_gloo_ranks_reproduce_the_single_process_loss(tmp_path) -> None:
    out = tmp_path / "results.pt"
    # A file rendezvous needs no port, so no other process can take it first.
    init = f"file://{tmp_path / 'rendezvous'}"
    _spawn_and_join(_distributed_worker, (init, str(out)), WORLD)
    per_rank = torch.load(out, weights_only=False)

    f, g = features(GLOBAL_N, seed=42)
    n = GLOBAL_N // WORLD
    for p in PROGRESSES:
        fg, gg = f.clone().requires_grad_(True), g.clone().requires_grad_(True)
        full = SoftClipLoss()(fg, gg, 25.0, p)
        full.backward()
        torch.testing.assert_close(full.detach(), soft_loss_reference(f, g, 25.0, p))
        for local_loss, with_grad in OPTIONS:
            losses = [per_rank[r][(local_loss, with_grad, p)][0] for r in range(WORLD)]
            if local_loss:
                # Each rank holds its own rows; their mean is the global loss.
                torch.testing.assert_close(sum(losses) / WORLD, full.detach())
            else:
                for loss in losses:
                    torch.testing.assert_close(loss, full.detach())
            if local_loss and not with_grad:
                continue  # open_clip's cheap option: local gradients only, no simple reference
            # With the gather in the graph, every rank's loss reaches every rank's features:
            # the gradient sums over ranks (world × the global one). Without it, the local
            # features see exactly the global loss's gradient.
            factor = WORLD if with_grad else 1
            for r in range(WORLD):
                _, grad_f, grad_g = per_rank[r][(local_loss, with_grad, p)]
                rows = slice(r * n, (r + 1) * n)
                torch.testing.assert_close(grad_f, factor * fg.grad[rows])
                torch.testing.assert_close(grad_g, factor * gg.grad[rows])
    # SigLIP: each rank its own images' rows against every text (gathered with gradients), so
    # the ranks' mean is the global loss and each rank's gradients world × the global ones.
    fg, gg = f.clone().requires_grad_(True), g.clone().requires_grad_(True)
    full = SigLipLoss()(fg, gg, 10.0, -4.0)
    full.backward()
    losses = [per_rank[r]["siglip"][0] for r in range(WORLD)]
    torch.testing.assert_close(sum(losses) / WORLD, full.detach())
    for r in range(WORLD):
        _, grad_f, grad_g = per_rank[r]["siglip"]
        rows = slice(r * n, (r + 1) * n)
        torch.testing.assert_close(grad_f, WORLD * fg.grad[rows])
        torch.testing.assert_close(grad_g, WORLD * gg.grad[rows])
