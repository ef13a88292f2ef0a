"""Weights in: an open_clip model built here (a 12-layer text tower of width 64
with 2 heads, as the tiny presets' 8-layer one, and timm's MobileNet-V2 0.5 as image tower),
saved as open_clip's trainer saves it, loads into lightclip with its inherited text layers
computing what the source layers compute; our own exports and training checkpoints round-trip
to identical embeddings; timm state dicts fill the image tower; bad input is a clear error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lightclip
from lightclip import models as models_module
from lightclip import pretrained_tags
from lightclip.checkpoint import CheckpointError, save_checkpoint
from lightclip.errors import InvalidInputError
from lightclip.models import LightCLIP, create_model
from lightclip.openclip_export import WEIGHTS_FILE, export_openclip
from lightclip.pretrained import load_pretrained, select_text_layers
from model_checks import assert_close_fp32, randomise_batch_norm

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The source's text tower: the tiny presets' width and heads, open_clip's depth and context.
OPENCLIP_CFG = {
    "embed_dim": 128,
    "vision_cfg": {
        "timm_model_name": "mobilenetv2_050",
        "timm_pool": "avg",
        "timm_proj": "linear",
        "timm_proj_bias": False,
        "image_size": 64,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 12},
}
TEXTS = ["a dog runs on the grass .", "two children play at the beach", "red"]


def images(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def openclip_model(tmp_path_factory) -> torch.nn.Module:
    path = tmp_path_factory.mktemp("oc_config") / "lightclip-test-oc12.json"
    path.write_text(json.dumps(OPENCLIP_CFG))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    model = open_clip.create_model("lightclip-test-oc12")
    randomise_batch_norm(model, 1)
    with torch.no_grad():
        model.logit_scale.fill_(3.1)
    return model.eval()


@pytest.fixture(scope="module")
def openclip_checkpoint(openclip_model, tmp_path_factory) -> Path:
    """The file open_clip's trainer writes: DDP-wrapped weights with the optimizer beside."""
    path = tmp_path_factory.mktemp("oc_run") / "epoch_1.pt"
    state = {f"module.{k}": v for k, v in openclip_model.state_dict().items()}
    optimizer = torch.optim.AdamW(openclip_model.parameters()).state_dict()
    torch.save({"epoch": 1, "name": "oc12", "state_dict": state, "optimizer": optimizer}, path)
    return path


@pytest.fixture(scope="module")
def openclip_folder(openclip_model, tmp_path_factory) -> Path:
    """An open_clip ``local-dir`` folder (config + safetensors), as on the Hugging Face hub."""
    folder = tmp_path_factory.mktemp("oc_folder")
    save_file(openclip_model.state_dict(), folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPENCLIP_CFG}))
    return folder


