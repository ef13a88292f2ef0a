"""open_clip's model API on LightCLIP, each call against an independent
reference: a few lines of torch on ``encode_image`` / ``encode_text``, the open_clip model that
open_clip itself builds from our export (the same calls must give the same numbers), open_clip's
own text-tower locking, and open_clip's tokenizer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import lightclip
from lightclip.openclip_export import export_openclip, load_openclip
from model_checks import randomise_batch_norm

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("timm")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = ["a dog runs on the grass .", "two children play at the beach", "red"]
TINY = ("clip-tiny-mnv2", "clip-tiny-r18")


def make_model(name: str, **overrides: object) -> lightclip.LightCLIP:
    model = lightclip.create_model(name, seed=0, **overrides)
    randomise_batch_norm(model, 1)
    with torch.no_grad():
        model.logit_scale.fill_(2.7)
    return model.eval()


def inputs(model: lightclip.LightCLIP, n_images: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    size = model.config.image_size
    images = torch.randn(n_images, 3, size, size, generator=torch.Generator().manual_seed(3))
    return images, open_clip.tokenize(CAPTIONS, context_length=model.config.context_length)


# --------------------------------------------------------------------------- get_logits, forward


@pytest.mark.parametrize("name", TINY)
def test_get_logits_is_scaled_cosine_of_the_encoders(name):
    model = make_model(name)
    images, ids = inputs(model)
    with torch.no_grad():
        per_image, per_text = model.get_logits(images, ids)
        img = model.encode_image(images)
        txt = model.encode_text(ids)
    unit_img = img / img.norm(dim=-1, keepdim=True)
    unit_txt = txt / txt.norm(dim=-1, keepdim=True)
    want = torch.tensor(2.7).exp() * unit_img @ unit_txt.T  # logit_scale was set to 2.7
    assert per_image.shape == (2, 3) and per_text.shape == (3, 2)
    torch.testing.assert_close(per_image, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(per_text, per_image.T)


def test_one_input_forward_and_output_dict():
    model = make_model("lightclip-tiny-mnv2")
    images, ids = inputs(model)
    with torch.no_grad():
        image_features, none, scale = model(images, None)
        none_too, text_features, _ = model(None, ids)
        want_image = F.normalize(model.encode_image(images), dim=-1)
        want_text = F.normalize(model.encode_text(ids), dim=-1)
        model.output_dict = True
        as_dict = model(images, None)
        both = model(images[:1].expand(3, -1, -1, -1), ids)  # the training forward, unchanged
    assert none is None and none_too is None
    torch.testing.assert_close(image_features, want_image)
    torch.testing.assert_close(text_features, want_text)
    assert float(scale) == pytest.approx(torch.tensor(2.7).exp().item())
    assert set(as_dict) == {"image_features", "text_features", "logit_scale"}
    assert as_dict["text_features"] is None
    torch.testing.assert_close(as_dict["image_features"], want_image)
    assert {"image_features", "text_features", "logit_scale", "word_tokens"} <= set(both)
    assert model.export().output_dict is True
    with pytest.raises(lightclip.InvalidInputError, match="masked_text"):
        model(images, None, masked_text=ids)


# --------------------------------------------------------------------------- forward_intermediates


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("clip-tiny-mnv2", {}), ("clip-tiny-r18", {}), ("clip-swin-nano", {"image_size": 64})],
)
def test_forward_intermediates_features_equal_the_encoders(name, overrides):
    model = make_model(name, context_length=32, **overrides)
    images, ids = inputs(model)
    with torch.no_grad():
        out = model.forward_intermediates(images, ids, output_logits=True)
        raw = model.forward_intermediates(images, ids, normalize=False)
        stages = model.visual.forward_stages(images)
        img, txt = model.encode_image(images), model.encode_text(ids)
        per_image, _ = model.get_logits(images, ids)
    torch.testing.assert_close(raw["image_features"], img, rtol=0, atol=0)
    torch.testing.assert_close(raw["text_features"], txt, rtol=0, atol=0)
    torch.testing.assert_close(out["image_features"], F.normalize(img, dim=-1))
    torch.testing.assert_close(out["text_features"], F.normalize(txt, dim=-1))
    torch.testing.assert_close(out["image_logits"], per_image)
    assert torch.equal(out["text_logits"], out["image_logits"].T)
    # The last four image maps are the tower's stages; one text map per block.
    for got, want in zip(out["image_intermediates"][-4:], stages, strict=True):
        assert torch.equal(got, want)
    assert len(out["text_intermediates"]) == model.config.text_layers


def test_forward_intermediates_indices_formats_and_stop_early():
    model = make_model("clip-tiny-mnv2")
    images, ids = inputs(model)
    with torch.no_grad():
        full = model.forward_intermediates(images, ids)
        last2 = model.forward_intermediates(images, image_indices=2, intermediates_only=True)
        picked = model.forward_intermediates(
            text=ids, text_indices=[0, -1], stop_early=True, intermediates_only=True
        )
        tokens = model.forward_intermediates(
            images,
            image_indices=[1],
            image_output_fmt="NLC",
            stop_early=True,
            intermediates_only=True,
        )
        states = model.text.forward_tokens(ids)
        normed = model.forward_intermediates(
            text=ids, text_indices=1, normalize_intermediates=True, intermediates_only=True
        )
    maps, blocks = full["image_intermediates"], full["text_intermediates"]
    assert [tuple(m.shape[1:]) for m in maps] == [
        (8, 32, 32), (16, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)
    ]  # fmt: skip
    assert set(last2) == {"image_intermediates"}
    assert len(last2["image_intermediates"]) == 2
    for got, want in zip(last2["image_intermediates"], maps[-2:], strict=True):
        assert torch.equal(got, want)
    assert set(picked) == {"text_intermediates"}
    assert torch.equal(picked["text_intermediates"][0], blocks[0])
    assert torch.equal(picked["text_intermediates"][1], blocks[-1])
    (token_map,) = tokens["image_intermediates"]
    assert torch.equal(token_map, maps[1].flatten(2).transpose(1, 2))
    torch.testing.assert_close(normed["text_intermediates"][0], states, rtol=0, atol=0)
    for bad, match in (
        ({"image_indices": 6}, "last-n must lie in 1..5"),
        ({"image_indices": [5]}, "out of range for 5"),
        ({"image_output_fmt": "NCL"}, "image_output_fmt"),
    ):
        with pytest.raises(lightclip.InvalidInputError, match=match):
            model.forward_intermediates(images, **bad)
    with pytest.raises(lightclip.InvalidInputError, match="output_logits"):
        model.forward_intermediates(images, output_logits=True)


@pytest.mark.parametrize("name", TINY)
def test_open_clip_model_from_our_export_answers_the_same(name, tmp_path):
    model = make_model(name)
    export_openclip(model, tmp_path)
    theirs = load_openclip(tmp_path)[0].eval()
    images, ids = inputs(model)
    with torch.no_grad():
        ours_logits, theirs_logits = model.get_logits(images, ids), theirs.get_logits(images, ids)
        kwargs = dict(output_logits=True, output_logit_scale_bias=True)
        ours_out = model.forward_intermediates(images, ids, **kwargs)
        theirs_out = theirs.forward_intermediates(images, ids, **kwargs)
        ours_fwd, theirs_fwd = model(images, None), theirs(images, None)
        ours_pair, theirs_pair = model(images, ids), theirs(images, ids)
        model.output_dict = theirs.output_dict = True
        ours_dict, theirs_dict = model(None, ids), theirs(None, ids)
    for got, want in zip(ours_logits, theirs_logits, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # open_clip's own loop: image_features, text_features, logit_scale = model(images, text)
    assert isinstance(ours_pair, tuple) and len(ours_pair) == len(theirs_pair) == 3
    for got, want in zip(ours_pair, theirs_pair, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert set(ours_out) == set(theirs_out)
    for key, want in theirs_out.items():
        got = ours_out[key]
        if isinstance(want, list):
            assert len(got) == len(want), key
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert ours_fwd[1] is None and theirs_fwd[1] is None
    torch.testing.assert_close(ours_fwd[0], theirs_fwd[0], rtol=1e-5, atol=1e-5)
    assert set(ours_dict) == set(theirs_dict)
    torch.testing.assert_close(ours_dict["text_features"], theirs_dict["text_features"])


# --------------------------------------------------------------------------- LiT locking


def adamw_step(model: torch.nn.Module, images: torch.Tensor, ids: torch.Tensor) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    image_features, text_features, logit_scale = model(images, ids)
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(len(logits))
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize(
    ("name", "overrides", "head"),
    [
        ("clip-tiny-mnv2", {}, "head.proj"),
        ("clip-tiny-r18", {}, "head."),
        ("clip-swin-nano", {"image_size": 64, "context_length": 32}, "head.proj"),
    ],
)
def test_lock_image_tower_leaves_only_the_last_group_trainable(name, overrides, head):
    model = make_model(name, **overrides)
    model.lock_image_tower(unlocked_groups=1, freeze_bn_stats=True)
    model.train()
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(head) for n in trainable)
    assert all(p.requires_grad for p in model.text.parameters())
    before = copy.deepcopy(model.state_dict())
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    adamw_step(model, images, open_clip.tokenize(CAPTIONS, context_length=32))
    after = model.state_dict()
    # Everything in the frozen groups, weights and BN statistics alike, is bit-identical.
    for key, value in before.items():
        if key.startswith("visual.trunk."):
            assert torch.equal(value, after[key]), key
    for key in [f"visual.{n}" for n in trainable] + ["text.text_projection"]:
        assert not torch.equal(before[key], after[key]), key


def test_freeze_bn_stats_only_in_the_frozen_groups():
    model = make_model("clip-tiny-mnv2")
    model.lock_image_tower(unlocked_groups=2, freeze_bn_stats=True)  # stage4 and head trainable
    model.train()
    trunk = model.visual.trunk
    assert not trunk.bn1.training and not trunk.blocks[4][0].bn1.training
    assert trunk.blocks[5][0].bn1.training and trunk.bn2.training
    stem_mean = trunk.bn1.running_mean.clone()
    stage4_mean = trunk.bn2.running_mean.clone()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64), None)
    assert torch.equal(trunk.bn1.running_mean, stem_mean)
    assert not torch.equal(trunk.bn2.running_mean, stage4_mean)
    plain = make_model("clip-tiny-mnv2")
    plain.lock_image_tower(unlocked_groups=2)  # without freeze_bn_stats every BN keeps learning
    assert plain.train().visual.trunk.bn1.training


def test_lock_text_tower_matches_open_clip(tmp_path):
    model = make_model("clip-tiny-mnv2")
    export_openclip(model, tmp_path)
    for unlocked in (0, 1, 2, 5, 9, 10, 11, 50):
        ours = make_model("clip-tiny-mnv2")
        ours.lock_text_tower(unlocked_layers=unlocked)
        theirs = load_openclip(tmp_path)[0]
        theirs.lock_text_tower(unlocked_layers=unlocked)
        ours_trainable = {n for n, p in ours.text.named_parameters() if p.requires_grad}
        theirs_trainable = {
            n for n, p in theirs.named_parameters() if p.requires_grad and n != "logit_scale"
        }
        theirs_trainable = {n for n in theirs_trainable if not n.startswith("visual.")}
        assert ours_trainable == theirs_trainable, unlocked
    keep_norms = make_model("clip-tiny-mnv2")
    keep_norms.lock_text_tower(unlocked_layers=0, freeze_layer_norm=False)
    trainable = {n for n, p in keep_norms.text.named_parameters() if p.requires_grad}
    assert trainable and all(".ln_" in n or n.startswith("ln_final") for n in trainable)
    assert len(trainable) == 2 * (2 * keep_norms.config.text_layers + 1)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_lock_counts_are_checked(bad):
    model = make_model("clip-tiny-mnv2")
    with pytest.raises(lightclip.InvalidInputError, match="unlocked_groups"):
        model.lock_image_tower(unlocked_groups=bad)
    with pytest.raises(lightclip.InvalidInputError, match="unlocked_layers"):
        model.lock_text_tower(unlocked_layers=bad)


# --------------------------------------------------------------------------- grad checkpointing


@pytest.mark.parametrize("name", ["lightclip-tiny-mnv2", "lightclip-tiny-r18"])
def test_grad_checkpointing_changes_nothing_but_memory(name):
    plain = lightclip.create_model(name, seed=0).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    ids = open_clip.tokenize(CAPTIONS + ["a red car"], context_length=32)
    masked = ids.clone()
    masked[:, 2] = lightclip.MASK_TOKEN
    results = []
    for model in (plain, checkpointed):
        out = model(images, ids, masked_text=masked)
        logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
        loss = F.cross_entropy(logits, torch.arange(4)) + out["mlm_logits_fused"].square().mean()
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        results.append((loss.detach(), grads, dict(model.named_buffers())))
    (loss_a, grads_a, bufs_a), (loss_b, grads_b, bufs_b) = results
    torch.testing.assert_close(loss_b, loss_a)
    assert all(g is not None for g in grads_a.values())
    for key, grad in grads_a.items():
        torch.testing.assert_close(grads_b[key], grad, msg=key)
    for key, buf in bufs_a.items():  # BN statistics updated once, not again when recomputed
        if "running" in key or "num_batches" in key:
            assert torch.equal(bufs_b[key], buf), key


# --------------------------------------------------------------------------- get_tokenizer


def test_get_tokenizer_uses_the_models_context_length(tmp_path):
    long = " ".join(["a dog on the grass"] * 12)
    tok = lightclip.get_tokenizer("lightclip-tiny-mnv2")
    assert tok.context_length == 32
    want = open_clip.get_tokenizer("RN50", context_length=32)([*CAPTIONS, long])
    assert torch.equal(tok([*CAPTIONS, long]), want)
    assert lightclip.get_tokenizer("clip-mnv2").context_length == 77
    assert lightclip.get_tokenizer("clip-mnv2", context_length=16).context_length == 16
    assert lightclip.get_tokenizer(32).context_length == 32  # an int is a context length
    assert lightclip.get_tokenizer().context_length == 77
    export_openclip(make_model("clip-tiny-r18"), tmp_path)
    assert lightclip.get_tokenizer(f"local-dir:{tmp_path}").context_length == 32
    with pytest.raises(lightclip.InvalidInputError, match="unknown model 'ViT-B-32'.*clip-mnv2"):
        lightclip.get_tokenizer("ViT-B-32")
    with pytest.raises(lightclip.InvalidInputError, match="neither lightclip_config.json"):
        lightclip.get_tokenizer(f"local-dir:{tmp_path / 'missing'}")
    with pytest.raises(lightclip.InvalidInputError, match="context length given twice"):
        lightclip.get_tokenizer(32, context_length=16)


# --------------------------------------------------------------------------- preprocess input


def test_preprocess_of_an_unreadable_file_is_a_clear_error(tmp_path):
    # Pillow reads the whole picture or raises; the error names the file, as lightclip's
    # errors do, instead of Pillow's OSError escaping from preprocess.
    from PIL import Image

    _, _, preprocess = lightclip.create_model_and_transforms("clip-tiny-mnv2")
    picture = tmp_path / "whole.png"
    pixels = torch.randint(0, 256, (40, 50, 3), dtype=torch.uint8, generator=torch.Generator())
    Image.fromarray(pixels.numpy()).save(picture)
    assert tuple(preprocess(picture).shape) == (3, 64, 64)
    cut = tmp_path / "cut.png"
    cut.write_bytes(picture.read_bytes()[:200])
    for path, reason in [(cut, "truncated"), (tmp_path / "absent.png", "No such file")]:
        with pytest.raises(lightclip.errors.InvalidInputError, match=f"{path.name}.*{reason}"):
            preprocess(path)
