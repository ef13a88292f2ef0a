"""L_tok, `lightclip.losses.TokenAlignmentLoss` (python/lightclip/losses/token_alignment.py).

Values against an independent reference (torch cosine + scipy's assignment, item by item),
gradients by finite differences (gradcheck) and against the reference's autograd, padding
words never matched, empty captions, bad input. Through the model: the tokens in the joint
embedding space equal each tower's own modules applied per token, and L_tok's gradient reaches
those projections.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

import lightclip
from lightclip.losses import TokenAlignmentLoss


def reference_loss(image_tokens, word_tokens, word_lengths) -> torch.Tensor:
    """SPEC §2 written out with torch and scipy, one item at a time."""
    per_item = []
    for v, t, n in zip(image_tokens, word_tokens, word_lengths.tolist(), strict=True):
        if n == 0:
            continue
        s = F.normalize(v, dim=-1) @ F.normalize(t[:n], dim=-1).T  # [N, n]
        r, c = linear_sum_assignment((1 - s).detach().numpy())
        per_item.append(1 - s[torch.as_tensor(r), torch.as_tensor(c)].mean())
    return torch.stack(per_item).mean()


def batch(seed: int, b=4, n=7, length=9, dim=5, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(b, n, dim, generator=gen, dtype=dtype, requires_grad=True)
    words = torch.randn(b, length, dim, generator=gen, dtype=dtype, requires_grad=True)
    lengths = torch.randint(1, length + 1, (b,), generator=gen)
    return image, words, lengths


@pytest.mark.parametrize("seed", range(5))
def test_value_and_gradients_match_the_reference(seed: int) -> None:
    image, words, lengths = batch(seed)
    ours = TokenAlignmentLoss()(image, words, lengths)
    ours.backward()
    grads = image.grad.clone(), words.grad.clone()
    image.grad = words.grad = None
    want = reference_loss(image, words, lengths)
    want.backward()
    torch.testing.assert_close(ours, want)
    torch.testing.assert_close(grads[0], image.grad)
    torch.testing.assert_close(grads[1], words.grad)


def test_gradcheck_through_the_matched_entries() -> None:
    # Random continuous inputs: the optimal matching is unique and stays put under the tiny
    # perturbations of the finite differences, so the loss is smooth there.
    image, words, lengths = batch(7, b=3, n=6, length=5, dim=4)
    assert torch.autograd.gradcheck(
        lambda v, t: TokenAlignmentLoss()(v, t, lengths), (image, words), eps=1e-6, atol=1e-7
    )


def test_more_words_than_patches_matches_every_patch() -> None:
    # 3 patches, 8 words: min(3, 8) = 3 pairs, every patch used.
    image, words, _ = batch(3, b=2, n=3, length=8)
    lengths = torch.tensor([8, 5])
    torch.testing.assert_close(
        TokenAlignmentLoss()(image, words, lengths), reference_loss(image, words, lengths)
    )


def test_padding_words_are_never_matched() -> None:
    image, words, lengths = batch(1)
    padded = words.detach().clone()
    for b, n in enumerate(lengths.tolist()):
        padded[b, n:] = image.detach()[b, 0] * 100  # a perfect, tempting match if it were read
    torch.testing.assert_close(
        TokenAlignmentLoss()(image, padded, lengths), TokenAlignmentLoss()(image, words, lengths)
    )


def test_items_without_words_contribute_nothing() -> None:
    image, words, lengths = batch(2)
    with_empty = lengths.clone()
    with_empty[1] = 0
    keep = torch.tensor([0, 2, 3])
    torch.testing.assert_close(
        TokenAlignmentLoss()(image, words, with_empty),
        TokenAlignmentLoss()(image[keep], words[keep], lengths[keep]),
    )
    none = TokenAlignmentLoss()(image, words, torch.zeros(4, dtype=torch.long))
    assert none.item() == 0.0 and none.requires_grad
    none.backward()
    assert (image.grad == 0).all()


def test_perfectly_aligned_tokens_give_zero_loss() -> None:
    gen = torch.Generator().manual_seed(4)
    words = F.normalize(torch.randn(2, 5, 16, generator=gen), dim=-1)
    image = torch.cat([words[:, torch.randperm(5, generator=gen)], torch.randn(2, 4, 16)], dim=1)
    loss = TokenAlignmentLoss()(image, words, torch.tensor([5, 5]))
    assert abs(loss.item()) < 1e-6


def test_float32_model_outputs_work() -> None:
    image, words, lengths = batch(5, dtype=torch.float32, b=8, n=49, length=75, dim=32)
    loss = TokenAlignmentLoss()(image, words, lengths)
    assert loss.dtype == torch.float32 and 0.0 <= loss.item() <= 2.0
    want = reference_loss(image.double(), words.double(), lengths)
    assert abs(loss.item() - want.item()) < 1e-4


def test_lengths_of_the_model_contract_shape() -> None:
    # word_tokens has context_length - 2 positions; lengths may reach it but not exceed it.
    image, words, _ = batch(6, length=4)
    TokenAlignmentLoss()(image, words, torch.tensor([4, 4, 4, 4]))
    with pytest.raises(ValueError, match=r"`word_lengths` must lie in 0..=4"):
        TokenAlignmentLoss()(image, words, torch.tensor([4, 5, 1, 1]))


@pytest.mark.parametrize(
    ("shapes", "lengths", "message"),
    [
        (((2, 3, 4), (2, 5)), [1, 1], "must be 3-D"),
        (((2, 3, 4), (3, 5, 4)), [1, 1], "`word_tokens` has batch 3"),
        (((2, 3, 4), (2, 5, 4)), [1, 1, 1], r"`word_lengths` must be 1-D with one length"),
        (((2, 3, 4), (2, 5, 4)), [-1, 1], r"`word_lengths` must lie in"),
    ],
)
def test_bad_input_names_the_argument(shapes, lengths, message) -> None:
    (a, b) = shapes
    with pytest.raises(lightclip.InvalidInputError, match=message):
        TokenAlignmentLoss()(torch.randn(*a), torch.randn(*b), torch.tensor(lengths))


def test_nan_tokens_are_refused_not_matched() -> None:
    image, words, lengths = batch(8)
    image = image.detach().clone()
    image[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`cost`.*item 0"):
        TokenAlignmentLoss()(image, words, lengths)


def test_matches_are_those_of_match_tokens() -> None:
    # The loss uses exactly the pairs match_tokens returns on 1 - cosine.
    image, words, lengths = batch(9, b=3)
    s = F.cosine_similarity(image.unsqueeze(-2), words.unsqueeze(-3), dim=-1).detach()
    rows, cols = lightclip.match_tokens(1 - s, cols_valid=lengths)
    picked = np.array(
        [s[b, rows[b][rows[b] >= 0], cols[b][rows[b] >= 0]].mean().item() for b in range(3)]
    )
    want = float(np.mean(1 - picked))
    assert abs(TokenAlignmentLoss()(image, words, lengths).item() - want) < 1e-12


# ---------------------------------------------------------------- through the model (joint space)

SWIN = dict(image_tower="swin", swin_embed_dim=16, swin_depths=(1,) * 4, swin_heads=(1, 2, 2, 4))


def tiny_model(tower: str) -> lightclip.LightCLIP:
    base = "lightclip-tiny-r18" if tower == "resnet18" else "lightclip-tiny-mnv2"
    extra = SWIN if tower == "swin" else {}
    return lightclip.create_model(base, seed=0, mlm=False, fusion_stages=(), **extra).eval()


def captions(context: int, lengths: list[int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    text = torch.zeros(len(lengths), context, dtype=torch.long)
    for b, n in enumerate(lengths):
        text[b, 0], text[b, n + 1] = 49406, 49407
        text[b, 1 : n + 1] = torch.randint(1, 49000, (n,), generator=gen)
    return text


def reference_image_tokens(model: lightclip.LightCLIP, stage4: torch.Tensor) -> torch.Tensor:
    """Each tower's own head modules applied at every stage-4 location, unpooled."""
    visual, cfg = model.visual, model.config
    if cfg.image_tower == "mobilenetv2":
        return visual.head.proj(visual.trunk.forward_head_features(stage4).flatten(2).mT)
    if cfg.image_tower == "swin":
        return visual.head.proj(visual.trunk.norm(stage4.flatten(2).mT))
    # MaskCLIP's reading of the attention pool: value then output projection of every spatial
    # token plus its positional embedding (row 0 belongs to the mean token).
    head = visual.head
    return head.c_proj(head.v_proj(stage4.flatten(2).mT + head.positional_embedding[1:]))