def reference_text(oc, ids: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """open_clip's own modules, run through only the given text layers (a few lines of torch):
    what a tower that inherited exactly those layers must compute."""
    length = ids.shape[1]
    x = oc.token_embedding(ids) + oc.positional_embedding[:length]
    mask = oc.attn_mask[:length, :length]
    for i in layers:
        x = oc.transformer.resblocks[i](x, attn_mask=mask)
    x = oc.ln_final(x)
    return x[torch.arange(len(ids)), ids.argmax(dim=-1)] @ oc.text_projection


# --------------------------------------------------------------------------- open_clip in


def test_open_clip_checkpoint_inherits_the_first_layers(openclip_model, openclip_checkpoint):
    model = create_model("clip-tiny-mnv2", seed=5).eval()
    mask_row = model.text.token_embedding.weight[-1].clone()
    report = load_pretrained(model, openclip_checkpoint, text_layers="first")

    ids = open_clip.tokenize(TEXTS, context_length=model.config.context_length)
    with torch.no_grad():
        assert_close_fp32(
            model.encode_text(ids), reference_text(openclip_model, ids, list(range(8)))
        )
        assert_close_fp32(model.encode_image(images()), openclip_model.encode_image(images()))
    source_rows = openclip_model.token_embedding.weight
    assert torch.equal(model.text.token_embedding.weight[: len(source_rows)], source_rows)
    assert torch.equal(model.text.token_embedding.weight[-1], mask_row)
    assert report.kind == "open_clip checkpoint"
    assert report.text_layers == list(range(8)) and report.source_text_layers == 12
    assert set(report.resized) == {"text.token_embedding.weight", "text.positional_embedding"}
    assert report.missing == [] and report.unexpected == []
    not_inherited = {k.split(".")[3] for k in report.skipped}
    assert not_inherited == {"8", "9", "10", "11"}
    assert "not inherited: 8, 9, 10, 11" in report.summary()


@pytest.mark.parametrize(
    ("text_layers", "chosen"),
    [
        ("every-other", [0, 2, 4, 6]),
        # Spread evenly over 0..11, first and last kept: 11 * i / 7 rounded.
        ("uniform", [0, 2, 3, 5, 6, 8, 9, 11]),
        ([11, 0, 5, 5], [11, 0, 5, 5]),
        ("3,1,4,1", [3, 1, 4, 1]),
    ],
)
def test_each_inherited_layer_computes_its_source_layer(
    openclip_model, openclip_checkpoint, text_layers, chosen
):
    model = create_model("clip-tiny-mnv2", text_layers=len(chosen)).eval()
    report = load_pretrained(model, openclip_checkpoint, text_layers=text_layers)
    assert report.text_layers == chosen
    x = torch.randn(3, 32, 64, generator=torch.Generator().manual_seed(4))
    mask = model.text.attn_mask.to(x.dtype)
    with torch.no_grad():
        for ours, source in zip(model.text.transformer.resblocks, chosen, strict=True):
            theirs = openclip_model.transformer.resblocks[source]
            assert_close_fp32(ours(x, mask), theirs(x, attn_mask=mask))
        ids = open_clip.tokenize(TEXTS, context_length=32)
        assert_close_fp32(model.encode_text(ids), reference_text(openclip_model, ids, chosen))


def test_same_depth_and_context_is_open_clips_model(openclip_model, openclip_checkpoint):
    model = create_model("clip-tiny-mnv2", text_layers=12, context_length=77).eval()
    report = load_pretrained(model, openclip_checkpoint)
    assert report.text_layers == list(range(12)) and report.skipped == {}
    ids = open_clip.tokenize(TEXTS)
    with torch.no_grad():
        assert_close_fp32(model.encode_text(ids), openclip_model.encode_text(ids))


def test_open_clip_folder_and_local_dir_load_what_the_checkpoint_holds(
    openclip_checkpoint, openclip_folder
):
    reference = create_model("clip-tiny-mnv2")
    load_pretrained(reference, openclip_checkpoint, text_layers="uniform")
    for source in (openclip_folder, f"local-dir:{openclip_folder}"):
        model = create_model("clip-tiny-mnv2", seed=9)
        report = load_pretrained(model, source)  # depths differ: "uniform" by default
        assert report.text_layers == select_text_layers("uniform", 12, 8)
        assert any("uniform" in note for note in report.notes)
        for key, value in reference.state_dict().items():
            if key != "text.token_embedding.weight":  # its mask row is each model's own
                assert torch.equal(model.state_dict()[key], value), key


# --------------------------------------------------------------------------- our own weights


def trained_model(name: str) -> LightCLIP:
    model = create_model(name, seed=0)
    randomise_batch_norm(model, 3)
    with torch.no_grad():
        model.logit_scale.fill_(2.7)
    return model.eval()


def same_embeddings(a: LightCLIP, b: LightCLIP) -> None:
    ids = lightclip.get_tokenizer(context_length=a.config.context_length)(TEXTS)
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a.encode_image(images()), b.encode_image(images()))
        assert torch.equal(a.encode_text(ids), b.encode_text(ids))
    assert torch.equal(a.logit_scale, b.logit_scale)


def test_training_checkpoint_round_trips(tmp_path: Path):
    model = trained_model("lightclip-tiny-mnv2")
    path = tmp_path / "epoch_2.pt"
    payload = {
        "epoch": 2,
        "model_name": model.config.name,
        "model_config": model.config.to_dict(),
        "state_dict": model.state_dict(),
    }
    save_checkpoint(path, payload)
    same = create_model("lightclip-tiny-mnv2", seed=1)
    report = load_pretrained(same, path, strict=True)
    assert report.kind == "lightclip checkpoint" and report.resized == {}
    same_embeddings(model, same)
    for key, value in model.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key
    # Into the inference model: the training-only heads have no place there.
    plain = create_model("clip-tiny-mnv2", seed=1)
    report = load_pretrained(plain, path)
    assert report.unexpected and all(
        k.split(".")[0] in models_module.TRAINING_ONLY_MODULES for k in report.unexpected
    )
    same_embeddings(model, plain)


@pytest.mark.parametrize("name", ["clip-tiny-mnv2", "clip-tiny-r18"])
def test_export_round_trips_through_every_entry_point(name: str, tmp_path: Path):
    model = trained_model(name)
    folder = export_openclip(model, tmp_path / "export")
    # Its weights alone, without lightclip_config.json: read as an open_clip checkpoint (for
    # the ResNet, with open_clip's fused attention pool).
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "w.safetensors").write_bytes((folder / WEIGHTS_FILE).read_bytes())
    sources = [
        folder,
        folder / WEIGHTS_FILE,
        f"local-dir:{folder}",
        tmp_path / "bare/w.safetensors",
    ]
    for source in sources:
        fresh = create_model(name, seed=1)
        report = load_pretrained(fresh, source, strict=True)
        assert report.missing == [] and report.unexpected == []
        same_embeddings(model, fresh)
    same_embeddings(model, create_model(f"local-dir:{folder}"))
    same_embeddings(model, create_model(name, pretrained=folder))
    loaded, preprocess = lightclip.create_model_from_pretrained(f"local-dir:{folder}")
    assert not loaded.training and preprocess.image_size == model.config.image_size
    same_embeddings(model, loaded)


