"""One evaluation preprocessing everywhere: open_clip's own preprocess (built by
open_clip from our export's config), the Rust pipeline's evaluation batch and ``EvalTransform``
give the same tensors for pictures of assorted sizes and aspects, shrunk and enlarged.

All three must give Pillow's 8-bit pixels exactly, for PNG and for JPEG: the pipeline's
evaluation path decodes JPEG with libjpeg-turbo set up as Pillow sets it up (its training path
keeps the faster zune-jpeg, whose pixels differ by a few levels).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightclip
from lightclip.errors import InvalidDtypeError, InvalidInputError
from lightclip.models.transforms import EvalTransform
from test_pipeline_sources import pipe, write_tar

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("timm")
from lightclip.openclip_export import export_openclip, load_openclip  # noqa: E402

#: (width, height): landscape and portrait shrinks, a square, an enlargement, and 75x131,
#: whose resized long side leaves an odd margin (the centre crop's half-to-even rounding).
PICTURE_SIZES = [(128, 96), (300, 200), (64, 64), (40, 30), (75, 131)]
MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)


def picture(seed: int, width: int, height: int) -> np.ndarray:
    """Gradients, 8-pixel blocks and noise: every resampling and rounding detail shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 64 * 4])
    blocks = np.kron(rng.integers(0, 256, (3, height // 8 + 1, width // 8 + 1)), np.ones((8, 8)))
    noisy = 0.5 * ramps + 0.3 * blocks[:, :height, :width] + rng.normal(0, 40, (3, height, width))
    return np.clip(noisy, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def shard_of(tmp_path: Path, fmt: str) -> tuple[str, list[bytes]]:
    files = [encode(picture(i, w, h), fmt) for i, (w, h) in enumerate(PICTURE_SIZES)]
    members = []
    for i, data in enumerate(files):
        members += [(f"k{i}.{fmt.lower()}", data), (f"k{i}.txt", b"a picture")]
    return str(write_tar(tmp_path / f"{fmt}.tar", members)), files


def pipeline_images(source: str, image_size: int, **kw) -> torch.Tensor:
    """The pipeline's evaluation batch of every picture in the shard, in shard order."""
    kw.setdefault("batch_size", len(PICTURE_SIZES))
    batch = next(iter(pipe(source, train=False, image_size=image_size, drop_last=False, **kw)))
    assert batch["image"].shape[0] == kw["batch_size"]
    return batch["image"]


def levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of two normalised images, in 8-bit levels."""
    return ((a - b) * STD * 255).abs()


@pytest.fixture(scope="module", params=[64, 224])
def exported(request, tmp_path_factory):
    """A model at one image size, its export, and open_clip's (model, preprocess) from it."""
    image_size = request.param
    model = lightclip.create_model("clip-tiny-mnv2", seed=0, image_size=image_size).eval()
    export_dir = export_openclip(model, tmp_path_factory.mktemp(f"export{image_size}"))
    model_oc, _, preprocess = load_openclip(export_dir)
    return image_size, model, export_dir, model_oc.eval(), preprocess


def test_the_export_declares_open_clips_default_evaluation_preprocessing(exported):
    _, _, export_dir, _, _ = exported
    cfg = json.loads((export_dir / "open_clip_config.json").read_text())["preprocess_cfg"]
    assert (cfg["interpolation"], cfg["resize_mode"]) == ("bicubic", "shortest")
    assert cfg["mean"] == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert cfg["std"] == pytest.approx(open_clip.OPENAI_DATASET_STD)


def test_png_gives_open_clips_pixels_in_all_three(tmp_path, exported):
    image_size, _, _, _, preprocess = exported
    source, files = shard_of(tmp_path, "PNG")
    batch = pipeline_images(source, image_size)
    as_bytes = pipeline_images(source, image_size, image_dtype="uint8")
    ours = EvalTransform(image_size)
    for i, data in enumerate(files):
        path = tmp_path / f"k{i}.png"
        path.write_bytes(data)
        picture_in = Image.open(io.BytesIO(data))
        want = preprocess(picture_in)
        pixels = torch.from_numpy(np.asarray(picture_in.convert("RGB")).copy()).permute(2, 0, 1)
        for name, got in [
            ("pipeline", batch[i]),
            ("EvalTransform(PIL)", ours(picture_in)),
            ("EvalTransform(path)", ours(path)),
            ("EvalTransform(uint8 tensor)", ours(pixels)),
        ]:
            worst = float(levels(got, want).max())
            assert worst <= 1.0, f"{PICTURE_SIZES[i]} {name}: {worst:.3f} levels"
        # Beyond the one-level bound: the 8-bit pixels are Pillow's, bit for bit.
        want_bytes = ((want * STD + MEAN) * 255).round().to(torch.uint8)
        assert torch.equal(as_bytes[i], want_bytes), PICTURE_SIZES[i]


#: Pillow's JPEG writer options: chroma subsampling 4:2:0 (its default), 4:2:2 and 4:4:4
#: (each upsampled differently), progressive, and restart markers.
JPEG_VARIANTS = {
    "4:2:0": {"quality": 90},
    "4:2:2": {"quality": 75, "subsampling": 1},
    "4:4:4": {"quality": 95, "subsampling": 0},
    "progressive": {"quality": 80, "progressive": True},
    "restarts": {"quality": 85, "restart_marker_blocks": 3},
}


def jpeg_of(pixels: np.ndarray, mode: str = "RGB", **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format="JPEG", **options)
    return out.getvalue()


@pytest.mark.parametrize("variant", JPEG_VARIANTS)
def test_jpeg_gives_open_clips_pixels_in_all_three(tmp_path, exported, variant):
    image_size, _, _, _, preprocess = exported
    files = [
        jpeg_of(picture(i, w, h), **JPEG_VARIANTS[variant])
        for i, (w, h) in enumerate(PICTURE_SIZES)
    ]
    members = [
        m for i, data in enumerate(files) for m in [(f"k{i}.jpg", data), (f"k{i}.txt", b"x")]
    ]
    source = str(write_tar(tmp_path / "jpeg.tar", members))
    batch = pipeline_images(source, image_size)
    as_bytes = pipeline_images(source, image_size, image_dtype="uint8")
    ours = EvalTransform(image_size)
    for i, data in enumerate(files):
        picture_in = Image.open(io.BytesIO(data))
        want = preprocess(picture_in)
        assert torch.equal(ours(picture_in), want), PICTURE_SIZES[i]
        # The 8-bit pixels are open_clip's, bit for bit (max |d| 0 levels) ...
        want_bytes = ((want * STD + MEAN) * 255).round().to(torch.uint8)
        worst = int((as_bytes[i].int() - want_bytes.int()).abs().max())
        assert worst == 0, f"{variant} {PICTURE_SIZES[i]}: pipeline {worst} levels"
        # ... and normalising them differs only in float32 rounding (Rust fuses the steps
        # that torchvision's ToTensor and Normalize take one by one).
        torch.testing.assert_close(batch[i], want, atol=1e-6, rtol=0)


def pipeline_decoded(tmp_path: Path, data: bytes, train: bool = False) -> np.ndarray:
    """The pipeline's decoded pixels of one picture, as HxWx3 bytes: at an image size of the
    picture's own (square) size, evaluation resizes nothing, and training with no
    augmentation only takes the whole picture."""
    side = Image.open(io.BytesIO(data)).size[0]
    alone = write_tar(tmp_path / "one.tar", [("k.jpg", data), ("k.txt", b"x")])
    kw = {}
    if train:
        kw = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0)
        kw.update(grayscale_p=0.0, blur_p=0.0)
    batch = next(
        iter(
            pipe(str(alone), train=train, image_size=side, batch_size=1, image_dtype="uint8", **kw)
        )
    )
    return batch["image"][0].permute(1, 2, 0).numpy()


#: Pillow's JPEG modes: YCbCr, grey, and four-channel (Adobe) CMYK, which libjpeg hands over
#: as CMYK and Pillow converts to RGB itself.
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_evaluation_decodes_jpeg_as_pillow_and_training_as_before(tmp_path, mode):
    data = jpeg_of(picture(5, 48, 48), mode, quality=70)
    pillow = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(pipeline_decoded(tmp_path, data), pillow)
    # Training keeps zune-jpeg: a conforming decoder, but not Pillow's bit for bit.
    trained = pipeline_decoded(tmp_path, data, train=True).astype(int)
    assert 0 < np.abs(trained - pillow.astype(int)).max() <= 12


def repeated_last_scan(progressive: bytes, copies: int) -> bytes:
    """The file with its last scan (start-of-scan segment and entropy data) repeated."""
    last_scan = progressive.rindex(b"\xff\xda")
    end = progressive.rindex(b"\xff\xd9")
    scan = progressive[last_scan:end]
    return progressive[:end] + scan * copies + progressive[end:]


def test_a_jpeg_of_endless_scans_is_refused_not_decoded_for_minutes(tmp_path):
    progressive = jpeg_of(picture(6, 24, 24), quality=80, progressive=True)
    bomb = repeated_last_scan(progressive, 1500)
    # Pillow decodes it (libjpeg only warns about the repeated refinement): the bound refuses.
    assert Image.open(io.BytesIO(bomb)).convert("RGB").size == (24, 24)
    good = repeated_last_scan(progressive, 20)
    members = [("bomb.jpg", bomb), ("bomb.txt", b"x"), ("good.jpg", good), ("good.txt", b"x")]
    p = pipe(
        str(write_tar(tmp_path / "scans.tar", members)),
        train=False,
        batch_size=1,
        all_captions=True,
    )
    assert [k for b in p for k in b["key"]] == ["good"]
    assert p.stats()["skipped"] == {"corrupt_image": 1}


def test_same_embeddings_from_each_librarys_own_preprocessing(tmp_path, exported):
    image_size, model, _, model_oc, preprocess = exported
    pictures = [Image.fromarray(picture(10 + i, w, h)) for i, (w, h) in enumerate(PICTURE_SIZES)]
    ours = EvalTransform(image_size)
    with torch.no_grad():
        got = model.encode_image(torch.stack([ours(p) for p in pictures]), normalize=True)
        want = model_oc.encode_image(torch.stack([preprocess(p) for p in pictures]), normalize=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_float_tensors_follow_open_clips_tensor_path(exported):
    image_size, _, _, _, preprocess = exported
    gen = torch.Generator().manual_seed(3)
    for height, width in [(96, 128), (131, 75), (30, 40)]:
        x = torch.rand(3, height, width, generator=gen)
        torch.testing.assert_close(EvalTransform(image_size)(x), preprocess(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK"])
def test_other_picture_modes_are_handled_as_open_clip_does(mode):
    preprocess = open_clip.image_transform(48, is_train=False)
    rgb = Image.fromarray(picture(7, 70, 50))
    converted = rgb.convert(mode)
    if mode == "RGBA":
        converted.putalpha(Image.fromarray(picture(8, 70, 50)[:, :, 0]))
    assert torch.equal(EvalTransform(48)(converted), preprocess(converted))


def test_bad_pictures_get_named_errors(tmp_path):
    transform = EvalTransform(32)
    not_a_picture = tmp_path / "notes.txt"
    not_a_picture.write_text("hello")
    with pytest.raises(InvalidInputError, match="notes.txt"):
        transform(not_a_picture)
    with pytest.raises(InvalidDtypeError, match="int64"):
        transform(torch.zeros(3, 8, 8, dtype=torch.int64))
    with pytest.raises(InvalidInputError, match=r"\[3, H, W\]"):
        transform(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(InvalidInputError, match="got list"):
        transform([[0, 1]])
    with pytest.raises(InvalidInputError, match="image_size"):
        EvalTransform(0)
