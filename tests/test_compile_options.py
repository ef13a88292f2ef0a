"""``--torchcompile`` and ``--channels-last`` change how the towers run, not what they compute:
the training forward's outputs and gradients match the plain model's, and the state_dict keys
(hence checkpoints and exports) are unchanged."""

from __future__ import annotations

import pytest
import torch

import lightclip
from lightclip.models.compile import compile_towers, to_channels_last

B, SIZE = 4, 32


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    data = lightclip.DataPipeline(
        "synthetic",
        batch_size=B,
        image_size=SIZE,
        threads=1,
        text=lightclip.TextConfig(context_length=32),
        reading=lightclip.ReadingConfig(num_samples=B),
    )
    return next(iter(data))


def _model(name: str = "lightclip-tiny-mnv2") -> lightclip.LightCLIP:
    model = lightclip.create_model(name, seed=0, image_size=SIZE)
    with torch.no_grad():  # make the zero-initialised fusion outputs count
        for block in model.fusion.blocks.values():
            block.attn.out_proj.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return model


def _step(model: lightclip.LightCLIP, batch: dict, images: torch.Tensor | None = None):
    model.zero_grad()
    out = model.forward_train(
        batch["image"] if images is None else images,
        batch["text"],
        masked_text=batch["masked_text"],
        mlm_labels=batch["mlm_labels"],
    )
    total = sum(
        v.float().square().mean()
        for k, v in out.items()
        if torch.is_tensor(v) and v.is_floating_point()
    )
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v for k, v in out.items() if torch.is_tensor(v)}, grads


def _assert_same(a, b, atol: float) -> None:
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert out_a.keys() == out_b.keys() and grads_a.keys() == grads_b.keys()
    for key in out_a:
        torch.testing.assert_close(out_a[key], out_b[key], atol=atol, rtol=1e-4, msg=key)
    for name in grads_a:
        scale = grads_a[name].abs().max().item() + 1e-12
        diff = (grads_a[name] - grads_b[name]).abs().max().item()
        assert diff <= atol * max(scale, 1.0), (name, diff, scale)


def test_compiled_blocks_give_the_plain_models_outputs_and_gradients(batch) -> None:
    plain, compiled = _model(), _model()
    count = compile_towers(compiled, backend="eager")  # Dynamo traces; torch runs the graphs
    # Every stage of both towers: 8 text blocks and at least the 4 image stages.
    assert count >= 12
    assert sorted(compiled.state_dict()) == sorted(plain.state_dict())
    _assert_same(_step(plain, batch), _step(compiled, batch), atol=1e-5)
    # The export of a compiled model is the plain export.
    exported = compiled.export().state_dict()
    assert all(torch.equal(v, plain.export().state_dict()[k]) for k, v in exported.items())


def test_inductor_compiles_a_text_block_to_the_same_numbers() -> None:
    model = _model()
    block = model.text.transformer.resblocks[0]
    x = torch.randn(B, 12, model.config.text_width, requires_grad=True)
    mask = model.text.attn_mask[:12, :12]
    expected = block(x, mask)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    block.compile()  # inductor: generated C++ on this CPU
    got = block(x, mask)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_got, grad_expected, atol=1e-4, rtol=1e-4)


def test_channels_last_gives_the_same_outputs_and_gradients(batch) -> None:
    plain, fast = _model(), to_channels_last(_model())
    kernels = [p for p in fast.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    images = batch["image"].contiguous(memory_format=torch.channels_last)
    # Other convolution kernels sum in another order; BatchNorm in training mode rescales that.
    _assert_same(_step(plain, batch), _step(fast, batch, images), atol=1e-3)


# --- the flags of `lightclip train` ---------------------------------------------------------


def _losses(tmp_path, name: str, **flags) -> list[float]:
    from quiet_run import quiet_config
    from train_fakes import FakePipeline

    config = quiet_config(
        tmp_path, name=name, recipe="lightclip", warmup=0, steps=3, lr=1e-2, **flags
    )
    data = FakePipeline(num_samples=12, batch_size=4)
    return [h["loss"] for h in lightclip.train(config, data=data).history]


def test_train_flags_give_the_same_loss_curve(tmp_path, monkeypatch) -> None:
    plain = _losses(tmp_path, "plain", fused_adamw=False)
    assert plain[0] != plain[-1]
    # Inductor's compile time is the inductor test's; here the flag's wiring, traced by Dynamo.
    import lightclip.models as models

    monkeypatch.setattr(
        models, "compile_towers", lambda model: compile_towers(model, backend="eager")
    )
    for name, flags in {
        "fused": dict(fused_adamw=True),
        "compiled": dict(torchcompile=True),
    }.items():
        assert _losses(tmp_path, name, **flags) == pytest.approx(plain, rel=1e-4), name
    # Channels-last convolutions sum in another order; AdamW turns the last-digit differences
    # of near-zero gradients into whole steps, so only the first loss (before any update) is
    # compared, and the trained model's kernels are checked to be channels-last.
    converted = []
    monkeypatch.setattr(models, "to_channels_last", lambda m: converted.append(to_channels_last(m)))
    losses = _losses(tmp_path, "channels-last", channels_last=True)
    assert losses[0] == pytest.approx(plain[0], rel=1e-4)
    kernels = [p for p in converted[0].parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)


def test_the_flags_parse_from_the_command_line() -> None:
    from lightclip.config import parse_args

    config = parse_args(["--torchcompile", "--channels-last", "--no-fused-adamw"])
    assert (config.torchcompile, config.channels_last, config.fused_adamw) == (True, True, False)
    assert parse_args([]).fused_adamw is None  # fused wherever torch has the kernel
