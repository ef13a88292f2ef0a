"""Image transforms of the pipeline against independent references: Pillow's bicubic resize
and torchvision's centre crop for the evaluation transform (open_clip's; more sizes, JPEG and
open_clip itself in test_eval_preprocessing.py), a few lines of torch for blur and the colour
ops, exact identities for flip/grayscale/uint8 output."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightclip.data import normalize_uint8
from test_pipeline_sources import image_bytes, pipe, sample_members, unnormalize, write_tar

# Every random op off: the training transform reduces to a full-image resize.
NO_AUG = dict(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    jitter_p=0.0,
    grayscale_p=0.0,
    blur_p=0.0,
    flip_p=0.0,
    eda_prob=0.0,
)


def smooth_image(seed: int, size=(40, 30)) -> bytes:
    """A smooth picture (random low-frequency field): resampling differences stay small."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def one_sample_shard(tmp_path, data: bytes):
    return str(write_tar(tmp_path / "s.tar", [("k.png", data), ("k.txt", b"a picture")]))


def first_image(source, **kw) -> torch.Tensor:
    kw.setdefault("drop_last", False)
    return unnormalize(next(iter(pipe(source, **kw)))["image"])[0]


@pytest.mark.parametrize("size", [12, 24, 64])
def test_eval_transform_is_pillow_bicubic_of_the_shorter_side_then_centre_crop(tmp_path, size):
    data = smooth_image(1)
    got = first_image(one_sample_shard(tmp_path, data), train=False, image_size=size)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size  # 40 x 30: the shorter side is the height
    new_w = int(size * w / h)
    left = round((new_w - size) / 2)
    ref = img.resize((new_w, size), Image.BICUBIC).crop((left, 0, left + size, size))
    ref = torch.from_numpy(np.asarray(ref, dtype=np.float32) / 255).permute(2, 0, 1)
    assert (got - ref).abs().max() < 1e-6


def test_training_transform_without_randomness_is_the_eval_transform(tmp_path):
    source = one_sample_shard(tmp_path, image_bytes(4, size=(20, 20)))
    train = first_image(source, train=True, image_size=20, **NO_AUG)
    evaluation = first_image(source, train=False, image_size=20)
    assert torch.allclose(train, evaluation, atol=1e-6)


def test_grayscale_makes_the_channels_equal(tmp_path):
    source = one_sample_shard(tmp_path, image_bytes(2))
    kw = {**NO_AUG, "grayscale_p": 1.0}
    img = first_image(source, image_size=16, **kw)
    plain = first_image(source, image_size=16, **NO_AUG)
    luma = 0.2989 * plain[0] + 0.587 * plain[1] + 0.114 * plain[2]
    for c in range(3):
        assert torch.allclose(img[c], luma, atol=1e-5)


def test_blur_matches_a_torch_gaussian_with_reflect_padding(tmp_path):
    source = one_sample_shard(tmp_path, image_bytes(3, size=(32, 32)))
    sigma = 1.3
    blurred = first_image(
        source, image_size=32, **{**NO_AUG, "blur_p": 1.0, "blur_sigma": (sigma, sigma)}
    )
    plain = first_image(source, image_size=32, **NO_AUG)
    radius = int(np.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    ref = F.pad(plain[:, None], (radius, radius, radius, radius), mode="reflect")
    ref = F.conv2d(ref, k.view(1, 1, 1, -1))
    ref = F.conv2d(ref, k.view(1, 1, -1, 1))[:, 0]
    assert torch.allclose(blurred, ref, atol=1e-5)


def test_brightness_jitter_scales_every_pixel_by_one_factor(tmp_path):
    source = one_sample_shard(tmp_path, smooth_image(5, size=(24, 24)))
    kw = {**NO_AUG, "jitter_p": 1.0, "jitter": (0.4, 0.0, 0.0, 0.0)}
    factors = []
    for seed in range(6):
        img = first_image(source, image_size=24, seed=seed, **kw)
        plain = first_image(source, image_size=24, seed=seed, **NO_AUG)
        inside = (plain > 0.05) & (img < 0.99)
        ratio = img[inside] / plain[inside]
        assert ratio.max() - ratio.min() < 1e-4
        factors.append(float(ratio.mean()))
    assert all(0.6 - 1e-4 <= f <= 1.4 + 1e-4 for f in factors)
    assert max(factors) - min(factors) > 0.05  # the factor is drawn per sample


def test_uint8_output_is_the_float_output_quantised(tmp_path):
    members = []
    for i in range(4):
        members += sample_members(f"k{i}", i)
    source = str(write_tar(tmp_path / "s.tar", members))
    f32 = next(iter(pipe(source, image_size=16, seed=1, drop_last=False)))["image"]
    u8 = next(iter(pipe(source, image_size=16, seed=1, drop_last=False, image_dtype="uint8")))
    u8 = u8["image"]
    assert u8.dtype == torch.uint8
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    assert ((normalize_uint8(u8) - f32).abs() * std).max() <= 0.5 / 255 + 1e-6


def test_random_crops_vary_and_stay_in_range(tmp_path):
    source = one_sample_shard(tmp_path, smooth_image(6, size=(64, 48)))
    # MoCo-v2's crop, given explicitly: at 16 px the default is the whole picture.
    crop = dict(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3))
    images = [
        first_image(
            source, image_size=16, seed=s, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, **crop
        )
        for s in range(5)
    ]
    assert all(0 <= float(i.min()) and float(i.max()) <= 1 for i in images)
    assert len({round(float(i.sum()), 3) for i in images}) == 5


def test_grey_cmyk_and_alpha_inputs_become_rgb(tmp_path):
    members = []
    for i, (mode, fmt) in enumerate(
        [("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("L", "PNG"), ("RGB", "WEBP")]
    ):
        ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
        members += [
            (f"k{i}.{ext}", image_bytes(i, size=(16, 16), fmt=fmt, mode=mode)),
            (f"k{i}.txt", b"x"),
        ]
    source = str(write_tar(tmp_path / "s.tar", members))
    p = pipe(source, train=False, image_size=16, batch_size=8, on_error="raise")
    images = unnormalize(next(iter(p))["image"])
    assert images.shape[0] == 5
    for i, (mode, fmt) in enumerate(
        [("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("L", "PNG"), ("RGB", "WEBP")]
    ):
        ref = Image.open(io.BytesIO(members[2 * i][1])).convert("RGB")
        ref = torch.from_numpy(np.asarray(ref, dtype=np.float32) / 255).permute(2, 0, 1)
        tol = 0.5 / 255 if fmt != "JPEG" else 12 / 255  # JPEG decoders differ slightly
        assert (images[i] - ref).abs().mean() < tol, (mode, fmt)
