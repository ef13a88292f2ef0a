"""MLM masking (lightclip._core.mlm_mask) and word lengths: BERT's 15 % / 80-10-10 within
tolerance over many captions, special tokens never touched, seeded per sample, bad input."""

from __future__ import annotations

import pytest
import torch

import lightclip
from lightclip._core import mlm_mask, word_lengths
from lightclip.errors import InvalidDtypeError, InvalidInputError

SOT, EOT, MASK = lightclip.SOT_TOKEN, lightclip.EOT_TOKEN, lightclip.MASK_TOKEN


@pytest.fixture(scope="module")
def ids():
    tok = lightclip.get_tokenizer()
    words = "a dog cat runs jumps over the green grass near small red ball ! ,".split()
    g = torch.Generator().manual_seed(0)
    captions = [
        " ".join(words[j] for j in torch.randint(len(words), (int(n),), generator=g))
        for n in torch.randint(0, 90, (4000,), generator=g)
    ]
    return tok(captions, context_length=40)


def reference_word_lengths(ids: torch.Tensor) -> torch.Tensor:
    # The first EOT after SOT, by its id (never by argmax: MASK is larger than EOT).
    return (ids == EOT).int().argmax(dim=1) - 1


def test_word_lengths_match_torch(ids):
    assert torch.equal(word_lengths(ids), reference_word_lengths(ids))
    assert word_lengths(ids[0]).shape == ()
    masked, _ = mlm_mask(ids, 0)
    assert torch.equal(word_lengths(masked), reference_word_lengths(ids))


def test_rates_are_bert_and_specials_are_untouched(ids):
    masked, labels = mlm_mask(ids, seed=1)
    assert masked.shape == labels.shape == ids.shape and masked.dtype == torch.int64
    lengths = reference_word_lengths(ids)
    positions = torch.arange(ids.shape[1])
    is_word = (positions >= 1) & (positions <= lengths[:, None])
    chosen = labels != -100
    assert not (chosen & ~is_word).any(), "a special or padding position was chosen"
    assert torch.equal(masked[~is_word], ids[~is_word])
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])

    rate = chosen.sum().item() / is_word.sum().item()
    assert abs(rate - 0.15) < 0.01, rate
    n = chosen.sum().item()
    to_mask = (masked[chosen] == MASK).sum().item() / n
    kept = (masked[chosen] == ids[chosen]).sum().item() / n
    random = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.015 and abs(random - 0.1) < 0.015
    replaced = masked[chosen & (masked != MASK) & (masked != ids)]
    assert ((replaced >= 0) & (replaced < SOT)).all(), "random tokens are ordinary tokens"


def test_seeded_per_sample(ids):
    a = mlm_mask(ids, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, mlm_mask(ids, seed=5), strict=True))
    assert not torch.equal(a[1], mlm_mask(ids, seed=6)[1])
    assert not torch.equal(a[1], mlm_mask(ids, seed=5, epoch=1)[1])
    part = mlm_mask(ids[100:110], seed=5, start_index=100)
    assert torch.equal(part[0], a[0][100:110]) and torch.equal(part[1], a[1][100:110])


def test_configurable_fractions(ids):
    masked, labels = mlm_mask(ids, 0, probability=1.0, mask_fraction=1.0, random_fraction=0.0)
    chosen = labels != -100
    assert (masked[chosen] == MASK).all()
    assert chosen.sum() == reference_word_lengths(ids).sum()
    masked, labels = mlm_mask(ids, 0, probability=0.0)
    assert (labels == -100).all() and torch.equal(masked, ids)


def test_bad_input_is_named():
    with pytest.raises(InvalidDtypeError, match="ids"):
        mlm_mask(torch.zeros(2, 5), 0)
    with pytest.raises(InvalidInputError, match="ids"):
        mlm_mask(torch.zeros(2, 3, 4, dtype=torch.long), 0)
    with pytest.raises(InvalidInputError, match="probability"):
        mlm_mask(torch.zeros(2, 5, dtype=torch.long), 0, probability=1.5)
    with pytest.raises(InvalidInputError, match="random_fraction"):
        mlm_mask(torch.zeros(2, 5, dtype=torch.long), 0, mask_fraction=0.9, random_fraction=0.2)
    with pytest.raises(InvalidDtypeError, match="ids"):
        word_lengths(torch.zeros(3, 4))


@pytest.mark.parametrize("rate", [0.15, 0.5])
def test_the_trainers_pipeline_masks_at_the_configured_rate(rate: float) -> None:
    from lightclip.config import TrainConfig
    from lightclip.data import build_pipeline

    config = TrainConfig(mlm=True, mlm_prob=rate, batch_size=256, workers=1, seed=3)
    pipeline = build_pipeline(
        config,
        "synthetic:train",
        train=True,
        image_size=16,
        context_length=32,
        rank=0,
        world_size=1,
        num_samples=256,
        device=torch.device("cpu"),
    )
    batch = next(iter(pipeline))
    text, labels = batch["text"], batch["mlm_labels"]
    position = torch.arange(text.shape[1])
    words = (position >= 1) & (position <= reference_word_lengths(text)[:, None])
    chosen = labels != -100
    assert not (chosen & ~words).any()  # SOT, EOT and padding are never chosen
    assert torch.equal(labels[chosen], text[chosen])  # a label is the original token
    # The count of chosen words within 5 standard deviations of the binomial's mean.
    n = int(words.sum())
    assert abs(int(chosen.sum()) - rate * n) < 5 * (n * rate * (1 - rate)) ** 0.5


def test_the_mlm_rate_is_checked() -> None:
    from lightclip.config import TrainConfig

    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(InvalidInputError, match="--mlm-prob"):
            TrainConfig(mlm_prob=bad)
    assert TrainConfig(mlm_prob=1.0).mlm_prob == 1.0