@pytest.mark.parametrize("tower", ["mobilenetv2", "resnet18", "swin"])
def test_model_tokens_are_the_towers_own_projections_and_l_tok_matches_scipy(tower: str) -> None:
    model = tiny_model(tower)
    assert model.config.image_tower == tower and model.config.token_space == "joint"
    assert model.token_proj_image is None and model.token_proj_text is None
    lengths = [3, 9, 1, 6]
    text = captions(model.config.context_length, lengths)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    out = model.forward_train(images, text)
    assert out["word_lengths"].tolist() == lengths
    with torch.no_grad():
        stage4 = model.visual.forward_stages(images)[-1]
        image_ref = reference_image_tokens(model, stage4)
        states = model.text.forward_tokens(text)
        words_ref = states[:, 1:-1] @ model.text.text_projection  # word j = position j+1
    assert tuple(image_ref.shape) == (4, 4, model.config.embed_dim)
    torch.testing.assert_close(out["image_tokens"], F.normalize(image_ref, dim=-1))
    for b, n in enumerate(lengths):
        torch.testing.assert_close(out["word_tokens"][b, :n], F.normalize(words_ref[b, :n], dim=-1))
    if tower == "mobilenetv2":
        # conv_head is 1x1 and proj linear: the mean of the tokens is the global embedding.
        torch.testing.assert_close(image_ref.mean(dim=1), model.visual.forward_head(stage4))
    lengths_t = torch.tensor(lengths)
    ours = TokenAlignmentLoss()(out["image_tokens"], out["word_tokens"], lengths_t)
    padded = F.pad(words_ref, (0, 0, 0, out["word_tokens"].shape[1] - words_ref.shape[1]))
    want = reference_loss(image_ref, padded, lengths_t)
    torch.testing.assert_close(ours.detach(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tower", ["mobilenetv2", "resnet18", "swin"])
def test_l_tok_alone_trains_the_towers_joint_projections(tower: str) -> None:
    model = tiny_model(tower)
    text = captions(model.config.context_length, [4, 7])
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    out = model.forward_train(images, text)
    TokenAlignmentLoss()(out["image_tokens"], out["word_tokens"], out["word_lengths"]).backward()
    head = model.visual.head
    projections = {"text.text_projection": model.text.text_projection}
    if tower == "resnet18":
        projections.update({"v_proj": head.v_proj.weight, "c_proj": head.c_proj.weight})
    else:
        projections["head.proj"] = head.proj.weight
    for name, p in projections.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
