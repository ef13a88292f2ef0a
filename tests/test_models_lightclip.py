"""The LightCLIP model: registry, the training forward's outputs, fusion zero-init, the cheap
paths (sparse MLM logits, padding trim, shared fusion prefix) against the plain computation,
export equivalence with the plain CLIP, and gradient flow to every trainable parameter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import lightclip
from lightclip.models import EOT_TOKEN_ID, MASK_TOKEN_ID, SOT_TOKEN_ID, TRAINING_ONLY_MODULES

B = 4


def batch(context: int, image_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = torch.zeros(B, context, dtype=torch.long)
    for b, n in enumerate([3, 9, 14, 6][:B]):
        text[b, 0] = SOT_TOKEN_ID
        text[b, 1 : n + 1] = torch.randint(1, 49000, (n,), generator=g)
        text[b, n + 1] = EOT_TOKEN_ID
    labels = torch.full_like(text, -100)
    masked = text.clone()
    for b, pos in enumerate([[1], [2, 5], [1, 7, 12], [4]]):
        labels[b, pos] = text[b, pos]
        masked[b, pos] = MASK_TOKEN_ID
    images = torch.randn(B, 3, image_size, image_size, generator=g)
    return {"images": images, "text": text, "masked_text": masked, "mlm_labels": labels}


@pytest.fixture(scope="module")
def model() -> lightclip.LightCLIP:
    return lightclip.create_model("lightclip-tiny-mnv2", seed=0).eval()


@pytest.fixture(scope="module")
def data(model) -> dict[str, torch.Tensor]:
    return batch(model.config.context_length, model.config.image_size)


def test_registry_names_and_errors() -> None:
    names = lightclip.list_models()
    for name in ("lightclip-r18", "lightclip-mnv2", "lightclip-swin-nano", "clip-r18", "clip-mnv2",
                 "clip-swin-nano", "lightclip-tiny-mnv2", "clip-tiny-mnv2"):  # fmt: skip
        assert name in names
    plain = lightclip.models.get_model_config("clip-mnv2")
    assert (
        not plain.has_training_heads
        and lightclip.models.get_model_config("lightclip-mnv2").has_training_heads
    )
    assert plain.vocab_size == 49409 and plain.context_length == 77 and plain.text_layers == 8
    assert lightclip.create_model("clip-tiny-mnv2", text_layers=12).config.text_layers == 12
    with pytest.raises(lightclip.InvalidInputError, match="unknown model name 'nope'.*clip-mnv2"):
        lightclip.create_model("nope")
    with pytest.raises(lightclip.InvalidInputError, match="unknown model option.*bogus"):
        lightclip.create_model("clip-mnv2", bogus=1)
    with pytest.raises(lightclip.InvalidInputError, match="fusion_stages"):
        lightclip.create_model("lightclip-tiny-mnv2", fusion_stages=(4,))
    a = lightclip.create_model("clip-tiny-mnv2", seed=3)
    b = lightclip.create_model("clip-tiny-mnv2", seed=3)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_forward_outputs(model, data) -> None:
    cfg = model.config
    with torch.no_grad():
        out = model(data["images"], data["text"], masked_text=data["masked_text"])
        img = model.encode_image(data["images"], normalize=True)
        txt = model.encode_text(data["text"], normalize=True)
        raw = model.encode_text(data["text"])
    torch.testing.assert_close(out["image_features"], img)
    torch.testing.assert_close(out["text_features"], txt)
    torch.testing.assert_close(txt, raw / raw.norm(dim=-1, keepdim=True))
    assert math.isclose(float(out["logit_scale"]), 1 / 0.07, rel_tol=1e-5)
    assert isinstance(model.logit_scale, torch.nn.Parameter)
    n_img = (cfg.image_size // 32) ** 2
    assert cfg.token_space == "joint"  # tokens in the joint embedding space, E wide
    assert tuple(out["image_tokens"].shape) == (B, n_img, cfg.embed_dim)
    assert tuple(out["word_tokens"].shape) == (B, cfg.context_length - 2, cfg.embed_dim)
    assert out["word_lengths"].tolist() == [3, 9, 14, 6]
    for b, n in enumerate(out["word_lengths"].tolist()):
        norms = out["word_tokens"][b, :n].norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    torch.testing.assert_close(out["image_tokens"].norm(dim=-1), torch.ones(B, n_img))
    # Word j is text position j+1: the projection of that position's final state.
    states = model.text.forward_tokens(data["text"]).detach()
    ref = F.normalize(states[:, 1:-1] @ model.text.text_projection, dim=-1)
    torch.testing.assert_close(out["word_tokens"][1, :9], ref[1, :9])
    for key in ("mlm_logits_text", "mlm_logits_fused"):
        assert tuple(out[key].shape) == (B, cfg.context_length, cfg.vocab_size)
    no_mlm = model.forward_train(data["images"], data["text"])
    assert no_mlm["mlm_logits_text"] is None and no_mlm["mlm_logits_fused"] is None


def test_fusion_is_zero_at_init_so_fused_logits_equal_text_only(model, data) -> None:
    with torch.no_grad():
        out = model(data["images"], data["text"], masked_text=data["masked_text"])
        states = model.text.forward_tokens(data["masked_text"])
        ref = model.mlm_head(states)
    torch.testing.assert_close(out["mlm_logits_text"], out["mlm_logits_fused"], atol=0, rtol=0)
    torch.testing.assert_close(out["mlm_logits_text"][:, :15], ref[:, :15], atol=1e-5, rtol=1e-5)


def perturbed(name: str = "lightclip-tiny-mnv2", **kw) -> lightclip.LightCLIP:
    m = lightclip.create_model(name, seed=1, **kw).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # make the zero-initialised fusion outputs live
        for block in m.fusion.blocks.values():
            block.attn.out_proj.weight.normal_(0, 0.05, generator=g)
            block.attn.out_proj.bias.normal_(0, 0.05, generator=g)
        for module in m.visual.modules():  # and the residual branches that start at zero
            if isinstance(module, torch.nn.BatchNorm2d) and not module.weight.any():
                module.weight.normal_(1.0, 0.05, generator=g)
    return m


def test_fused_pass_equals_a_from_scratch_pass_with_the_fusion_hook(data) -> None:
    m = perturbed()
    with torch.no_grad():
        out = m(data["images"], data["text"], masked_text=data["masked_text"])
        stages = m.visual.forward_stages(data["images"])
        hook = m.fusion.hook(m.fusion.image_tokens(stages))
        ref = m.mlm_head(m.text.forward_tokens(data["masked_text"], hook))
    assert (out["mlm_logits_fused"] - out["mlm_logits_text"]).abs().max() > 1e-3
    torch.testing.assert_close(out["mlm_logits_fused"][:, :15], ref[:, :15], atol=1e-4, rtol=1e-4)


def test_sparse_mlm_logits_and_padding_trim_equal_the_dense_untrimmed_pass(data) -> None:
    trimmed, full = perturbed(), perturbed(trim_padding=False)
    args = (data["images"], data["text"])
    with torch.no_grad():
        dense = full(*args, masked_text=data["masked_text"])
        dense_trim = trimmed(*args, masked_text=data["masked_text"])
        sparse = trimmed(*args, masked_text=data["masked_text"], mlm_labels=data["mlm_labels"])
    select = data["mlm_labels"] != -100
    assert torch.equal(sparse["mlm_labels"], data["mlm_labels"][select])
    for key in ("mlm_logits_text", "mlm_logits_fused"):
        torch.testing.assert_close(sparse[key], dense[key][select], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            dense_trim[key][:, :16], dense[key][:, :16], atol=1e-4, rtol=1e-4
        )
    for key in ("image_features", "text_features", "image_tokens"):
        torch.testing.assert_close(dense_trim[key], dense[key], atol=1e-5, rtol=1e-5)
    for b, n in enumerate(dense["word_lengths"].tolist()):
        torch.testing.assert_close(
            dense_trim["word_tokens"][b, :n], dense["word_tokens"][b, :n], atol=1e-5, rtol=1e-5
        )


def flops(model: lightclip.LightCLIP, data) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encode_image(data["images"])
        model.encode_text(data["text"])
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["lightclip-tiny-mnv2", "lightclip-tiny-r18"])
def test_export_is_exactly_the_plain_clip_with_the_same_embeddings(name: str) -> None:
    trained = perturbed(name)
    cfg = trained.config
    data = batch(cfg.context_length, cfg.image_size, seed=5)
    exported = trained.export()
    plain = lightclip.create_model(name.replace("lightclip-", "clip-"))
    exported_keys = set(exported.state_dict())
    assert exported_keys == set(plain.state_dict())
    assert not any(k.split(".")[0] in TRAINING_ONLY_MODULES for k in exported_keys)
    assert exported.num_parameters() == plain.num_parameters() < trained.num_parameters()
    assert {k: v.shape for k, v in exported.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }
    assert flops(exported, data) == flops(plain, data) == flops(trained, data)
    assert not exported.training and exported.config.name == name.replace("lightclip-", "clip-")
    plain.load_state_dict(exported.state_dict(), strict=True)
    with torch.no_grad():
        for m in (exported, plain.eval()):
            torch.testing.assert_close(
                m.encode_image(data["images"]), trained.encode_image(data["images"])
            )
            torch.testing.assert_close(
                m.encode_text(data["text"]), trained.encode_text(data["text"])
            )
        out = exported(data["images"], data["text"], masked_text=data["masked_text"])
    assert out["image_tokens"] is None and out["mlm_logits_fused"] is None


def test_token_space_builds_exactly_its_modules_and_export_drops_them(tmp_path) -> None:
    from lightclip.checkpoint import model_from_checkpoint
    from lightclip.models import build_model

    joint = lightclip.create_model("lightclip-tiny-mnv2", seed=0)
    heads = lightclip.create_model("lightclip-tiny-mnv2", seed=0, token_space="heads")
    plain = lightclip.create_model("clip-tiny-mnv2")
    cfg = heads.config
    assert joint.token_proj_image is None and joint.token_proj_text is None
    # The joint space adds no parameter: the model is the plain CLIP plus fusion and MLM head.
    extra = joint.num_parameters("fusion") + joint.num_parameters("mlm_head")
    assert joint.num_parameters() == plain.num_parameters() + extra
    channels = heads.visual.stage_channels[-1]
    assert tuple(heads.token_proj_image.weight.shape) == (cfg.d_tok, channels)
    assert tuple(heads.token_proj_text.weight.shape) == (cfg.d_tok, cfg.text_width)
    token_heads = heads.num_parameters("token_proj_image") + heads.num_parameters("token_proj_text")
    assert heads.num_parameters() == joint.num_parameters() + token_heads
    for m in (joint, heads):
        assert set(m.export().state_dict()) == set(plain.state_dict())
    with pytest.raises(lightclip.InvalidInputError, match=r"token_space must be one of \('joint'"):
        lightclip.create_model("lightclip-tiny-mnv2", token_space="shared")
    # The training option overrides the preset; None keeps it.
    tc = lightclip.TrainConfig
    assert build_model(tc(token_space="heads")).token_proj_image is not None
    assert build_model(tc()).config.token_space == "joint"
    with pytest.raises(lightclip.InvalidInputError, match="--token-space must be one of"):
        tc(token_space="shared")
    # A checkpoint saved before token_space existed had the heads: it still loads.
    old = heads.config.to_dict()
    del old["token_space"]
    payload = {"model_config": old, "state_dict": heads.state_dict()}
    assert model_from_checkpoint(payload).config.token_space == "heads"


@pytest.mark.parametrize("token_space", ["joint", "heads"])
def test_gradient_reaches_every_trainable_parameter(data, token_space: str) -> None:
    m = perturbed(token_space=token_space).train()
    out = m(
        data["images"], data["text"], masked_text=data["masked_text"], mlm_labels=data["mlm_labels"]
    )
    logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
    target = torch.arange(B)
    loss = F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    loss = loss - (out["image_tokens"] @ out["word_tokens"].transpose(1, 2)).sum()
    loss = loss + F.cross_entropy(out["mlm_logits_text"], out["mlm_labels"])
    loss = loss + F.cross_entropy(out["mlm_logits_fused"], out["mlm_labels"])
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # Embedding rows of tokens absent from the batch get no gradient by construction; the
    # embedding matrix as a whole must.
    assert missing == [], missing


def test_paper_sized_models_run_one_small_training_forward() -> None:
    for name in ("lightclip-r18", "lightclip-mnv2", "lightclip-swin-nano"):
        m = lightclip.create_model(name, seed=0)
        d = batch(m.config.context_length, 64, seed=2)
        with torch.no_grad():
            out = m(
                d["images"][:2],
                d["text"][:2],
                masked_text=d["masked_text"][:2],
                mlm_labels=d["mlm_labels"][:2],
            )
        e = m.config.embed_dim
        assert tuple(out["image_tokens"].shape) == (2, 4, e)
        assert tuple(out["word_tokens"].shape) == (2, 75, e)
        assert tuple(out["mlm_logits_fused"].shape) == (3, 49409)
        assert out["image_features"].shape[1] == out["text_features"].shape[1] == m.config.embed_dim


def test_bad_training_inputs_name_the_argument(model, data) -> None:
    with pytest.raises(lightclip.InvalidInputError, match="text: expected"):
        model.forward_train(data["images"][:2], data["text"])
    with pytest.raises(lightclip.InvalidInputError, match="masked_text: shape"):
        model(data["images"], data["text"], masked_text=data["masked_text"][:, :5])
    with pytest.raises(lightclip.InvalidInputError, match="mlm_labels: shape"):
        model(
            data["images"],
            data["text"],
            masked_text=data["masked_text"],
            mlm_labels=data["mlm_labels"][:1],
        )
    bad = data["masked_text"].clone()
    bad[0, 3] = 60000
    with pytest.raises(lightclip.InvalidInputError, match="masked_text: token ids"):
        model(data["images"], data["text"], masked_text=bad)
    # The forward checks text's ids and EOTs in the same single read (checked_eot).
    no_eot = data["text"].clone()
    no_eot[2][no_eot[2] == EOT_TOKEN_ID] = 7
    with pytest.raises(lightclip.InvalidInputError, match=r"text: rows \[2\] have no EOT"):
        model(data["images"], no_eot, masked_text=data["masked_text"])
    too_big = data["text"].clone()
    too_big[1, 2] = 49409
    with pytest.raises(lightclip.InvalidInputError, match="text: token ids"):
        model.forward_train(data["images"], too_big)
    negative = data["masked_text"].clone()
    negative[3, 1] = -1
    with pytest.raises(lightclip.InvalidInputError, match="masked_text: token ids"):
        model(data["images"], data["text"], masked_text=negative)


def test_eval_transform_resizes_crops_and_normalises() -> None:
    _, train_t, val_t = lightclip.create_model_and_transforms("clip-tiny-mnv2")
    image = torch.full((3, 90, 130), 200, dtype=torch.uint8)
    out = val_t(image)
    assert tuple(out.shape) == (3, 64, 64)
    mean = torch.tensor(lightclip.models.transforms.CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(lightclip.models.transforms.CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(
        out, ((200 / 255 - mean) / std).expand(3, 64, 64), atol=1e-4, rtol=1e-4
    )
    # Centre crop: a stripe at the left edge of a wide image is cut away.
    wide = torch.zeros(3, 64, 192, dtype=torch.uint8)
    wide[:, :, :32] = 255
    assert torch.allclose(val_t(wide), val_t(torch.zeros(3, 64, 64, dtype=torch.uint8)), atol=1e-5)
    with pytest.raises(lightclip.InvalidInputError, match="image"):
        val_t(torch.zeros(4, 8, 8))
