"""``--aug-cfg``: open_clip's KEY=VALUE augmentation flag, parsed safely and reaching the
pipeline the trainer builds (checked on the pixels it yields)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lightclip import AugmentationConfig
from lightclip.augmentation import apply_aug_cfg, parse_aug_cfg
from lightclip.config import TrainConfig, parse_args
from lightclip.data import augmentation_defaults, build_pipeline, default_eda_prob
from lightclip.errors import InvalidInputError
from test_pipeline_sources import image_bytes, unnormalize, write_tar

NO_RANDOMNESS = [
    "scale=(1.0, 1.0)",
    "ratio=(1, 1)",
    "color_jitter_prob=0",
    "gray_scale_prob=0",
    "blur_prob=0",
    "flip_prob=0",
]


def test_the_command_line_takes_open_clip_style_pairs() -> None:
    config = parse_args(["--aug-cfg", "scale=(0.6,1)", "color_jitter=0.3", "gray_scale_prob=0"])
    assert config.aug_cfg == {"scale": (0.6, 1.0), "color_jitter": 0.3, "gray_scale_prob": 0.0}
    assert parse_args([]).aug_cfg == {}
    # One string (the Python API, a saved config) and a mapping read the same.
    assert TrainConfig(aug_cfg="scale=(0.6,1) color_jitter=0.3 gray_scale_prob=0").aug_cfg == (
        config.aug_cfg
    )
    assert TrainConfig(aug_cfg={"scale": [0.6, 1]}).aug_cfg == {"scale": (0.6, 1.0)}


def test_the_flag_given_twice_adds_up_and_a_key_given_twice_is_refused() -> None:
    config = parse_args(["--aug-cfg", "scale=(0.6,1)", "--aug-cfg", "color_jitter_prob=0"])
    assert config.aug_cfg == {"scale": (0.6, 1.0), "color_jitter_prob": 0.0}
    # Repeated across two flags, and within one.
    for between in (["--aug-cfg"], []):
        with pytest.raises(InvalidInputError, match="--aug-cfg scale: given twice"):
            parse_args(["--aug-cfg", "scale=(0.8,1)", *between, "scale=(0.6,1)"])


def test_a_saved_config_round_trips() -> None:
    config = TrainConfig(aug_cfg={"color_jitter": (0.4, 0.4, 0.2, 0.1), "blur_sigma": (0.1, 1)})
    again = TrainConfig.from_dict(config.to_dict())
    assert again.aug_cfg == config.aug_cfg


def test_the_settings_fill_an_augmentation_config() -> None:
    base = augmentation_defaults("x.tar", 224)
    cfg = parse_aug_cfg(NO_RANDOMNESS + ["color_jitter=(0.1, 0.2, 0.3, 0.05)"])
    assert apply_aug_cfg(cfg, base) == AugmentationConfig(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=0.0,
        flip_p=0.0,
        jitter=(0.1, 0.2, 0.3, 0.05),
        blur_sigma=base.blur_sigma,
    )
    assert apply_aug_cfg({"color_jitter": 0.4}, base).jitter == (0.4, 0.4, 0.4, 0.0)
    # A key left out keeps the source's default.
    small = augmentation_defaults("x.tar", 64)
    assert apply_aug_cfg({"flip_prob": 0.0}, small) == small.replace(flip_p=0.0)
    assert apply_aug_cfg({}, small) == small


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("crop=(0.5,1)", "unknown key"),
        ("scale", "expected KEY=VALUE"),
        ("scale=(0, 1)", "0 < lo <= hi"),
        ("scale=(0.5, 2)", "0 < lo <= hi <= 1"),
        ("scale=0.5", "a pair"),
        ("ratio=(2, 1)", "0 < lo <= hi"),
        ("gray_scale_prob=1.5", "probability"),
        ("blur_prob=nan", "not a Python literal"),
        ("blur_prob=float('nan')", "not a Python literal"),
        ("color_jitter=(0.4, 0.4)", "1 or 4 values"),
        ("color_jitter=-0.1", ">= 0"),
        ("color_jitter=(0.4, 0.4, 0.4, 0.6)", "hue"),
        ("flip_prob=True", "a number"),
        ("scale=__import__('os').system('false')", "not a Python literal"),
    ],
)
def test_bad_settings_name_the_key(pair: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        TrainConfig(aug_cfg=[pair])


def _first_image(config: TrainConfig, source: str, train: bool) -> torch.Tensor:
    pipeline = build_pipeline(
        config,
        source,
        train=train,
        image_size=16,
        context_length=77,
        rank=0,
        world_size=1,
        num_samples=None,
        device=torch.device("cpu"),
    )
    pipeline.drop_last = False
    return unnormalize(next(iter(pipeline))["image"])[0]


def test_the_settings_reach_the_trainers_pipeline(tmp_path) -> None:
    source = str(
        write_tar(tmp_path / "s.tar", [("k.png", image_bytes(4, size=(20, 20))), ("k.txt", b"x")])
    )
    base = dict(batch_size=1, eda_prob=0.0, workers=1)
    # With every random op off the training transform is the whole picture resized by the
    # training crop's antialiased bilinear (evaluation resizes bicubically, as open_clip) ...
    still = TrainConfig(aug_cfg=NO_RANDOMNESS, **base)
    picture = Image.open(io.BytesIO(image_bytes(4, size=(20, 20)))).convert("RGB")
    want = torch.from_numpy(np.asarray(picture.resize((16, 16), Image.BILINEAR)).copy())
    want = want.permute(2, 0, 1).float() / 255
    assert torch.allclose(_first_image(still, source, train=True), want, atol=1.5 / 255)
    # ... and grayscale at p = 1 makes the three channels equal, where the default (p 0.2
    # on real data, a random draw) need not.
    grey = TrainConfig(aug_cfg=[*NO_RANDOMNESS[:-3], "gray_scale_prob=1", "blur_prob=0"], **base)
    image = _first_image(grey, source, train=True)
    assert torch.allclose(image[0], image[1], atol=1e-5)
    assert torch.allclose(image[1], image[2], atol=1e-5)
    assert not torch.allclose(want[0], want[1], atol=1e-3)


def test_small_real_images_get_milder_defaults_than_large_ones() -> None:
    small, large = augmentation_defaults("x.tar", 64), augmentation_defaults("x.tar", 224)
    assert large.crop_scale == (0.2, 1.0) and large.grayscale_p == 0.2  # SPEC §2 MoCo-v2
    assert large == AugmentationConfig()
    assert small.crop_scale == (1.0, 1.0) and small.crop_ratio == (1.0, 1.0)
    assert small.jitter_p == small.grayscale_p == small.blur_p == 0.0
    assert small.flip_p == large.flip_p == 0.5
    assert augmentation_defaults("x.tar", 128) == small
    assert default_eda_prob("synthetic:train", 224) == 0.0
    assert default_eda_prob("x.tar", 224) == 0.5 and default_eda_prob("x.tar", 64) == 0.0


@pytest.mark.parametrize("size", [(20, 20), (30, 20), (20, 26)])
def test_small_real_images_train_on_the_whole_picture(tmp_path, size) -> None:
    # The default at small sizes, flip aside, is the picture's centre square (all of it when
    # it is square) resized: what evaluation sees, not a random part of it.
    picture_bytes = image_bytes(5, size=size)
    source = str(write_tar(tmp_path / "s.tar", [("k.png", picture_bytes), ("k.txt", b"x")]))
    config = TrainConfig(aug_cfg=["flip_prob=0"], batch_size=1, eda_prob=0.0, workers=1)
    side = min(size)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    picture = Image.open(io.BytesIO(picture_bytes)).convert("RGB")
    # PIL with box=, like the pipeline, lets the filter read past the crop's edge.
    square = picture.resize((16, 16), Image.BILINEAR, box=(left, top, left + side, top + side))
    want = torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1).float() / 255
    assert torch.allclose(_first_image(config, source, train=True), want, atol=1.5 / 255)


def test_synthetic_defaults_keep_what_the_captions_name() -> None:
    # Colours (no hue jitter, no grayscale) and the outlines of shapes a few pixels wide (no
    # blur): the captions name both, at any resolution.
    for size in (64, 224):
        synthetic = augmentation_defaults("synthetic:train", size)
        assert synthetic.jitter[3] == 0.0 and synthetic.grayscale_p == 0.0
        assert synthetic.blur_p == 0.0
        assert synthetic.crop_scale[0] >= 0.8
