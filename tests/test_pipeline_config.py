"""The pipeline's settings objects (rust/py/src/pipeline/config.rs): AugmentationConfig,
TextConfig and ReadingConfig are checked once when made, are frozen values (equality, repr,
pickling, ``replace``), and reach the pipeline whole."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import lightclip
from lightclip import AugmentationConfig, ReadingConfig, TextConfig
from lightclip.data import augmentation_defaults, default_eda_prob

# The keyword arguments DataPipeline took one by one before they were grouped, and the
# object that holds each now.
OLD_KEYWORDS = {
    "augmentation": (
        "crop_scale crop_ratio jitter jitter_p grayscale_p blur_p blur_sigma flip_p"
    ).split(),
    "text": "context_length vocab_path eda_prob eda_strength mlm mlm_prob".split(),
    "reading": (
        "on_error csv_img_key csv_caption_key csv_separator num_samples data_seed max_pixels "
        "max_image_bytes shuffle_buffer shuffle_buffer_bytes"
    ).split(),
}
CLASSES = {"augmentation": AugmentationConfig, "text": TextConfig, "reading": ReadingConfig}


@pytest.mark.parametrize(
    ("make", "field", "message"),
    [
        (lambda: AugmentationConfig(crop_scale=(0.5, 0.2)), "crop_scale", "0 < lo <= hi <= 1"),
        (lambda: AugmentationConfig(crop_scale=(0.5, 1.5)), "crop_scale", "0 < lo <= hi <= 1"),
        (lambda: AugmentationConfig(crop_scale=(0.5,)), "crop_scale", "two numbers"),
        (lambda: AugmentationConfig(crop_ratio=(0.0, 1.0)), "crop_ratio", "0 < lo <= hi"),
        (lambda: AugmentationConfig(jitter=(0.4, 0.4)), "jitter", "brightness, contrast"),
        (lambda: AugmentationConfig(jitter=(-0.1, 0, 0, 0)), "jitter.brightness", ">= 0"),
        (lambda: AugmentationConfig(jitter=(0, 0, 0, 0.6)), "jitter.hue", r"\[0, 0.5\]"),
        (lambda: AugmentationConfig(jitter_p=1.5), "jitter_p", "probability"),
        (lambda: AugmentationConfig(grayscale_p=-0.1), "grayscale_p", "probability"),
        (lambda: AugmentationConfig(blur_p=float("nan")), "blur_p", "probability"),
        (lambda: AugmentationConfig(flip_p=2), "flip_p", "probability"),
        (lambda: AugmentationConfig(blur_sigma=(2.0, 1.0)), "blur_sigma", "0 < lo <= hi"),
        (lambda: TextConfig(context_length=1), "context_length", "at least 2"),
        (lambda: TextConfig(context_length=65537), "context_length", "at most 65536"),
        (lambda: TextConfig(context_length=-5), "context_length", r"int in \[0, 2\*\*63\)"),
        (lambda: TextConfig(context_length=7.0), "context_length", r"int in \[0, 2\*\*63\)"),
        (lambda: TextConfig(eda_prob=float("nan")), "eda_prob", r"\[0, 1\]"),
        (lambda: TextConfig(eda_prob=-0.1), "eda_prob", r"\[0, 1\]"),
        (lambda: TextConfig(eda_strength=1.5), "eda_strength", r"\[0, 1\]"),
        (lambda: TextConfig(mlm_prob=2.0), "mlm_prob", r"\[0, 1\]"),
        (lambda: ReadingConfig(on_error="ignore"), "on_error", '"skip" or "raise"'),
        (lambda: ReadingConfig(csv_separator=";;"), "csv_separator", "one ASCII character"),
        (lambda: ReadingConfig(csv_separator="é"), "csv_separator", "one ASCII character"),
        (lambda: ReadingConfig(num_samples=0), "num_samples", "at least 1"),
        (lambda: ReadingConfig(num_samples=10**12), "num_samples", "at most"),
        (lambda: ReadingConfig(data_seed=-1), "data_seed", r"int in \[0, 2\*\*63\)"),
        (lambda: ReadingConfig(max_pixels=0), "max_pixels", "at least 1"),
        (lambda: ReadingConfig(max_image_bytes=2**64), "max_image_bytes", r"\[0, 2\*\*63\)"),
        (lambda: ReadingConfig(shuffle_buffer=2.5), "shuffle_buffer", r"\[0, 2\*\*63\)"),
        (lambda: ReadingConfig(shuffle_buffer=10**7), "shuffle_buffer", "at most 1000000"),
        (lambda: ReadingConfig(shuffle_buffer_bytes=0), "shuffle_buffer_bytes", "at least 1"),
        (lambda: ReadingConfig(max_pixels=True), "max_pixels", r"int in \[0, 2\*\*63\)"),
    ],
)
def test_a_bad_value_is_refused_when_the_config_is_made(make, field, message):
    with pytest.raises(lightclip.InvalidInputError, match=rf"invalid `{field}`: .*{message}"):
        make()


@pytest.mark.parametrize("config", [AugmentationConfig(), TextConfig(), ReadingConfig()])
def test_replace_checks_the_new_value_too(config):
    field = {AugmentationConfig: "flip_p", TextConfig: "mlm_prob", ReadingConfig: "max_pixels"}
    name = field[type(config)]
    with pytest.raises(lightclip.InvalidInputError, match=f"`{name}`"):
        config.replace(**{name: -1})
    with pytest.raises(TypeError, match="nope"):
        config.replace(nope=1)
    assert config.replace() == config


def test_configs_are_frozen_values():
    a = AugmentationConfig(crop_scale=[0.5, 1.0], jitter=[0.1, 0.2, 0.3, 0.0], flip_p=0)
    assert a.crop_scale == (0.5, 1.0) and a.jitter == (0.1, 0.2, 0.3, 0.0) and a.flip_p == 0.0
    assert a == AugmentationConfig(crop_scale=(0.5, 1), jitter=(0.1, 0.2, 0.3, 0), flip_p=0.0)
    assert a != AugmentationConfig()
    with pytest.raises(AttributeError):
        a.flip_p = 0.5  # type: ignore[misc]
    assert a.replace(flip_p=0.5) == AugmentationConfig(
        crop_scale=(0.5, 1.0), jitter=(0.1, 0.2, 0.3, 0.0)
    )
    assert a.flip_p == 0.0  # replace made a copy
    text = TextConfig(context_length=32, eda_prob=0.3, mlm=False)
    reading = ReadingConfig(on_error="raise", csv_separator=";", num_samples=12)
    for config in (a, text, reading):
        assert pickle.loads(pickle.dumps(config)) == config
        assert copy.deepcopy(config) == config and copy.copy(config) == config
        assert eval(repr(config), vars(lightclip)) == config  # the repr is the constructor call
    assert repr(text).startswith("TextConfig(context_length=32, vocab_path=None, eda_prob=0.3,")


def test_defaults_are_the_documented_ones():
    # The fields DataPipeline defaulted to when they were its own keyword arguments.
    assert AugmentationConfig() == AugmentationConfig(
        crop_scale=(0.2, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        grayscale_p=0.2,
        blur_p=0.5,
        blur_sigma=(0.1, 2.0),
        flip_p=0.5,
    )
    t = TextConfig()
    assert (t.context_length, t.vocab_path, t.eda_prob) == (77, None, None)
    assert (t.eda_strength, t.mlm, t.mlm_prob) == (0.1, True, 0.15)
    r = ReadingConfig()
    assert (r.on_error, r.csv_img_key, r.csv_caption_key, r.csv_separator) == (
        "skip",
        "filepath",
        "title",
        None,
    )
    assert (r.num_samples, r.data_seed, r.max_pixels) == (None, 0, 50_000_000)
    assert (r.max_image_bytes, r.shuffle_buffer, r.shuffle_buffer_bytes) == (
        64 << 20,
        1000,
        1 << 30,
    )


@pytest.mark.parametrize(
    ("argument", "name"), [(a, n) for a, names in OLD_KEYWORDS.items() for n in names]
)
def test_an_old_flat_keyword_names_the_config_that_holds_it(argument, name):
    assert name in vars(CLASSES[argument])  # a field of that object
    with pytest.raises(lightclip.InvalidInputError, match=rf"`{name}` is a field of "):
        lightclip.DataPipeline("synthetic", batch_size=2, image_size=16, **{name: None})
    with pytest.raises(lightclip.InvalidInputError, match=rf"{argument}=lightclip\."):
        lightclip.DataPipeline("synthetic", batch_size=2, image_size=16, **{name: None})


def test_an_unknown_keyword_is_still_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'crop'"):
        lightclip.DataPipeline("synthetic", batch_size=2, image_size=16, crop=1)


def _batches(**kwargs) -> list[dict]:
    data = lightclip.DataPipeline(
        "synthetic", batch_size=4, image_size=24, threads=2, seed=5, return_captions=True, **kwargs
    )
    return list(data)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys()
        and all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)
        for x, y in zip(a, b, strict=True)
    )


def test_a_config_built_once_gives_the_batches_of_the_same_settings_written_out():
    augmentation = AugmentationConfig(
        crop_scale=(0.5, 1.0), jitter=(0.3, 0.3, 0.3, 0.05), grayscale_p=0.5, flip_p=0.5
    )
    text = TextConfig(context_length=24, eda_prob=0.0, mlm_prob=0.3)
    reading = ReadingConfig(num_samples=12, data_seed=3)
    once = dict(augmentation=augmentation, text=text, reading=reading)
    first = _batches(**once)
    # The same objects again, a pickled copy, and the same settings written out afresh.
    assert _same(_batches(**once), first)
    assert _same(_batches(**pickle.loads(pickle.dumps(once))), first)
    fresh = dict(
        augmentation=AugmentationConfig().replace(
            crop_scale=(0.5, 1.0), jitter=(0.3, 0.3, 0.3, 0.05), grayscale_p=0.5
        ),
        text=TextConfig(context_length=24, eda_prob=0.0, mlm_prob=0.3),
        reading=ReadingConfig(data_seed=3).replace(num_samples=12),
    )
    assert _same(_batches(**fresh), first)
    # Every group reaches the pipeline: changing one field of each changes the batches.
    assert first[0]["text"].shape == (4, 24) and sum(len(b["captions"]) for b in first) == 12
    assert not _same(_batches(**{**once, "augmentation": augmentation.replace(flip_p=0.0)}), first)
    assert not _same(_batches(**{**once, "text": text.replace(mlm_prob=0.9)}), first)
    assert not _same(_batches(**{**once, "reading": reading.replace(data_seed=4)}), first)


def test_left_out_configs_are_the_sources_defaults():
    reading = ReadingConfig(num_samples=8)
    default = _batches(reading=reading)
    explicit = _batches(
        reading=reading,
        augmentation=augmentation_defaults("synthetic", 24),
        text=TextConfig(eda_prob=default_eda_prob("synthetic", 24)),
    )
    assert _same(default, explicit)
    data = lightclip.DataPipeline("synthetic", batch_size=2, image_size=24, reading=reading)
    assert data.augmentation == augmentation_defaults("synthetic", 24)
    assert data.text.eda_prob == 0.0 and data.text.vocab_path  # resolved, then passed whole
    assert data.reading == reading


def test_the_configs_are_exported():
    for name in ("AugmentationConfig", "TextConfig", "ReadingConfig", "augmentation_defaults"):
        assert name in lightclip.__all__ and hasattr(lightclip, name)
