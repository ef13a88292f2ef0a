"""Image towers: stage shapes at several input sizes, channel counts, parameter counts against
the paper and against the reference architectures' known sizes, and the two attention
mechanisms (CLIP attention pool, Swin windows) against brute-force references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lightclip
from lightclip.models.attention_pool import AttentionPool2d
from lightclip.models.config import LightCLIPConfig
from lightclip.models.swin import SwinBlock

STAGE_CHANNELS = {
    "clip-r18": (64, 128, 256, 512),
    "clip-mnv2": (24, 32, 96, 320),
    "clip-swin-nano": (48, 96, 192, 384),
}


@pytest.fixture(scope="module")
def paper_models() -> dict[str, lightclip.LightCLIP]:
    return {name: lightclip.create_model(name, seed=0).eval() for name in STAGE_CHANNELS}


@pytest.mark.parametrize("name", sorted(STAGE_CHANNELS))
@pytest.mark.parametrize("hw", [(64, 64), (96, 96), (128, 64)])
def test_stage_shapes_and_channels(paper_models, name: str, hw: tuple[int, int]) -> None:
    model = paper_models[name]
    h, w = hw
    with torch.no_grad():
        stages = model.visual.forward_stages(torch.randn(2, 3, h, w))
        features = model.encode_image(torch.randn(2, 3, h, w))
    assert [s.shape[1] for s in stages] == list(STAGE_CHANNELS[name])
    assert tuple(model.visual.stage_channels) == STAGE_CHANNELS[name]
    for i, s in enumerate(stages):
        stride = 4 * 2**i
        assert tuple(s.shape) == (2, STAGE_CHANNELS[name][i], h // stride, w // stride)
    assert tuple(features.shape) == (2, model.config.embed_dim)
    assert torch.isfinite(features).all()


def test_parameter_counts_match_the_paper_and_the_reference_architectures(paper_models) -> None:
    r18, mnv2, swin = (paper_models[n] for n in ("clip-r18", "clip-mnv2", "clip-swin-nano"))
    # Trunks against the reference networks' published sizes minus their classifiers:
    # torchvision resnet18 11,689,512 - fc 513,000; mobilenet_v2 3,504,872 - 1,281,000.
    assert sum(p.numel() for p in r18.visual.trunk.parameters()) == 11_689_512 - 513_000
    assert sum(p.numel() for p in mnv2.visual.trunk.parameters()) == 3_504_872 - 1_281_000
    # Whole towers: the counts documented in the module docstrings.
    assert r18.num_parameters("visual") == 12_515_392
    assert mnv2.num_parameters("visual") == 2_879_232
    assert swin.num_parameters("visual") == 7_111_242
    # Paper: 12.51M / 2.45M / 7.11M. ResNet and Swin land on it; MobileNet-V2's head is
    # unspecified there, and head_width=768 is the documented way to match it.
    assert abs(r18.num_parameters("visual") / 12.51e6 - 1) < 0.001
    assert abs(swin.num_parameters("visual") / 7.11e6 - 1) < 0.001
    small_head = lightclip.create_model("clip-mnv2", head_width=768)
    assert abs(small_head.num_parameters("visual") / 2.45e6 - 1) < 0.002
    # The text tower: 8 layers of width 512 plus embeddings and projection.
    width, vocab, ctx = 512, 49409, 77
    layer = (
        4 * width
        + (3 * width * width + 3 * width)
        + (width * width + width)
        + 2 * (4 * width * width)
        + 5 * width
    )
    expected_text = vocab * width + ctx * width + 8 * layer + 2 * width + width * 512
    assert mnv2.num_parameters("text") == expected_text


def test_attention_pool_matches_torch_multi_head_attention() -> None:
    torch.manual_seed(0)
    pool = AttentionPool2d(spatial=2, channels=32, heads=4, output_dim=16)
    x = torch.randn(3, 32, 2, 2)
    tokens = x.flatten(2).permute(2, 0, 1)  # [HW, B, C]
    tokens = torch.cat([tokens.mean(0, keepdim=True), tokens]) + pool.positional_embedding[:, None]
    ref, _ = F.multi_head_attention_forward(
        query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=32, num_heads=4,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight, in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False,
    )  # fmt: skip
    torch.testing.assert_close(pool(x), ref[0], atol=1e-5, rtol=1e-5)


def test_attention_pool_resizes_its_positional_embedding_only_off_size() -> None:
    pool = AttentionPool2d(spatial=7, channels=8, heads=2, output_dim=8)
    assert pool.positional(7, 7) is pool.positional_embedding
    assert tuple(pool.positional(3, 5).shape) == (16, 8)
    torch.testing.assert_close(pool.positional(3, 5)[0], pool.positional_embedding[0])


def swin_reference(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Shifted-window attention written as dense attention with an explicit mask: cells i, j
    attend iff they fall in the same window of a grid whose boundaries sit at shift + k*ws
    (what Swin's cyclic roll + region mask amounts to); padding never enters."""
    _, h, w, c = x.shape
    ws = min(block.window, h, w)
    s = ws // 2 if block.shifted and min(h, w) > block.window else 0
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ii, jj = ii.flatten(), jj.flatten()
    group = torch.div(ii - s, ws, rounding_mode="floor") * 1000 + torch.div(
        jj - s, ws, rounding_mode="floor"
    )
    allowed = group[:, None] == group[None, :]
    attn = block.attn
    heads, win = attn.heads, attn.window
    y = block.norm1(x)[0].reshape(h * w, c)
    q, k, v = attn.qkv(y).reshape(h * w, 3, heads, c // heads).permute(1, 2, 0, 3)
    rel = (ii[:, None] - ii[None, :] + win - 1) * (2 * win - 1) + (
        jj[:, None] - jj[None, :] + win - 1
    )
    bias = attn.relative_position_bias_table[rel.clamp(0, (2 * win - 1) ** 2 - 1)].permute(2, 0, 1)
    scores = q @ k.transpose(1, 2) / (c // heads) ** 0.5 + bias
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(0, 1).reshape(h * w, c)
    x = x + attn.proj(out).reshape(1, h, w, c)
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("hw", [(14, 14), (12, 12), (8, 12), (9, 9), (3, 3), (2, 4)])
def test_swin_block_matches_dense_masked_attention(shifted: bool, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    block = SwinBlock(dim=24, heads=3, window=7, shifted=shifted)
    x = torch.randn(1, *hw, 24)
    with torch.no_grad():
        torch.testing.assert_close(block(x), swin_reference(block, x), atol=1e-5, rtol=1e-5)


def test_any_multiple_of_32_is_accepted_and_others_are_refused() -> None:
    model = lightclip.create_model("clip-tiny-mnv2")
    assert tuple(model.encode_image(torch.randn(1, 3, 160, 32)).shape) == (
        1,
        model.config.embed_dim,
    )
    with pytest.raises(lightclip.InvalidInputError, match="images.*multiples of 32"):
        model.encode_image(torch.randn(1, 3, 64, 48))
    with pytest.raises(lightclip.InvalidInputError, match="images.*float"):
        model.encode_image(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(lightclip.InvalidInputError, match="image_size"):
        lightclip.create_model("clip-mnv2", image_size=100)
    assert isinstance(LightCLIPConfig().replace(image_size=96), LightCLIPConfig)


@pytest.mark.parametrize("preset", ["lightclip-tiny-mnv2", "lightclip-tiny-r18"])
def test_zero_init_residual_starts_every_residual_block_as_the_identity(preset: str) -> None:
    from lightclip.models.mobilenet import InvertedResidual
    from lightclip.models.resnet import BasicBlock

    torch.manual_seed(0)
    # None: the tiny presets' own setting, which is on.
    for zero, option in ((True, None), (True, True), (False, False)):
        overrides = {} if option is None else {"zero_init_residual": option}
        model = lightclip.create_model(preset, seed=0, **overrides).train()
        blocks = [
            m
            for m in model.visual.modules()
            if (isinstance(m, InvertedResidual) and m.use_residual)
            or (isinstance(m, BasicBlock) and m.downsample is None)
        ]
        assert len(blocks) >= 3
        for block in blocks:
            channels = block.bn3.num_features if hasattr(block, "bn3") else block.bn2.num_features
            x = torch.rand(4, channels, 8, 8)  # non-negative, as after the previous block's ReLU
            same = torch.allclose(block(x), x)
            assert same == zero
