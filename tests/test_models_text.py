"""The text tower: causal masking, EOT pooling by id (with the mask token present), input
errors, and equality with open_clip's TextTransformer loaded from our state dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightclip
from lightclip.models import EOT_TOKEN_ID, MASK_TOKEN_ID, SOT_TOKEN_ID
from lightclip.models.text import TextTransformer, causal_mask


@pytest.fixture(scope="module")
def tower() -> TextTransformer:
    torch.manual_seed(0)
    cfg = lightclip.models.get_model_config("clip-tiny-mnv2", text_width=32, text_heads=4)
    return TextTransformer(cfg).eval()


def captions(lengths: list[int], context: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), context, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, 0] = SOT_TOKEN_ID
        ids[b, 1 : n + 1] = torch.randint(1, 49000, (n,), generator=g)
        ids[b, n + 1] = EOT_TOKEN_ID
    return ids


def test_causal_mask_entries() -> None:
    m = causal_mask(5)
    for i in range(5):
        for j in range(5):
            assert (m[i, j] == 0) if j <= i else (m[i, j] == float("-inf"))


def test_changing_a_token_changes_only_later_positions(tower: TextTransformer) -> None:
    ids = captions([12, 20], tower.context_length)
    for j in (1, 7, 15):
        changed = ids.clone()
        changed[:, j] = (changed[:, j] + 1) % 49000 + 1
        with torch.no_grad():
            a, b = tower.forward_tokens(ids), tower.forward_tokens(changed)
        torch.testing.assert_close(a[:, :j], b[:, :j], atol=0, rtol=0)
        assert (a[:, j:] - b[:, j:]).abs().amax(-1).min() > 1e-6  # every later position moves


def test_eot_pooling_finds_the_eot_id_with_mask_tokens_present(tower: TextTransformer) -> None:
    ids = captions([5, 9, 14], tower.context_length, seed=1)
    ids[:, 2] = MASK_TOKEN_ID  # larger than EOT: argmax over ids would pick it
    with torch.no_grad():
        states = tower.forward_tokens(ids)
        pooled = tower(ids)
    for b in range(ids.shape[0]):
        eot = ids[b].tolist().index(EOT_TOKEN_ID)
        assert int(ids[b].argmax()) == 2 != eot
        torch.testing.assert_close(pooled[b], states[b, eot] @ tower.text_projection)


def test_bad_ids_are_refused_with_the_argument_named(tower: TextTransformer) -> None:
    ids = captions([5], tower.context_length)
    with pytest.raises(lightclip.InvalidInputError, match="text.*no EOT"):
        tower(torch.where(ids == EOT_TOKEN_ID, 7, ids))
    with pytest.raises(lightclip.InvalidInputError, match=r"text.*\[0, 49409\)"):
        tower(torch.where(ids == 0, 49409, ids))
    with pytest.raises(lightclip.InvalidInputError, match="context_length"):
        tower(captions([5], tower.context_length + 1))
    with pytest.raises(lightclip.InvalidInputError, match="int64"):
        tower(ids.float())


def test_stage_states_are_the_layer_outputs_every_two_layers(tower: TextTransformer) -> None:
    ids = captions([6, 11], tower.context_length)
    with torch.no_grad():
        stages = tower.forward_stages(ids)
        x = tower.embed(ids)
        mask = causal_mask(ids.shape[1])
        by_layer = []
        for block in tower.transformer.resblocks:
            x = block(x, mask)
            by_layer.append(x)
        final = tower.forward_tokens(ids)
    assert len(stages) == 4 and tower.layers_per_stage == 2
    for s, state in enumerate(stages):
        torch.testing.assert_close(state, by_layer[2 * s + 1])
    torch.testing.assert_close(tower.ln_final(stages[-1]), final)


def test_shorter_rows_than_the_context_are_accepted(tower: TextTransformer) -> None:
    ids = captions([4, 6], tower.context_length)
    with torch.no_grad():
        torch.testing.assert_close(tower(ids), tower(ids[:, :10]))


def test_text_tower_equals_open_clip_text_transformer() -> None:
    transformer = pytest.importorskip("open_clip.transformer")
    torch.manual_seed(0)
    model = lightclip.create_model(
        "clip-tiny-mnv2", text_width=64, text_heads=4, embed_dim=48
    ).eval()
    cfg = model.config
    ref = transformer.TextTransformer(
        context_length=cfg.context_length, vocab_size=cfg.vocab_size, width=cfg.text_width,
        heads=cfg.text_heads, layers=cfg.text_layers, output_dim=cfg.embed_dim,
        act_layer=nn.GELU, pool_type="eos", eos_id=EOT_TOKEN_ID,
    ).eval()  # fmt: skip
    ref.load_state_dict(model.text.state_dict(), strict=True)
    ids = captions([3, 10, 25], cfg.context_length, seed=2)
    ids[1, 4] = MASK_TOKEN_ID
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids), ref(ids), atol=1e-5, rtol=1e-5)
