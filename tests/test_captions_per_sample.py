"""--captions-per-sample: every caption of an image in one step. The pipeline's other captions
against the shard's own captions, the loss against per-caption-set CLIP losses written here,
the model's features against encode_text, the flags, and a run."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lightclip
from lightclip import AugmentationConfig, DataPipeline, TextConfig
from lightclip.config import parse_args
from lightclip.losses import LightCLIPLoss
from quiet_run import quiet_config
from train_fakes import FakePipeline

CONTEXT = 32
WHOLE_PICTURE = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0.0, blur_p=0.0)


def _swap_left_right(caption: str) -> str:
    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        return other.upper() if word.isupper() else other.title() if word.istitle() else other

    return re.sub(r"\b(left|right)\b", swap, caption, flags=re.IGNORECASE)


def _pipeline(shard: Path, captions: int, flip: float = 0.0, train: bool = True) -> DataPipeline:
    return DataPipeline(
        shard,
        batch_size=16,
        image_size=32,
        train=train,
        seed=5,
        all_captions=True,
        sample_ids=True,
        augmentation=AugmentationConfig(flip_p=flip, **WHOLE_PICTURE),
        text=TextConfig(context_length=CONTEXT, captions_per_sample=captions, eda_prob=0.0),
    )


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_a_batch_holds_every_caption_of_each_image_once_flipped_with_it(flickr8k_dir, flip):
    tokenizer = lightclip.get_tokenizer("clip-tiny-mnv2", context_length=CONTEXT)
    swapped = 0
    for batch in itertools.islice(_pipeline(flickr8k_dir / "train-000000.tar", 5, flip), 8):
        assert batch["other_text"].shape == (16, 4, CONTEXT)
        for i, captions in enumerate(batch["all_captions"]):
            assert len(captions) == 5
            edited = [_swap_left_right(c) if flip else c for c in captions]
            swapped += edited != captions
            expected = tokenizer(edited)
            rows = torch.cat([batch["text"][i : i + 1], batch["other_text"][i]])
            # The drawn caption first, then the four others, each once.
            assert torch.equal(rows[0], expected[batch["caption_index"][i]])
            assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, expected.tolist()))
    if flip:
        assert swapped > 0  # 128 images name a left or a right somewhere


def test_the_drawn_caption_and_the_pictures_are_those_of_one_caption_a_sample(flickr8k_dir):
    shard = flickr8k_dir / "train-000000.tar"
    single, several = next(iter(_pipeline(shard, 1, 0.5))), next(iter(_pipeline(shard, 3, 0.5)))
    assert "other_text" not in single
    for key in ("image", "text", "masked_text", "mlm_labels"):
        assert torch.equal(single[key], several[key]), key
    # Too few captions to fill K - 1 without the drawn one: they repeat, in their order when
    # evaluating.
    evaluation = next(iter(_pipeline(shard, 8, train=False)))
    tokenizer = lightclip.get_tokenizer("clip-tiny-mnv2", context_length=CONTEXT)
    expected = tokenizer(evaluation["all_captions"][0])
    assert torch.equal(evaluation["text"][0], expected[0])
    assert torch.equal(evaluation["other_text"][0], expected[[1, 2, 3, 4, 1, 2, 3]])


def _clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    logits = scale * image @ text.T
    labels = torch.arange(len(image))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def test_the_loss_averages_one_clip_loss_per_caption_set() -> None:
    torch.manual_seed(0)
    image = F.normalize(torch.randn(6, 8), dim=-1)
    texts = F.normalize(torch.randn(6, 3, 8), dim=-1)
    scale = torch.tensor(7.0)
    out = {
        "image_features": image,
        "text_features": texts[:, 0],
        "other_text_features": texts[:, 1:],
        "logit_scale": scale,
    }
    loss = LightCLIPLoss.from_config(lightclip.TrainConfig(recipe="clip"))
    total, parts = loss(out, {}, 0.5)
    expected = sum(_clip_loss(image, texts[:, k], scale) for k in range(3)) / 3
    torch.testing.assert_close(parts["ins"], expected)
    torch.testing.assert_close(total, expected)
    # Not the loss of one batch of 18 pairs, where an image meets its own captions.
    flat = _clip_loss(image.repeat_interleave(3, 0), texts.flatten(0, 1), scale)
    assert not torch.isclose(parts["ins"], flat)


def test_the_model_encodes_the_other_captions_as_encode_text_does() -> None:
    torch.manual_seed(0)
    model = lightclip.create_model("clip-tiny-mnv2").eval()
    tokenizer = lightclip.get_tokenizer("clip-tiny-mnv2")
    text = tokenizer(["a dog", "a cat"])
    others = tokenizer(["a brown dog runs", "dog", "a cat sleeps", "two cats"]).view(2, 2, -1)
    out = model(torch.randn(2, 3, 64, 64), text, other_text=others)
    expected = model.encode_text(others.flatten(0, 1), normalize=True).view(2, 2, -1)
    torch.testing.assert_close(out["other_text_features"], expected)
    torch.testing.assert_close(out["text_features"], model.encode_text(text, normalize=True))
    with pytest.raises(lightclip.InvalidInputError, match="other_text"):
        model(torch.randn(2, 3, 64, 64), text, other_text=others[:1])


def test_a_batch_without_the_other_captions_is_refused(tmp_path) -> None:
    config = quiet_config(tmp_path, recipe="clip", steps=1, captions_per_sample=3)
    with pytest.raises(lightclip.DataError, match="other_text \\[batch, 2, context\\], got none"):
        lightclip.train(config, data=FakePipeline(num_samples=8, batch_size=4))


def test_flags_and_refusals() -> None:
    assert parse_args(["--captions-per-sample", "5"]).captions_per_sample == 5
    assert parse_args([]).captions_per_sample == 1
    for bad in (0, 65):
        with pytest.raises(lightclip.InvalidInputError, match="--captions-per-sample"):
            lightclip.TrainConfig(captions_per_sample=bad)
    with pytest.raises(lightclip.InvalidInputError, match="captions_per_sample"):
        TextConfig(captions_per_sample=0)
    with pytest.raises(
        lightclip.InvalidInputError, match="--captions-per-sample takes no --distill-labels"
    ):
        lightclip.TrainConfig(
            captions_per_sample=2,
            distill_labels=True,
            soft_labels=True,
            distill_model="local-dir:unread",  # a teacher folder brings its own weights
        )


def test_a_run_with_five_captions_a_sample(flickr8k_dir, tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    seen = []
    parts = LightCLIPLoss.parts

    def recording_parts(self, out, batch, progress):
        seen.append(tuple(out["other_text_features"].shape))
        return parts(self, out, batch, progress)

    monkeypatch.setattr(LightCLIPLoss, "parts", recording_parts)
    config = quiet_config(
        tmp_path,
        recipe="lightclip",  # the token and MLM losses read the drawn captions
        train_data=str(flickr8k_dir / "train-000000.tar"),
        steps=3,
        batch_size=8,
        image_size=32,
        workers=1,
        captions_per_sample=5,
    )
    result = lightclip.train(config)
    assert result.step == 3
    assert seen == [(8, 4, 128)] * 3  # every step's loss met the four other captions
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert all(h["loss_tok"] > 0 and h["loss_mlm"] > 0 for h in result.history)
