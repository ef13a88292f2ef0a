"""lightclip.evaluate / zero_shot / eval_cli: prompt ensembling against open_clip's and a few
lines of torch, end-to-end metrics against the metric functions on hand-built data, the
CLIP_benchmark JSON shape, and Flickr8k dev through the real pipeline."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightclip
from lightclip.errors import InvalidInputError
from lightclip.eval_cli import format_table, result_record
from lightclip.evaluate import evaluate_retrieval, evaluate_zero_shot
from lightclip.metrics import retrieval_metrics, zero_shot_metrics
from lightclip.zero_shot import (
    GENERIC_TEMPLATES,
    build_zero_shot_classifier,
    expand_prompts,
    format_prompt,
    openai_imagenet_templates,
    resolve_templates,
)


class ToyCLIP(nn.Module):
    """A tiny random CLIP-like model: mean colour -> linear; bag of token embeddings."""

    def __init__(self, dim: int = 16, vocab: int = 49409, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.image_proj = nn.Linear(3, dim)
        self.token = nn.Embedding(vocab, dim)

    def encode_image(self, x, normalize=False):
        f = self.image_proj(x.mean(dim=(2, 3)))
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, ids, normalize=False):
        f = (self.token(ids) * (ids != 0)[..., None]).sum(1)
        return F.normalize(f, dim=-1) if normalize else f


class WordTokenizer:
    """Maps each distinct word (letters only) to an id (1-based, 0 = padding), one row per text."""

    def __init__(self, length: int = 16) -> None:
        self.vocab: dict[str, int] = {}
        self.length = length

    def __call__(self, texts):
        rows = []
        for text in texts:
            words = re.findall(r"[a-z]+", text.lower())
            ids = [self.vocab.setdefault(w, len(self.vocab) + 1) for w in words]
            rows.append((ids + [0] * self.length)[: self.length])
        return torch.tensor(rows, dtype=torch.long)


COLOURS = ["red", "green", "blue"]


class ColourOracle(nn.Module):
    """Images are 1x1 pixels of pure colour; a text's embedding is the one-hot of the colour
    word it contains (via WordTokenizer ids). ``swap`` makes it confuse red and green."""

    def __init__(self, tokenizer: WordTokenizer, swap: bool = False) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.ids = [tokenizer([c])[0, 0].item() for c in COLOURS]
        self.swap = swap

    def encode_image(self, x, normalize=False):
        f = x.mean(dim=(2, 3))  # the mean colour
        f = f[:, [1, 0, 2]] if self.swap else f
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, ids, normalize=False):
        f = torch.stack([(ids == i).any(1).float() for i in self.ids], dim=1)
        return F.normalize(f, dim=-1) if normalize else f


def colour_batches(labels: list[int], batch_size: int):
    for s in range(0, len(labels), batch_size):
        lab = torch.tensor(labels[s : s + batch_size])
        yield {"image": F.one_hot(lab, 3).float()[:, :, None, None], "label": lab}


# --------------------------------------------------------------------------- zero-shot


def test_classifier_matches_open_clip_and_plain_torch():
    open_clip = pytest.importorskip("open_clip")
    from open_clip.zero_shot_classifier import build_zero_shot_classifier as oc_build

    model = ToyCLIP()
    tokenizer = open_clip.get_tokenizer("RN50")
    names = ["cat", "dog", "goldfish", "traffic light", "tabby cat"]
    templates = openai_imagenet_templates()
    ours = build_zero_shot_classifier(model, tokenizer, names, "imagenet", classes_per_batch=2)
    theirs = oc_build(model, tokenizer, names, templates, num_classes_per_batch=3)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)

    # the definition, one class at a time
    for c, name in enumerate(names):
        emb = model.encode_text(tokenizer([format_prompt(t, name) for t in templates]))
        emb = emb / emb.norm(dim=1, keepdim=True)
        mean = emb.mean(0)
        torch.testing.assert_close(ours[:, c], mean / mean.norm(), rtol=1e-5, atol=1e-6)
    assert ours.shape == (16, len(names))


def test_ensembling_is_not_the_mean_of_raw_embeddings():
    # Prompts with very different norms: normalising before averaging must matter, so the
    # test above would catch an implementation that skipped it.
    model = ToyCLIP()
    with torch.no_grad():
        model.token.weight[1] *= 50
    tok = WordTokenizer()
    tok.vocab["loud"] = 1
    templates = ["loud {}", "a {}"]
    w = build_zero_shot_classifier(model, tok, ["x"], templates)[:, 0]
    raw = model.encode_text(tok([t.format("x") for t in templates])).mean(0)
    assert not torch.allclose(w, raw / raw.norm(), atol=1e-3)


def test_template_sets_and_validation():
    assert resolve_templates("generic") == GENERIC_TEMPLATES
    for t in GENERIC_TEMPLATES:
        assert t.count("{}") == 1
    assert expand_prompts(["a b"], [lambda c: c.upper()]) == [["A B"]]
    with pytest.raises(InvalidInputError, match="'nope' is neither a template set"):
        resolve_templates("nope")
    with pytest.raises(InvalidInputError, match=r"templates\[1\]"):
        resolve_templates(["a {}", "no slot"])
    with pytest.raises(InvalidInputError, match="class_names"):
        expand_prompts("cat", ["{}"])


def test_zero_shot_oracle_and_confused_model():
    tok = WordTokenizer()
    labels = [0, 1, 2, 2, 1, 0, 0, 2, 1, 1, 0]
    good = evaluate_zero_shot(
        ColourOracle(tok), colour_batches(labels, 4), class_names=COLOURS, tokenizer=tok
    )
    assert good["acc1"] == 1.0 and good["mean_per_class_recall"] == 1.0
    bad = evaluate_zero_shot(
        ColourOracle(tok, swap=True), colour_batches(labels, 4), class_names=COLOURS, tokenizer=tok
    )
    blue = labels.count(2) / len(labels)
    assert bad["acc1"] == pytest.approx(blue)
    assert bad["acc5"] == 1.0  # 3 classes: always in the top 5
    assert bad["mean_per_class_recall"] == pytest.approx(1 / 3)
    assert bad.stats["num_images"] == len(labels)


def test_zero_shot_equals_metrics_on_concatenated_scores():
    model = ToyCLIP(seed=3)
    tok = WordTokenizer()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(23, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 4, (23,), generator=gen)
    names = ["w", "x", "y", "z"]
    batches = [{"image": images[s : s + 5], "label": labels[s : s + 5]} for s in range(0, 23, 5)]
    got = evaluate_zero_shot(model, batches, class_names=names, tokenizer=tok, templates=["{} !"])
    with torch.no_grad():
        classifier = build_zero_shot_classifier(model, tok, names, ["{} !"])
        scores = model.encode_image(images, normalize=True) @ classifier
    assert dict(got) == zero_shot_metrics(scores, labels)


def test_zero_shot_needs_class_names_and_labels():
    tok = WordTokenizer()
    with pytest.raises(InvalidInputError, match="class_names"):
        evaluate_zero_shot(ToyCLIP(), [], tokenizer=tok)
    with pytest.raises(InvalidInputError, match="batch 0 has no 'label'"):
        evaluate_zero_shot(
            ToyCLIP(), [{"image": torch.zeros(2, 3, 2, 2)}], class_names=["a"], tokenizer=tok
        )


# --------------------------------------------------------------------------- retrieval


def test_retrieval_with_several_captions_equals_metric_functions():
    model = ToyCLIP(seed=1)
    tok = WordTokenizer()
    gen = torch.Generator().manual_seed(1)
    n = 17
    images = torch.rand(n, 3, 4, 4, generator=gen)
    words = ["dog", "runs", "grass", "a", "man", "red", "ball", "two", "kids", "beach"]
    captions = [
        [
            " ".join(words[int(i)] for i in torch.randint(0, 10, (4,), generator=gen))
            for _ in range(1 + k % 5)
        ]
        for k in range(n)
    ]
    batches = [
        {"image": images[s : s + 6], "all_captions": captions[s : s + 6]} for s in range(0, n, 6)
    ]
    got = evaluate_retrieval(model, batches, tokenizer=tok, text_batch_size=7, block_size=5)

    flat = [c for per in captions for c in per]
    owner = torch.tensor([i for i, per in enumerate(captions) for _ in per])
    with torch.no_grad():
        ref = retrieval_metrics(
            model.encode_image(images, normalize=True),
            model.encode_text(tok(flat), normalize=True),
            owner,
        )
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key])
    assert got.stats["num_images"] == n and got.stats["num_texts"] == len(flat)
    assert got.stats["images_per_second"] > 0


def test_retrieval_from_token_ids_oracle_is_perfect():
    tok = WordTokenizer()
    labels = torch.tensor([0, 1, 2])
    batch = {"image": F.one_hot(labels, 3).float()[:, :, None, None], "text": tok(COLOURS)}
    m = evaluate_retrieval(ColourOracle(tok), [batch], tokenizer=tok)
    assert m["image_retrieval_recall@1"] == 1.0 and m["text_retrieval_recall@1"] == 1.0
    m = evaluate_retrieval(ColourOracle(tok, swap=True), [batch], tokenizer=tok)
    assert m["image_retrieval_recall@1"] == pytest.approx(1 / 3)


def test_retrieval_bad_batches_are_named():
    tok = WordTokenizer()
    with pytest.raises(InvalidInputError, match="batch 0 has no captions"):
        evaluate_retrieval(ToyCLIP(), [{"image": torch.zeros(2, 3, 2, 2)}], tokenizer=tok)
    bad = {"image": torch.zeros(2, 3, 2, 2), "all_captions": [["a"], []], "key": ["k0", "k1"]}
    with pytest.raises(InvalidInputError, match=r"sample 1 \(k1\)"):
        evaluate_retrieval(ToyCLIP(), [bad], tokenizer=tok)
    with pytest.raises(InvalidInputError, match="no batches"):
        evaluate_retrieval(ToyCLIP(), [], tokenizer=tok)


def test_model_training_flag_is_restored():
    model = ToyCLIP().train()
    tok = WordTokenizer()
    evaluate_retrieval(
        model, [{"image": torch.rand(2, 3, 2, 2), "captions": ["a", "b"]}], tokenizer=tok
    )
    assert model.training


# --------------------------------------------------------------------------- JSON / CLI


def test_result_record_has_clip_benchmark_shape():
    tok = WordTokenizer()
    metrics = evaluate_zero_shot(
        ColourOracle(tok), colour_batches([0, 1, 2], 2), class_names=COLOURS, tokenizer=tok
    )
    record = result_record(
        dataset="colours", model="oracle", task="zeroshot_classification", metrics=metrics
    )
    back = json.loads(json.dumps(record))
    assert {"dataset", "model", "task", "metrics", "pretrained", "language"} <= back.keys()
    assert back["metrics"] == {"acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}
    assert back["stats"]["num_images"] == 3
    table = format_table(back)
    assert "acc1" in table and "100.00 %" in table and "colours" in table


def test_cli_zero_shot_on_synthetic_writes_json(tmp_path, capsys):
    from lightclip.cli import main

    out = tmp_path / "r.json"
    rc = main(
        [
            "eval",
            "--model",
            "clip-tiny-mnv2",
            "--dataset",
            "synthetic:heldout",
            "--device",
            "cpu",
            "--batch-size",
            "32",
            "--max-batches",
            "2",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    record = json.loads(out.read_text())
    assert record["task"] == "zeroshot_classification"
    assert record["model"] == "clip-tiny-mnv2"
    assert set(record["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert record["stats"]["num_images"] == 64
    assert "mean_per_class_recall" in capsys.readouterr().out


def test_synthetic_data_ships_prompts_in_its_captions_grammar(monkeypatch):
    import lightclip.evaluate as evaluate_module

    model = lightclip.create_model("clip-tiny-mnv2").export().eval()

    def heldout() -> lightclip.DataPipeline:
        size = model.config.image_size
        return lightclip.DataPipeline(
            "synthetic:heldout", batch_size=32, image_size=size, train=False
        )

    data = heldout()
    assert len(data.templates) == 8 and all("{c}" in t for t in data.templates)
    prompts = expand_prompts(["red triangle"], data.templates)[0]
    assert "a small red triangle" in prompts and "a large red triangle on the right" in prompts
    # Zero-shot without templates uses the source's own, not the generic set (a fresh
    # pipeline for each pass: the same first batch).
    default = evaluate_zero_shot(model, heldout(), max_batches=1)
    given = evaluate_zero_shot(model, heldout(), templates=data.templates, max_batches=1)
    assert dict(default) == dict(given)
    built_with = []
    build = evaluate_module.build_zero_shot_classifier

    def recording_build(model, tokenizer, names, templates, **kw):
        built_with.append(templates)
        return build(model, tokenizer, names, templates, **kw)

    monkeypatch.setattr(evaluate_module, "build_zero_shot_classifier", recording_build)
    evaluate_zero_shot(model, heldout(), max_batches=1)
    assert built_with == [data.templates]
    train_split = lightclip.DataPipeline(
        "synthetic:train", batch_size=8, image_size=32, train=False
    )
    assert train_split.templates == data.templates


def test_flickr8k_dev_retrieval_uses_five_captions_per_image(flickr8k_dir):
    model = lightclip.create_model("clip-tiny-mnv2").export().eval()
    data = lightclip.DataPipeline(
        str(flickr8k_dir / "dev-000000.tar"),
        batch_size=100,
        image_size=model.config.image_size,
        train=False,
        text=lightclip.TextConfig(context_length=model.config.context_length),
        all_captions=True,
    )
    m = evaluate_retrieval(model, data, max_batches=2)
    assert m.stats["num_images"] == 200 and m.stats["num_texts"] == 1000
    for key, value in m.items():
        assert 0 <= value <= 1 or key.endswith("_rank")


def test_zero_shot_on_an_image_folder_through_the_pipeline(tmp_path):
    """One sub-folder per class, read by DataPipeline(train=False): labels and class names
    must line up with the images, so the colour oracle is perfect and its confused twin not."""
    from PIL import Image

    colours = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}
    for name, rgb in colours.items():
        (tmp_path / name).mkdir()
        for i in range(3 + len(name) % 3):
            Image.new("RGB", (40 + 8 * i, 48), rgb).save(tmp_path / name / f"{i}.png")
    data = lightclip.DataPipeline(str(tmp_path), batch_size=4, image_size=32, train=False)
    assert sorted(data.class_names) == sorted(COLOURS)
    tok = WordTokenizer()
    good = evaluate_zero_shot(ColourOracle(tok), data, tokenizer=tok)
    assert good["acc1"] == 1.0 and good.stats["num_images"] == 3 + 5 + 4
    data = lightclip.DataPipeline(str(tmp_path), batch_size=4, image_size=32, train=False)
    bad = evaluate_zero_shot(ColourOracle(tok, swap=True), data, tokenizer=tok)
    assert bad["acc1"] == pytest.approx(4 / 12)  # only blue survives the red/green swap


# --------------------------------------------------------------------------- labelled shards

RGB = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


def write_colour_shard(path, labels: list[int | None], label_member: str = "cls") -> None:
    """A webdataset shard of pure-colour PNGs labelled by a .cls member or the .json's label,
    with no caption: CLIP_benchmark's classification layout. None: a captioned sample with no
    label."""
    import io
    import tarfile

    from PIL import Image

    with tarfile.open(path, "w") as tar:
        for i, label in enumerate(labels):
            png = io.BytesIO()
            colour = RGB[COLOURS[label if label is not None else 0]]
            Image.new("RGB", (30 + i % 5, 24), colour).save(png, format="PNG")
            members = [(f"{i:04d}.png", png.getvalue())]
            if label is not None and label_member == "cls":
                members.append((f"{i:04d}.cls", f"{label}\n".encode()))
            if label is None:  # captioned but unlabelled, as in a mixed shard
                members.append((f"{i:04d}.txt", b"a photo"))
            if label is not None and label_member == "json":
                members.append((f"{i:04d}.json", json.dumps({"label": label}).encode()))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


SHARD_LABELS = [2, 0, 1, 1, 0, 2, 2, 0, 1, 0, 0]


def test_zero_shot_over_labelled_shards_with_clip_benchmark_layout(tmp_path):
    """root/classnames.txt + root/test/0.tar with .cls members: the pipeline finds the class
    names, labels line up with the images, so the oracle is perfect and its twin is not."""
    (tmp_path / "test").mkdir()
    (tmp_path / "classnames.txt").write_text("\n".join(COLOURS) + "\n")
    write_colour_shard(tmp_path / "test" / "0.tar", SHARD_LABELS)
    source = str(tmp_path / "test" / "0.tar")
    data = lightclip.DataPipeline(source, batch_size=4, image_size=16, train=False)
    assert data.class_names == COLOURS
    seen = [int(v) for batch in data for v in batch["label"]]
    assert seen == SHARD_LABELS  # eval order is the file order
    tok = WordTokenizer()
    good = evaluate_zero_shot(ColourOracle(tok), data, tokenizer=tok)
    assert good["acc1"] == 1.0 and good.stats["num_images"] == len(SHARD_LABELS)
    bad = evaluate_zero_shot(ColourOracle(tok, swap=True), data, tokenizer=tok)
    blue = SHARD_LABELS.count(2)
    assert bad["acc1"] == pytest.approx(blue / len(SHARD_LABELS))


def test_json_labels_without_class_names_take_names_from_the_caller(tmp_path):
    write_colour_shard(tmp_path / "0.tar", SHARD_LABELS, label_member="json")
    data = lightclip.DataPipeline(str(tmp_path / "0.tar"), batch_size=4, image_size=16, train=False)
    assert data.class_names is None
    tok = WordTokenizer()
    with pytest.raises(InvalidInputError, match="no class names"):
        evaluate_zero_shot(ColourOracle(tok), data, tokenizer=tok)
    result = evaluate_zero_shot(ColourOracle(tok), data, class_names=COLOURS, tokenizer=tok)
    assert result["acc1"] == 1.0


def test_a_shard_sample_without_a_label_is_named(tmp_path):
    write_colour_shard(tmp_path / "0.tar", [0, 1, None, 2])
    (tmp_path / "classnames.txt").write_text("red\ngreen\nblue\n")
    data = lightclip.DataPipeline(str(tmp_path / "0.tar"), batch_size=4, image_size=16, train=False)
    batch = next(iter(data))
    assert batch["label"].tolist() == [0, 1, -1, 2]
    data = lightclip.DataPipeline(str(tmp_path / "0.tar"), batch_size=4, image_size=16, train=False)
    tok = WordTokenizer()
    with pytest.raises(InvalidInputError, match=r"batch 0, sample 2 has no class label"):
        evaluate_zero_shot(ColourOracle(tok), data, tokenizer=tok)


def test_out_of_range_and_garbled_labels_are_counted_skips(tmp_path, caplog):
    write_colour_shard(tmp_path / "0.tar", [0, 1, 2, 1])
    (tmp_path / "classnames.txt").write_text("red\ngreen\n")  # label 2 has no name
    data = lightclip.DataPipeline(str(tmp_path / "0.tar"), batch_size=8, image_size=16, train=False)
    batch = next(iter(data))
    assert batch["label"].tolist() == [0, 1, 1]
    assert data.stats()["skipped"] == {"invalid_label": 1}
    strict = lightclip.DataPipeline(
        str(tmp_path / "0.tar"),
        batch_size=8,
        image_size=16,
        train=False,
        reading=lightclip.ReadingConfig(on_error="raise"),
    )
    with pytest.raises(lightclip.DataError, match=r"0002\.cls.*label 2 is out of range"):
        next(iter(strict))


def test_cli_classifies_labelled_shards_and_takes_a_class_name_file(tmp_path, capsys):
    from lightclip.cli import main

    write_colour_shard(tmp_path / "0.tar", SHARD_LABELS)
    names = tmp_path / "names.txt"
    names.write_text("red\n\ngreen\nblue\n")
    out = tmp_path / "r.json"
    common = ["eval", "--model", "clip-tiny-mnv2", "--device", "cpu", "--output", str(out)]
    assert main([*common, "--dataset", str(tmp_path / "0.tar"), "--class-names", str(names)]) == 0
    record = json.loads(out.read_text())
    assert record["task"] == "zeroshot_classification"
    assert record["stats"]["num_images"] == len(SHARD_LABELS)
    assert record["stats"]["num_classes"] == 3
    (tmp_path / "empty.txt").write_text("\n")
    empty = ["--dataset", str(tmp_path / "0.tar"), "--class-names", str(tmp_path / "empty.txt")]
    assert main([*common, *empty]) != 0
    assert re.search(r"--class-names: .*empty\.txt lists no class", capsys.readouterr().err)