# --------------------------------------------------------------------------- timm in


@pytest.mark.parametrize(
    ("timm_name", "ours"), [("mobilenetv2_050", "clip-tiny-mnv2"), ("resnet18", "clip-tiny-r18")]
)
def test_timm_state_dict_fills_the_image_tower(timm_name: str, ours: str, tmp_path: Path):
    torch.manual_seed(0)
    reference = timm.create_model(timm_name, pretrained=False)
    randomise_batch_norm(reference, 2)
    reference.eval()
    path = tmp_path / f"{timm_name}.pth"
    torch.save(reference.state_dict(), path)
    model = create_model(ours).eval()
    report = load_pretrained(model, path)
    assert report.kind == "timm image tower"
    trunk = [k for k in model.state_dict() if k.startswith("visual.trunk.")]
    assert sorted(report.loaded) == sorted(trunk)
    assert report.skipped and all(v.startswith("timm classifier") for v in report.skipped.values())
    assert all(not k.startswith("visual.trunk.") for k in report.missing)
    with torch.no_grad():
        want = reference.forward_features(images())
        stage4 = model.visual.forward_stages(images())[-1]
        got = model.visual.trunk.forward_head_features(stage4) if "mnv2" in ours else stage4
        assert_close_fp32(got, want)


# --------------------------------------------------------------------------- tags and configs


@pytest.fixture
def clean_registries(monkeypatch):
    monkeypatch.setattr(pretrained_tags, "_REGISTERED", {})
    monkeypatch.setattr(models_module, "_CONFIG_PATHS", [models_module.CONFIG_DIR])
    models_module._registry.cache_clear()
    yield
    models_module._registry.cache_clear()


def test_registered_tag_loads_through_the_open_clip_api(clean_registries, tmp_path: Path):
    model = trained_model("clip-tiny-r18")
    folder = export_openclip(model, tmp_path / "export")
    assert lightclip.list_pretrained() == []
    lightclip.register_pretrained("clip-tiny-r18", "flickr-run", folder)
    assert lightclip.list_pretrained() == [("clip-tiny-r18", "flickr-run")]
    assert lightclip.list_pretrained(as_str=True) == ["clip-tiny-r18:flickr-run"]
    same_embeddings(model, create_model("clip-tiny-r18", pretrained="flickr-run"))
    loaded, _, preprocess = lightclip.create_model_and_transforms(
        "clip-tiny-r18", pretrained="flickr-run"
    )
    same_embeddings(model, loaded)
    assert preprocess.image_size == 64
    alone = lightclip.create_model_from_pretrained(
        "clip-tiny-r18", "flickr-run", return_transform=False
    )
    same_embeddings(model, alone)


def test_unknown_tag_names_what_is_registered(clean_registries, tmp_path: Path):
    folder = export_openclip(create_model("clip-tiny-r18"), tmp_path / "export")
    lightclip.register_pretrained("clip-tiny-r18", "mine", folder)
    with pytest.raises(InvalidInputError, match=r"laion2b_s34b_b79k.*its tags: mine.*downloads"):
        create_model("clip-tiny-r18", pretrained="laion2b_s34b_b79k")
    with pytest.raises(InvalidInputError, match="its tags: none"):
        create_model("clip-tiny-mnv2", pretrained="mine")
    with pytest.raises(InvalidInputError, match="unknown model name 'ViT-B-32'"):
        lightclip.register_pretrained("ViT-B-32", "x", folder)
    with pytest.raises(CheckpointError, match="not found"):
        lightclip.register_pretrained("clip-tiny-r18", "x", tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="needs pretrained="):
        lightclip.create_model_from_pretrained("clip-tiny-r18")


