"""CLIP_benchmark's webdataset layout, read as CLIP_benchmark reads it (``build_wds_dataset``:
a retrieval ``.txt`` is ``str.splitlines``-ed into captions, ``dataset_type.txt``,
``classnames.txt`` and ``zeroshot_classification_templates.txt`` in the dataset root, shards in
``root/test/``), and every layout lightclip refuses rather than misread.

The shards are written member by member as CLIP_benchmark's converters name them
(``s0000000.png`` + ``.txt`` or ``.cls``); ``test_clip_benchmark_parity.py`` writes them with
CLIP_benchmark's own converter and compares whole evaluations.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

import lightclip
from lightclip.cli import main as lightclip_main
from lightclip.errors import DataError, InvalidInputError
from lightclip.evaluate import evaluate_retrieval, evaluate_zero_shot
from lightclip.zero_shot import expand_prompts, resolve_templates

# Line breaks of every kind str.splitlines knows, and a trailing one (no empty last caption).
TEXTS = [
    "a red ball\na blue cup\n",
    "one\r\ntwo\rthree\u2028four",
    "only one caption",
    "x\x0by\x0cz\x1cw\x85v\u2029u",
]


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24 + seed, 20), (40 * seed % 256, 90, 160)).save(buffer, format="png")
    return buffer.getvalue()


def write_layout(root: Path, members: list[dict[str, bytes]], **files: str) -> str:
    """``root/test/0.tar`` (+ nshards.txt) and ``files`` (name -> text) in ``root``."""
    (root / "test").mkdir(parents=True)
    shard = root / "test" / "0.tar"
    with tarfile.open(shard, "w") as tar:
        for index, sample in enumerate(members):
            for ext, data in sample.items():
                info = tarfile.TarInfo(f"s{index:07d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text("1\n")
    for name, text in files.items():
        (root / f"{name}.txt").write_text(text, encoding="utf-8")
    return str(shard)


def retrieval_samples(texts: list[str] = TEXTS) -> list[dict[str, bytes]]:
    return [{"png": png(i), "txt": text.encode()} for i, text in enumerate(texts)]


def labelled_samples(labels: list[int]) -> list[dict[str, bytes]]:
    return [{"png": png(i), "cls": str(label).encode()} for i, label in enumerate(labels)]


def eval_data(shard: str, **kwargs) -> lightclip.DataPipeline:
    return lightclip.DataPipeline(shard, batch_size=3, image_size=32, train=False, **kwargs)


@pytest.fixture(scope="module")
def model():
    return lightclip.create_model("lightclip-tiny-mnv2").export().eval()


# --------------------------------------------------------------------------- reading


def test_a_retrieval_txt_gives_one_caption_per_line_as_splitlines(tmp_path):
    shard = write_layout(tmp_path, retrieval_samples(), dataset_type="retrieval\n")
    data = eval_data(shard, all_captions=True)
    assert data.dataset_type == "retrieval"
    captions = [c for batch in data for c in batch["all_captions"]]
    assert captions == [text.splitlines() for text in TEXTS]
    # Counted as texts by the evaluation: N captions, not one per picture.
    stats = evaluate_retrieval(
        lightclip.create_model("lightclip-tiny-mnv2").export(), eval_data(shard, all_captions=True)
    ).stats
    assert stats["num_texts"] == sum(len(t.splitlines()) for t in TEXTS) == 13
    assert stats["num_images"] == len(TEXTS)


def test_class_names_and_templates_come_from_the_dataset_root(tmp_path, model):
    shard = write_layout(
        tmp_path,
        labelled_samples([0, 1, 2, 1]),
        dataset_type="classification",
        classnames="sea lion\ntabby cat\r\n  goldfish  \n",
        zeroshot_classification_templates="a photo of a {c}.\nthe {c}, up close\n",
    )
    data = eval_data(shard)
    assert data.class_names == ["sea lion", "tabby cat", "goldfish"]
    assert data.templates == ["a photo of a {c}.", "the {c}, up close"]
    assert expand_prompts(["sea lion"], data.templates) == [
        ["a photo of a sea lion.", "the sea lion, up close"]
    ]
    # Without --templates the data's own templates are used: the same metrics as given ones,
    # and the same as the file passed by path.
    own = evaluate_zero_shot(model, eval_data(shard))
    given = evaluate_zero_shot(model, eval_data(shard), templates=data.templates)
    by_path = evaluate_zero_shot(
        model,
        eval_data(shard),
        templates=str(tmp_path / "zeroshot_classification_templates.txt"),
    )
    assert dict(own) == dict(given) == dict(by_path)


def test_templates_file_path_and_placeholders(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a {c}.\n{} again\n")
    assert resolve_templates(str(path)) == ["a {c}.", "{} again"]
    assert resolve_templates(path) == ["a {c}.", "{} again"]
    assert expand_prompts(["sea lion"], resolve_templates(path)) == [
        ["a sea lion.", "sea lion again"]
    ]


def test_imagenet_templates_are_open_clips_own(monkeypatch):
    zero_shot_metadata = pytest.importorskip("open_clip.zero_shot_metadata")
    assert list(resolve_templates("imagenet")) == list(zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES)
    # Without open_clip: a clear error saying how to get them.
    monkeypatch.setitem(sys.modules, "open_clip.zero_shot_metadata", None)
    with pytest.raises(InvalidInputError, match="pip install open_clip_torch"):
        resolve_templates("imagenet")


def test_folder_class_names_read_underscores_as_spaces(tmp_path):
    for name in ("sea_lion", "tabby_cat"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(png(1))
    data = eval_data(str(tmp_path))
    assert data.class_names == ["sea lion", "tabby cat"]
    assert [c for b in eval_data(str(tmp_path), return_captions=True) for c in b["captions"]] == [
        "a photo of a sea lion.",
        "a photo of a tabby cat.",
    ]


# --------------------------------------------------------------------------- refusals


def test_several_lines_without_dataset_type_are_refused(tmp_path, model):
    shard = write_layout(tmp_path, retrieval_samples())
    with pytest.raises(InvalidInputError, match=r"s0000000\).*2 lines.*dataset_type\.txt"):
        evaluate_retrieval(model, eval_data(shard, all_captions=True))


def test_a_task_contradicting_dataset_type_is_refused(tmp_path, model, capsys):
    retrieval = write_layout(tmp_path / "r", retrieval_samples(), dataset_type="retrieval")
    with pytest.raises(InvalidInputError, match="says 'retrieval'.*zeroshot_retrieval"):
        evaluate_zero_shot(model, eval_data(retrieval), class_names=["a", "b"])
    labelled = write_layout(
        tmp_path / "c", labelled_samples([0, 1]), dataset_type="classification", classnames="a\nb"
    )
    with pytest.raises(InvalidInputError, match="says 'classification'"):
        evaluate_retrieval(model, eval_data(labelled, all_captions=True))
    argv = ["eval", "--model", "lightclip-tiny-mnv2", "--device", "cpu", "--dataset", retrieval]
    assert lightclip_main([*argv, "--task", "zeroshot_classification"]) != 0
    assert "dataset_type.txt says 'retrieval'" in capsys.readouterr().err


def test_multilabel_datasets_are_refused(tmp_path, model):
    shard = write_layout(tmp_path, labelled_samples([0]), dataset_type="multilabel")
    with pytest.raises(InvalidInputError, match="not multi-label"):
        evaluate_zero_shot(model, eval_data(shard), class_names=["a"])


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"dataset_type": "retreival\n"}, r"dataset_type\.txt.*\"retreival\" is not one of"),
        ({"classnames": "cat\n\ndog\n"}, r"classnames\.txt.*line 2 is blank"),
        ({"zeroshot_classification_templates": "a {c}\n\n"}, "templates.txt.*line 2 is blank"),
    ],
)
def test_layout_files_clip_benchmark_would_misread_are_refused_by_name(tmp_path, files, needle):
    shard = write_layout(tmp_path, labelled_samples([0]), **files)
    with pytest.raises(DataError, match=needle):
        eval_data(shard)


def test_a_blank_caption_line_is_refused_naming_the_member(tmp_path):
    texts = ["a\n\nb", "fine\nalso fine"]
    shard = write_layout(tmp_path, retrieval_samples(texts), dataset_type="retrieval")
    with pytest.raises(DataError, match=r"s0000000\.txt.*line 2 of 3 is blank"):
        list(eval_data(shard, all_captions=True, reading=lightclip.ReadingConfig(on_error="raise")))
    data = eval_data(shard, all_captions=True)
    assert [c for b in data for c in b["all_captions"]] == [["fine", "also fine"]]
    assert data.stats()["skipped"] == {"invalid_caption": 1}


def test_bad_templates_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="neither a template set"):
        resolve_templates(str(tmp_path / "missing.txt"))
    blank = tmp_path / "blank.txt"
    blank.write_text("a {c}\n\n")
    with pytest.raises(InvalidInputError, match="line 2 of .*blank.txt is blank"):
        resolve_templates(blank)
    with pytest.raises(InvalidInputError, match=r"templates\[0\].*one '\{\}' or '\{c\}' slot"):
        resolve_templates(["no slot here"])


def test_a_clip_benchmark_root_given_as_a_folder_names_its_shards(tmp_path):
    write_layout(tmp_path, retrieval_samples(), dataset_type="retrieval")
    with pytest.raises(DataError, match=r"CLIP_benchmark's webdataset layout.*test/0\.tar"):
        eval_data(str(tmp_path))
