"""--image-size-start (progressive resizing): the side each step trains at, the resize against
PIL's antialiased bilinear resampling, what the image tower receives in a real run, and the
errors for sides the towers cannot take."""

from __future__ import annotations

import csv
import importlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightclip
from lightclip.config import parse_args
from lightclip.errors import InvalidInputError
from lightclip.progressive_resize import image_size_at, resize_images
from quiet_run import quiet_config
from train_fakes import FakePipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")
train_module = importlib.import_module("lightclip.train")  # lightclip.train is the function


def test_the_side_grows_in_strides_of_32_and_is_full_from_the_ramp_end() -> None:
    total = 1000
    sides = [image_size_at(step / total, start=64, full=160, ramp_end=0.6) for step in range(total)]
    # Linear in the side from 64 at step 0 to 160 at step 600: 96 from a third of the way
    # (step 200), 128 from two thirds (step 400), 160 from step 600 on.
    assert sides[0] == 64 and sides[199] == 64
    assert sides[200] == 96 and sides[399] == 96
    assert sides[400] == 128 and sides[599] == 128
    assert set(sides[600:]) == {160}


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_resize_is_pils_antialiased_bilinear(channels_last: bool) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 128, 128, 3), dtype=np.uint8)
    images = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255).contiguous()
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    resized = resize_images(images, 96)
    assert resized.shape == (2, 3, 96, 96)
    assert resized.is_contiguous(memory_format=torch.channels_last) == channels_last
    for i in range(2):
        pil = Image.fromarray(pixels[i]).resize((96, 96), Image.Resampling.BILINEAR)
        reference = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255
        # PIL rounds to 8 bits; torch stays in float.
        assert torch.allclose(resized[i], reference, atol=1.5 / 255)


def test_an_image_already_at_the_side_is_not_touched() -> None:
    images = torch.rand(2, 3, 64, 64)
    assert resize_images(images, 64) is images


@pytest.fixture
def sides(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The side of every image batch the model of the next ``lightclip.train`` receives."""
    received: list[int] = []
    build = train_module.build_model

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda _m, a: received.append(a[0].shape[-1]))
        return model

    monkeypatch.setattr(train_module, "build_model", recording_build)
    return received


@pytest.mark.parametrize("recipe", ["clip", "lightclip"])
def test_a_run_trains_small_then_full_size_and_logs_the_side(
    tmp_path: Path, sides: list[int], recipe: str
) -> None:
    config = quiet_config(
        tmp_path, recipe=recipe, steps=8, image_size=64, image_size_start=32, warmup=0
    )
    result = lightclip.train(config, data=FakePipeline(num_samples=32, batch_size=4))

    assert sides == [32] * 4 + [64] * 4  # ramp end 0.5 (the default) of 8 steps
    assert [row["image_size"] for row in result.history] == sides
    with (tmp_path / "run" / "metrics.csv").open() as f:
        logged = [int(float(row["image_size"])) for row in csv.DictReader(f)]
    assert logged == sides


def test_without_the_option_every_step_trains_at_full_size(
    tmp_path: Path, sides: list[int]
) -> None:
    config = quiet_config(tmp_path, recipe="clip", steps=3, image_size=64, warmup=0)
    result = lightclip.train(config, data=FakePipeline(num_samples=16, batch_size=4))
    assert sides == [64] * 3
    assert "image_size" not in result.history[0]


def test_every_micro_batch_of_a_step_trains_at_the_steps_side(
    tmp_path: Path, sides: list[int]
) -> None:
    config = quiet_config(
        tmp_path, recipe="clip", steps=4, image_size=64, image_size_start=32, accum_freq=2
    )
    lightclip.train(config, data=FakePipeline(num_samples=32, batch_size=4))
    assert sides == [32] * 4 + [64] * 4


def test_a_resumed_run_trains_at_the_sides_of_a_run_never_stopped(
    tmp_path: Path, sides: list[int]
) -> None:
    config = partial(
        quiet_config, recipe="clip", steps=8, image_size=64, image_size_start=32,
        image_size_ramp_end=0.75, warmup=0,
    )  # fmt: skip
    lightclip.train(config(tmp_path / "whole"), data=FakePipeline(num_samples=32, batch_size=4))
    whole = list(sides)
    sides.clear()

    first = lightclip.train(
        config(tmp_path / "parts"),
        data=FakePipeline(num_samples=32, batch_size=4),
        on_step=lambda step, _metrics: step == 3,  # stop after step 3, as Ctrl-C does
    )
    assert first.interrupted
    lightclip.train(
        config(tmp_path / "parts", resume="latest"),
        data=FakePipeline(num_samples=32, batch_size=4),
    )
    assert whole == [32] * 6 + [64] * 2
    assert sides == whole


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (dict(image_size_start=48), "multiple of 32"),
        (dict(image_size_start=0), "multiple of 32"),
        (dict(image_size=64, image_size_start=64), "below --image-size 64"),
        (dict(image_size=128, image_size_start=160), "below --image-size 128"),
        (dict(image_size_ramp_end=0.5), "only applies with --image-size-start"),
    ],
)
def test_a_side_the_towers_cannot_take_is_refused(flags: dict, why: str) -> None:
    with pytest.raises(InvalidInputError, match=f"--image-size-(start|ramp-end) .*{why}"):
        lightclip.TrainConfig(**flags)


@pytest.mark.parametrize("ramp_end", ["0", "1", "1.5", "nan"])
def test_a_ramp_end_outside_the_run_is_refused(ramp_end: str) -> None:
    # At 1 the last step (progress (T-1)/T) would still train below the evaluated size.
    with pytest.raises(InvalidInputError, match="--image-size-ramp-end"):
        parse_args(["--image-size-start", "32", "--image-size-ramp-end", ramp_end])


def test_a_start_at_the_models_own_size_is_refused_before_an_earlier_run_is_cleared(
    tmp_path: Path,
) -> None:
    earlier = quiet_config(tmp_path, recipe="clip", steps=1)
    lightclip.train(earlier, data=FakePipeline(num_samples=4, batch_size=4))
    kept = sorted(p.name for p in (tmp_path / "run").iterdir())

    # lightclip-tiny-mnv2 trains at 64 px unless --image-size says otherwise.
    again = quiet_config(tmp_path, recipe="clip", steps=1, overwrite=True, image_size_start=64)
    with pytest.raises(InvalidInputError, match="--image-size-start must be below .* 64"):
        lightclip.train(again, data=FakePipeline(num_samples=4, batch_size=4))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == kept
    assert (tmp_path / "run" / "checkpoints" / "epoch_latest.pt").is_file()