def test_add_model_config_file_and_folder(clean_registries, tmp_path: Path):
    config = {"name": "lightclip-test-wide", "image_tower": "resnet18", "image_size": 64,
              "embed_dim": 96, "context_length": 16, "text_width": 32, "text_heads": 2,
              "text_layers": 4, "d_tok": 32, "fusion_heads": 2}  # fmt: skip
    (tmp_path / "lightclip-test-wide.json").write_text(json.dumps(config))
    # Another JSON in the folder, as an export holds: passed over, as open_clip does.
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPENCLIP_CFG}))
    added = lightclip.add_model_config(tmp_path)
    assert added == ["lightclip-test-wide", "clip-test-wide"]
    assert {"lightclip-test-wide", "clip-test-wide"} <= set(lightclip.list_models())
    model = create_model("clip-test-wide")
    assert (model.config.embed_dim, model.config.text_layers, model.mlm_head) == (96, 4, None)
    single = tmp_path / "single" / "clip-test-single.json"
    single.parent.mkdir()
    single.write_text(json.dumps({"image_tower": "mobilenetv2", "text_width": 32}))
    assert lightclip.add_model_config(single) == ["clip-test-single"]
    assert create_model("clip-test-single").config.text_width == 32
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"image_tower": "vit", "embed_dim": 8}))
    with pytest.raises(InvalidInputError, match="image_tower must be one of"):
        lightclip.add_model_config(bad)
    with pytest.raises(InvalidInputError, match="not found"):
        lightclip.add_model_config(tmp_path / "missing.json")
    assert "bad" not in lightclip.list_models()


# --------------------------------------------------------------------------- bad input


def test_text_width_and_heads_must_match(openclip_checkpoint, openclip_folder):
    wide = create_model("clip-tiny-mnv2", text_width=128)
    with pytest.raises(CheckpointError, match=r"64 wide, the model's 128 \(text_width"):
        load_pretrained(wide, openclip_checkpoint)
    # The head count is not in the weights; the folder's open_clip_config.json says it.
    four_heads = create_model("clip-tiny-mnv2", text_heads=4)
    with pytest.raises(CheckpointError, match=r"2 attention heads, the model's 4"):
        load_pretrained(four_heads, openclip_folder)


def test_other_shapes_are_refused_naming_the_key_and_change_nothing(tmp_path: Path):
    folder = export_openclip(create_model("clip-tiny-mnv2", seed=2), tmp_path / "export")
    model = create_model("clip-tiny-mnv2", head_width=640, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"visual\.\S+ has shape \(.+\) there, \(.+\) in"):
        load_pretrained(model, folder)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # Another joint width is not a reason to refuse the towers: the projections are skipped.
    narrow = create_model("clip-tiny-mnv2", embed_dim=64)
    report = load_pretrained(narrow, folder)
    assert set(report.skipped) == {"text.text_projection", "visual.head.proj.weight"}
    assert set(report.missing) == set(report.skipped)


def test_bad_text_layer_choices(openclip_checkpoint, tmp_path: Path):
    model = create_model("clip-tiny-mnv2")
    with pytest.raises(InvalidInputError, match="at least 15 layers, and it has 12"):
        load_pretrained(model, openclip_checkpoint, text_layers="every-other")
    with pytest.raises(InvalidInputError, match=r"8 source layer indices in 0..11"):
        load_pretrained(model, openclip_checkpoint, text_layers=[0, 1, 2])
    with pytest.raises(InvalidInputError, match=r"8 source layer indices in 0..11"):
        load_pretrained(model, openclip_checkpoint, text_layers=[0, 1, 2, 3, 4, 5, 6, 12])
    with pytest.raises(InvalidInputError, match="none of every-other, first, uniform"):
        load_pretrained(model, openclip_checkpoint, text_layers="last")
    timm_path = tmp_path / "mnv2.pth"
    torch.save(timm.create_model("mobilenetv2_050").state_dict(), timm_path)
    with pytest.raises(InvalidInputError, match="has no text layers"):
        load_pretrained(model, timm_path, text_layers="first")
    with pytest.raises(CheckpointError, match="strict"):
        load_pretrained(model, timm_path, strict=True)


class _Trojan:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unreadable_sources_are_clear_errors(tmp_path: Path):
    model = create_model("clip-tiny-mnv2")
    marker = tmp_path / "code-ran"
    trojan = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"token_embedding.weight": torch.zeros(3, 64), "x": _Trojan(marker)}, trojan)
    for source in (trojan, tmp_path, f"local-dir:{tmp_path}"):
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_pretrained(model, source)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(model, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is not a folder"):
        load_pretrained(model, f"local-dir:{trojan}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="none of the weight files"):
        load_pretrained(model, tmp_path / "empty")
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_pretrained(model, listed)
    unrelated = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(CheckpointError, match="no tensor of .* fits model 'clip-tiny-mnv2'"):
        load_pretrained(model, unrelated)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="could not read"):
        load_pretrained(model, tmp_path / "broken.safetensors")
    plain_folder = tmp_path / "oc"
    plain_folder.mkdir()
    with pytest.raises(InvalidInputError, match="no lightclip_config.json"):
        create_model(f"local-dir:{plain_folder}")
