"""Export to open_clip: our export, loaded by open_clip itself (open-clip-torch 3.3.0 with timm,
installed from the registry), must give lightclip's embeddings within fp32 tolerance; read back
by lightclip (the inference model a run exports), it must be the model that was exported."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import lightclip
from lightclip.checkpoint import model_from_checkpoint, save_checkpoint
from lightclip.cli import main
from lightclip.eval_cli import load_eval_model
from lightclip.openclip_export import (
    CONFIG_FILE,
    LIGHTCLIP_CONFIG_FILE,
    WEIGHTS_FILE,
    ExportError,
    export_openclip,
    load_openclip,
    openclip_config,
)
from model_checks import assert_close_fp32, randomise_batch_norm

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("timm")

if not hasattr(lightclip, "create_model"):
    pytest.skip("lightclip.create_model not available yet", allow_module_level=True)


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


def test_towers_open_clip_cannot_express_are_refused_with_the_reason():
    with pytest.raises(ExportError, match=r"stage maps \[16, 8, 4, 2\].*window 7"):
        openclip_config(lightclip.create_model("clip-swin-nano", image_size=64).config)
    with pytest.raises(ExportError, match="head_width=768 has no timm model"):
        openclip_config(lightclip.create_model("clip-tiny-mnv2", head_width=768).config)
    with pytest.raises(ExportError, match="attn_heads=4"):
        openclip_config(lightclip.create_model("clip-tiny-r18", attn_heads=4).config)


def assert_same_state(got: torch.nn.Module, want: torch.nn.Module) -> None:
    got_state, want_state = got.state_dict(), want.state_dict()
    assert got_state.keys() == want_state.keys()
    for key, value in want_state.items():
        assert torch.equal(got_state[key], value), key


@pytest.mark.parametrize(
    ("name", "overrides", "open_clip_can_express_it"),
    [
        ("lightclip-tiny-mnv2", {}, True),
        ("lightclip-tiny-r18", {}, True),  # q/k/v are fused into one qkv on the way out
        ("clip-swin-nano", {"image_size": 64, **SMALL_TEXT}, False),  # windows do not tile 64 px
    ],
)
def test_lightclip_reads_its_export_back_exactly(
    name, overrides, open_clip_can_express_it, tmp_path
):
    model = lightclip.create_model(name, seed=0, **overrides)
    randomise_batch_norm(model, 1)
    export_openclip(model, tmp_path, strict=False)
    assert (tmp_path / CONFIG_FILE).is_file() == open_clip_can_express_it
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*"))  # no pickle, no tmp
    plain = model.export()
    for source in (tmp_path, tmp_path / WEIGHTS_FILE, str(tmp_path)):
        back = model_from_checkpoint(source)
        assert back.config == plain.config
        assert_same_state(back, plain)


def test_eval_and_export_read_an_export_as_they_read_its_training_checkpoint(tmp_path, capsys):
    model = make_model("lightclip-tiny-r18")
    trained = tmp_path / "epoch_1.pt"
    payload = {
        "epoch": 1,
        "model_name": model.config.name,
        "model_config": model.config.to_dict(),
        "state_dict": model.state_dict(),
    }
    save_checkpoint(trained, payload)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["export", "--checkpoint", str(trained), "--output", str(a)]) == 0
    # an export exports again (what `lightclip export` does to a run's inference_model/)
    assert main(["export", "--checkpoint", str(a), "--output", str(b)]) == 0
    reference, _ = load_eval_model(None, str(trained), "cpu")
    for source in (a, b / WEIGHTS_FILE):
        got, name = load_eval_model(None, str(source), "cpu")
        assert name == "clip-tiny-r18"  # the export is the plain CLIP of the same towers
        assert_same_state(got, reference)
    out = tmp_path / "r.json"
    argv = ["eval", "--checkpoint", str(b), "--dataset", "synthetic:heldout"]
    argv += ["--device", "cpu", "--batch-size", "16", "--max-batches", "1", "--output", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["model"] == "clip-tiny-r18"
    # folders that are no lightclip export: one clear line each
    (a / LIGHTCLIP_CONFIG_FILE).unlink()  # a plain open_clip folder
    capsys.readouterr()
    for folder, why in ((tmp_path, "exported model not found"), (a, "no lightclip")):
        assert main(["eval", "--checkpoint", str(folder), "--dataset", "synthetic:heldout"]) == 2
        assert why in capsys.readouterr().err


def test_cli_exports_a_training_checkpoint(tmp_path, capsys):
    """`lightclip export` on a training checkpoint (LightCLIP heads included) -> open_clip."""
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
