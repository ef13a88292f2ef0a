"""Export to open_clip: our export, loaded by open_clip itself (open-clip-torch 3.3.0 with timm,
installed from the registry), must give lightclip's embeddings within fp32 tolerance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lightclip
from lightclip.openclip_export import (
    ExportError,
    export_openclip,
    load_openclip,
    openclip_config,
)

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("timm")

if not hasattr(lightclip, "create_model"):
    pytest.skip("lightclip.create_model not available yet", allow_module_level=True)


def randomise_batch_norm(model: torch.nn.Module, seed: int) -> None:
    """Fresh BN layers are identities in eval mode; random statistics make them count."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))


#: The text tower maps the same at any size; a narrow one keeps the 224-px cases fast.
SMALL_TEXT = {"text_width": 64, "text_heads": 2, "context_length": 32}


def make_model(name: str) -> lightclip.models.LightCLIP:
    small = {} if "tiny" in name else SMALL_TEXT
    model = lightclip.create_model(name, seed=0, **small)
    randomise_batch_norm(model, 1)
    with torch.no_grad():
        model.logit_scale.fill_(3.3)
    return model.eval()


def token_ids(context_length: int) -> torch.Tensor:
    texts = ["a dog runs on the grass .", "two children play at the beach", "red"]
    return open_clip.tokenize(texts, context_length=context_length)


def assert_close_fp32(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to fp32 rounding, relative to the tensor's scale: the two models sum the same
    products in a different order (fused vs separate q/k/v, other conv algorithms), so single
    elements near zero can differ by more than a per-element rtol allows."""
    assert got.shape == want.shape
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    assert err <= 1e-5 * scale + 1e-7, f"max error {err:.3g} at scale {scale:.3g}"


def assert_same_embeddings(ours, theirs, image_size: int, context_length: int) -> None:
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, image_size, image_size, generator=gen)
    ids = token_ids(context_length)
    with torch.no_grad():
        pairs = [
            (theirs.encode_image(images), ours.encode_image(images)),
            (theirs.encode_text(ids), ours.encode_text(ids)),
        ]
    for got, want in pairs:
        assert_close_fp32(got, want)
        assert_close_fp32(F.normalize(got, dim=-1), F.normalize(want, dim=-1))
    assert float(theirs.logit_scale.detach()) == pytest.approx(float(ours.logit_scale.detach()))


@pytest.mark.parametrize(
    "name",
    ["lightclip-tiny-mnv2", "clip-tiny-r18", "clip-mnv2", "clip-r18", "clip-swin-nano"],
)
def test_open_clip_round_trip(name, tmp_path):
    model = make_model(name)
    export_openclip(model, tmp_path)
    oc_model, _, preprocess = load_openclip(tmp_path)
    oc_model.eval()
    assert type(oc_model).__name__ == "CLIP"
    cfg = model.config
    assert_same_embeddings(model, oc_model, cfg.image_size, cfg.context_length)
    # training-only modules are gone; the export has exactly the inference parameters
    plain = model.export()
    assert sum(p.numel() for p in oc_model.parameters()) == sum(
        p.numel() for p in plain.parameters()
    )


def test_stock_towers_need_no_plugin():
    """224-px MobileNet-V2 / ResNet-18 (and MobileNet-V2 at any size) name timm's own models,
    so plain open_clip loads them; the round trip above proves the weights."""
    timm_mobilenet = {1.0: "mobilenetv2_100", 0.75: "mobilenetv2_075", 0.5: "mobilenetv2_050"}
    for name in ("clip-mnv2", "clip-r18", "clip-tiny-mnv2"):
        cfg = lightclip.create_model(name, **SMALL_TEXT).config
        config = openclip_config(cfg)
        assert "lightclip_timm_plugin" not in config
        want = "resnet18" if cfg.image_tower == "resnet18" else timm_mobilenet[cfg.width_mult]
        assert config["model_cfg"]["vision_cfg"]["timm_model_name"] == want
    config = openclip_config(lightclip.create_model("clip-tiny-r18").config)
    assert config["lightclip_timm_plugin"]["pool_size"] == 2


def test_pretrained_file_route_in_plain_open_clip(tmp_path):
    """open_clip.add_model_config(<name>.json) + pretrained=<weights file>, no lightclip code."""
    model = make_model("clip-tiny-mnv2")
    export_openclip(model, tmp_path)
    open_clip.add_model_config(tmp_path / "clip-tiny-mnv2.json")
    oc_model, _, _ = open_clip.create_model_and_transforms(
        "clip-tiny-mnv2", pretrained=str(tmp_path / "open_clip_model.safetensors")
    )
    assert_same_embeddings(model, oc_model.eval(), 64, 32)


def test_config_records_preprocessing_and_tokens():
    cfg = lightclip.create_model("clip-tiny-mnv2").config
    config = openclip_config(cfg)
    text = config["model_cfg"]["text_cfg"]
    assert text["vocab_size"] == 49409 and text["pool_type"] == "eos" and text["eos_id"] == 49407
    assert text["context_length"] == 32
    assert config["preprocess_cfg"]["size"] == 64
    assert config["lightclip_config"]["name"] == "clip-tiny-mnv2"


def test_towers_open_clip_cannot_express_are_refused_with_the_reason():
    with pytest.raises(ExportError, match=r"stage maps \[16, 8, 4, 2\].*window 7"):
        openclip_config(lightclip.create_model("clip-swin-nano", image_size=64).config)
    with pytest.raises(ExportError, match="head_width=768 has no timm model"):
        openclip_config(lightclip.create_model("clip-tiny-mnv2", head_width=768).config)
    with pytest.raises(ExportError, match="attn_heads=4"):
        openclip_config(lightclip.create_model("clip-tiny-r18", attn_heads=4).config)


def test_cli_exports_a_training_checkpoint(tmp_path, capsys):
    """`lightclip export` on a training checkpoint (LightCLIP heads included) -> open_clip."""
    from lightclip.checkpoint import save_checkpoint
    from lightclip.cli import main

    model = make_model("lightclip-tiny-r18")
    payload = {
        "epoch": 1,
        "model_name": model.config.name,
        "model_config": model.config.to_dict(),
        "state_dict": model.state_dict(),
    }
    save_checkpoint(tmp_path / "epoch_1.pt", payload)
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tmp_path / "epoch_1.pt"),
                "--output",
                str(tmp_path / "oc"),
            ]
        )
        == 0
    )
    assert "lightclip_resnet18_pool2" in capsys.readouterr().out
    oc_model, _, _ = load_openclip(tmp_path / "oc")
    assert_same_embeddings(model, oc_model.eval(), 64, 32)
    # a tower open_clip cannot express is one clear error line, not a traceback
    bad = lightclip.create_model("clip-tiny-mnv2", head_width=768)
    payload = {
        "model_name": "x",
        "model_config": bad.config.to_dict(),
        "state_dict": bad.state_dict(),
    }
    save_checkpoint(tmp_path / "bad.pt", payload)
    assert (
        main(["export", "--checkpoint", str(tmp_path / "bad.pt"), "--output", str(tmp_path / "b")])
        == 2
    )
    assert "head_width=768 has no timm model" in capsys.readouterr().err
