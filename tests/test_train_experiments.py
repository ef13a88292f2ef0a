"""The demo's chance levels and the ablation script (smoke run on Flickr8k when present)."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lightclip.checkpoint import LATEST, load_checkpoint, model_from_checkpoint
from lightclip.demo import chance_levels, results_table, retrieval_chance
from lightclip.experiments import ablation
from lightclip.experiments.options import key_values
from lightclip.machine import describe_machine, machine_label


@pytest.mark.parametrize(("n", "positives"), [(4, 1), (5, 2), (6, 3), (6, 1)])
def test_retrieval_chance_equals_brute_force_over_all_rankings(n: int, positives: int) -> None:
    rankings = list(itertools.permutations(range(n)))
    for k in range(1, n + 1):
        hits = sum(any(r < positives for r in ranking[:k]) for ranking in rankings)
        assert retrieval_chance(k, n, positives) == pytest.approx(
            float(Fraction(hits, len(rankings)))
        )


def test_chance_levels_and_table() -> None:
    metrics = {
        "zeroshot_acc1": 0.5,
        "zeroshot_num_classes": 8.0,
        "image_retrieval_recall@1": 0.2,
        "text_retrieval_recall@1": 0.3,
    }
    chance = chance_levels(metrics, {"num_images": 100, "num_texts": 500})
    assert chance["zeroshot_acc1"] == chance["zeroshot_generic_acc1"] == 1 / 8
    assert chance["image_retrieval_recall@1"] == pytest.approx(1 / 100)
    assert chance["text_retrieval_recall@1"] == pytest.approx(5 / 500)  # 5 captions per image
    table = results_table(metrics, chance)
    assert "zero-shot top-1" in table and "4.0x" in table  # 0.5 / (1/8)
    assert "text->image R@1" in table and "20.0x" in table


@pytest.mark.slow
def test_ablation_smoke_run(flickr8k_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    code = ablation.main(
        [
            "--data-dir",
            str(flickr8k_dir),
            "--steps",
            "1",
            "--batch-size",
            "8",
            "--rows",
            "clip",
            "lightclip",
            "--seeds",
            "2",
            "--eval-batches",
            "1",
            "--workers",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--train-opt",
            "aug_cfg={'scale': (0.9, 1)}",
            "--model-opt",
            "text_layers=4",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["row"] for r in report["rows"]] == ["clip", "lightclip"]
    assert [(r["row"], r["seed"]) for r in report["runs"]] == [
        ("clip", 0),
        ("lightclip", 0),
        ("clip", 1),
        ("lightclip", 1),
    ]
    # Each run keeps its curves, with the collapse diagnostics of every log row.
    assert all({"loss_ins", "img_cos", "txt_cos"} <= set(r["curve"][-1]) for r in report["runs"])
    for row in report["rows"]:
        assert row["dev_images"] == 128 and row["seeds"] == 2
        runs = [r for r in report["runs"] if r["row"] == row["row"]]
        for _, key in ablation.METRICS:
            values = [r[key] for r in runs]
            assert all(0.0 <= v <= 1.0 for v in values)
            assert row[key] == pytest.approx(sum(values) / 2)
            assert row[f"{key}_std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    table = (tmp_path / "ablation.md").read_text()
    assert "| CLIP baseline |" in table and "| LightCLIP (all) |" in table
    assert "| CLIP baseline | 0, 1 |" in table
    assert "lightclip-tiny-mnv2 (text_layers=4) at 128 px" in table
    assert "lr 0.002 (aug_cfg={'scale': (0.9, 1)}); mean" in table
    # Each row and seed trained with its own switches and the shared overrides.
    clip_cfg = json.loads((tmp_path / "row-clip-seed1" / "config.json").read_text())
    assert (clip_cfg["soft_labels"], clip_cfg["token_loss"], clip_cfg["mlm"]) == (False,) * 3
    assert clip_cfg["seed"] == 1 and clip_cfg["aug_cfg"] == {"scale": [0.9, 1.0]}
    # The default regime: the shards' own 128 px, channels-last.
    assert clip_cfg["image_size"] == 128 and clip_cfg["channels_last"] is True
    assert " at 128 px, 1 steps" in table
    assert json.loads(Path(clip_cfg["model"]).read_text())["text_layers"] == 4
    # Every run records the machine whose kernels computed it, and the table names it.
    machine = describe_machine()  # where "auto" trains: the GPU if there is one
    assert all(r["machine"] == machine for r in report["runs"])
    assert machine["threads"] == 1  # set above, and what the runs record
    assert table.endswith(f"Trained on: {machine_label(machine)}.\n")
    assert (tmp_path / "ablation.png").exists()
    # The report is rebuilt from the saved runs alone, identically.
    (tmp_path / "ablation.md").unlink()
    assert ablation.main(["--out", str(tmp_path), "--report-only"]) == 0
    assert (tmp_path / "ablation.md").read_text() == table


def test_a_model_ema_run_reports_its_average_and_its_trained_weights(
    flickr8k_dir: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    args = ["--data-dir", str(flickr8k_dir), "--steps", "3", "--batch-size", "8", "--seeds", "1"]
    args += ["--eval-batches", "1", "--workers", "1", "--no-progress", "--rows", "clip"]
    assert ablation.main([*args, "--train-opt", "model_ema=True", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "ablation.json").read_text())
    average, trained = report["runs"]
    assert average["curve"] == trained["curve"]  # one run, reported twice
    assert trained["variant"] == ablation.TRAINED_WEIGHTS and "variant" not in average
    # Each record's recall is that of its own weights: the export, and the checkpoint's.
    run = tmp_path / "row-clip-seed0"
    payload = load_checkpoint(run / "checkpoints" / LATEST)
    args_ns = ablation.parse_args([*args, "--out", str(tmp_path)])
    dev = str(flickr8k_dir / ablation.DEV_SHARD)
    for record, model in (
        (average, model_from_checkpoint(run / "inference_model")),
        (trained, model_from_checkpoint(payload, average=False)),
    ):
        metrics = ablation.dev_metrics(model, dev, args_ns)
        assert all(record[k] == metrics[k] for _, k in ablation.METRICS)
    # ...and they differ, so a swap of the two would show.
    assert any(average[k] != trained[k] for _, k in ablation.METRICS)
    name = "visual.head.proj.weight"
    assert torch.equal(
        model_from_checkpoint(payload, average=False).state_dict()[name],
        payload["state_dict"][name],
    )
    assert not torch.equal(payload["state_dict"][name], payload["state_dict_ema"][name])
    table = (tmp_path / "ablation.md").read_text()
    assert f"| CLIP baseline, {ablation.TRAINED_WEIGHTS} | 0 |" in table
    (tmp_path / "ablation.md").unlink()
    assert ablation.main(["--out", str(tmp_path), "--report-only"]) == 0
    assert (tmp_path / "ablation.md").read_text() == table


def test_mlm_rows_with_and_without_fusion(flickr8k_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    args = ["--data-dir", str(flickr8k_dir), "--steps", "1", "--batch-size", "8"]
    args += ["--seeds", "1", "--eval-batches", "1", "--workers", "1", "--no-progress"]
    assert ablation.main([*args, "--rows", "+mlm", "+mlm-text", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "ablation.json").read_text())
    fused, text_only = report["runs"]
    for run, fusion in ((fused, True), (text_only, False)):
        name = f"row-{run['row'].strip('+')}-seed0"
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert (config["mlm"], config["fusion"], config["token_loss"]) == (True, fusion, False)
        assert "loss_mlm" in run["curve"][-1]
        # The fusion gain is logged exactly when there is a fused pass.
        assert ("mlm_fusion_gain" in run["curve"][-1]) is fusion
    assert "| + MLM, no fusion |" in (tmp_path / "ablation.md").read_text()


def _saved_comparison(
    folder: Path,
    rows: list[str],
    seeds: list[int],
    machine: dict[str, Any] | None = None,
    **args: Any,
) -> None:
    """An ``ablation.json`` as ``ablation.main`` saves it, with made-up recalls (and no
    machine, as before runs recorded theirs, unless given)."""
    runs = []
    for seed in seeds:
        for row in rows:
            recall = (10 * seed + rows.index(row)) / 1000
            runs.append(
                {
                    "row": row,
                    "label": ablation.ROWS[row][0],
                    "seed": seed,
                    **({"machine": machine} if machine else {}),
                    "train_seconds": 100.0 + seed,
                    "dev_images": 1000,
                    "curve": [{"step": 10, "loss_ins": 3.0 + seed}],
                    **{key: recall for _, key in ablation.METRICS},
                }
            )
    saved = dict(
        data_dir="d",
        towers="tiny-mnv2",
        image_size=128,
        steps=10,
        batch_size=4,
        lr=0.1,
        train_opt=[],
        model_opt=["zero_init_residual=True"],
        eval_batches=None,
    )
    folder.mkdir()
    report = {"args": {**saved, **args}, "model": str(folder / "model.json"), "runs": runs}
    (folder / "ablation.json").write_text(json.dumps(report))


def test_merge_makes_one_table_of_comparisons_run_apart(tmp_path: Path) -> None:
    _saved_comparison(tmp_path / "a", ["lightclip", "+soft"], [3, 4, 5])
    _saved_comparison(tmp_path / "b", ["clip"], [3, 4])
    _saved_comparison(tmp_path / "c", ["clip"], [5])
    out = tmp_path / "merged"
    argv = ["--merge", *(str(tmp_path / d) for d in "abc"), "--out", str(out)]
    assert ablation.main(argv) == 0
    report = json.loads((out / "ablation.json").read_text())
    # Rows in the comparison's own order, whichever folder they came from.
    assert [r["row"] for r in report["rows"]] == ["clip", "+soft", "lightclip"]
    clip = report["rows"][0]
    assert clip["seed_list"] == [3, 4, 5]
    # clip is row 0 of its folders: recall (10 * seed) / 1000 for seeds 3, 4, 5
    assert clip["image_retrieval_recall@10"] == pytest.approx(0.04)
    assert clip["image_retrieval_recall@10_std"] == pytest.approx(0.01)
    assert report["merged_from"] == [str(tmp_path / d) for d in "abc"]
    table = (out / "ablation.md").read_text()
    assert "| CLIP baseline | 3–5 | 4.0 ± 1.0 |" in table
    # zero_init_residual=True restates the preset: the header names the preset alone.
    assert "lightclip-tiny-mnv2 at 128 px, 10 steps" in table
    # The per-seed view: + soft labels is 0.1 points above LightCLIP (row 0 of folder a) per seed.
    assert "| + soft labels | 3.1 / 3.1 | 4.1 / 4.1 | 5.1 / 5.1 |" in table
    assert table.endswith("Trained on: not recorded.\n")


def _machine(cpu: str, capability: str) -> dict[str, Any]:
    return dict(
        cpu=cpu, cpu_capability=capability, torch="2.11.0", threads=2, device="cpu", kernel_env={}
    )


def test_merge_says_which_machine_trained_which_runs(tmp_path: Path, capsys) -> None:
    wide, narrow = _machine("AMD EPYC", "AVX512"), _machine("Intel Xeon", "AVX2")
    _saved_comparison(tmp_path / "a", ["clip"], [3, 4], machine=wide)
    _saved_comparison(tmp_path / "b", ["+soft"], [3, 4], machine=wide)
    out = tmp_path / "merged"
    assert ablation.main(["--merge", *(str(tmp_path / d) for d in "ab"), "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    table = (out / "ablation.md").read_text()
    assert table.endswith("Trained on: AMD EPYC, AVX512 kernels, 2 threads, torch 2.11.0.\n")
    # Seeds made on another machine are other runs: the merge warns and the notes say which.
    _saved_comparison(tmp_path / "c", ["clip"], [5], machine=narrow)
    _saved_comparison(tmp_path / "d", ["clip"], [6])
    assert ablation.main(["--merge", *(str(tmp_path / d) for d in "abcd"), "--out", str(out)]) == 0
    assert "the runs come from 2 machine setups" in capsys.readouterr().err
    notes = (out / "ablation.md").read_text().split("Not all trained on one setup")[1]
    # Each row's seeds are named once, as the tables name them.
    assert (
        "- AMD EPYC, AVX512 kernels, 2 threads, torch 2.11.0: "
        "CLIP baseline seeds 3, 4; + soft labels seeds 3, 4\n"
    ) in notes
    assert "- Intel Xeon, AVX2 kernels, 2 threads, torch 2.11.0: CLIP baseline seed 5\n" in notes
    assert notes.endswith("- not recorded: CLIP baseline seed 6\n")
    # Runs saved before runs recorded their machine are named apart, not counted as another.
    argv = ["--merge", *(str(tmp_path / d) for d in "ad"), "--out", str(out)]
    assert ablation.main(argv) == 0
    assert "warning" not in capsys.readouterr().err
    assert (
        (out / "ablation.md")
        .read_text()
        .endswith(
            "Trained on: AMD EPYC, AVX512 kernels, 2 threads, torch 2.11.0. "
            "Not recorded for: CLIP baseline seed 6.\n"
        )
    )


def _merged_rows(tmp_path: Path, folders: str) -> list[tuple[str, list[int]]]:
    """(label, seeds) of each row of ``--merge`` over the named folders, into tmp_path/merged."""
    out = tmp_path / "merged"
    argv = ["--merge", *(str(tmp_path / d) for d in folders), "--out", str(out)]
    assert ablation.main(argv) == 0
    report = json.loads((out / "ablation.json").read_text())
    return [(r["label"], r["seed_list"]) for r in report["rows"]]


def test_merge_names_the_variants_of_a_row_by_what_they_changed(tmp_path: Path) -> None:
    _saved_comparison(tmp_path / "a", ["clip", "+token"], [3, 4])
    _saved_comparison(tmp_path / "b", ["+token"], [3, 4], train_opt=["w_tok=0.03"])
    _saved_comparison(tmp_path / "c", ["+token"], [3], model_opt=["text_layers=4"])
    _saved_comparison(tmp_path / "d", ["clip"], [5], model_opt=[])  # the preset as it is
    assert _merged_rows(tmp_path, "abcd") == [
        ("CLIP baseline", [3, 4, 5]),
        ("+ token loss", [3, 4]),
        ("+ token loss, text_layers=4", [3]),
        ("+ token loss, w_tok=0.03", [3, 4]),
    ]
    out = tmp_path / "merged"
    table = (out / "ablation.md").read_text()
    assert "| + token loss, w_tok=0.03 | 3.0 / 3.0 | 4.0 / 4.0 |  |" in table
    # A merged table merges again into the same table.
    again = tmp_path / "again"
    assert ablation.main(["--merge", str(out), "--out", str(again)]) == 0
    assert (again / "ablation.md").read_text() == table
    # Options every folder shares stay in the header, not in the row labels.
    _saved_comparison(tmp_path / "e", ["clip"], [0], train_opt=["warmup=5"])
    _saved_comparison(tmp_path / "f", ["+soft"], [0], train_opt=["warmup=5", "alpha=0.1"])
    argv = ["--merge", str(tmp_path / "e"), str(tmp_path / "f"), "--out", str(out)]
    assert ablation.main(argv) == 0
    table = (out / "ablation.md").read_text()
    assert "lr 0.1 (warmup=5); mean" in table and "| + soft labels, alpha=0.1 | 0 |" in table


def test_merge_takes_an_option_that_restates_a_default_for_no_change(tmp_path: Path) -> None:
    whole = "aug_cfg={'scale': (1.0, 1.0), 'ratio': (1.0, 1.0), 'color_jitter_prob': 0.0}"
    # The whole picture is the default at 128 px; weight decay 0.1 is TrainConfig's default,
    # channels-last the comparison's own.
    restated = [whole, "wd=0.1", "channels_last=True"]
    _saved_comparison(tmp_path / "a", ["clip"], [3, 4], train_opt=restated)
    _saved_comparison(tmp_path / "b", ["clip", "+soft"], [5])
    _saved_comparison(tmp_path / "c", ["clip"], [3], train_opt=["aug_cfg={'scale': (0.6, 1)}"])
    _saved_comparison(tmp_path / "d", ["clip"], [4], train_opt=["wd=0.0"])
    assert _merged_rows(tmp_path, "abcd") == [
        ("CLIP baseline", [3, 4, 5]),
        ("CLIP baseline, aug_cfg={'scale': (0.6, 1)}", [3]),
        ("CLIP baseline, wd=0.0", [4]),
        ("+ soft labels", [5]),
    ]


def test_merge_refuses_other_experiments_and_repeated_runs(tmp_path: Path, capsys) -> None:
    _saved_comparison(tmp_path / "a", ["clip"], [0])
    _saved_comparison(tmp_path / "b", ["clip"], [1], steps=20)
    _saved_comparison(tmp_path / "c", ["clip", "+soft"], [0])
    out = str(tmp_path / "out")
    assert ablation.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", out]) == 2
    assert "steps 20 against 10" in capsys.readouterr().err
    assert ablation.main(["--merge", str(tmp_path / "a"), str(tmp_path / "c"), "--out", out]) == 2
    assert "row clip seed 0 is saved more than once" in capsys.readouterr().err
    assert ablation.main(["--merge", str(tmp_path / "nothing"), "--out", out]) == 2
    assert "no " in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ablation.json").write_text('{"args": {}, "runs": [')
    assert ablation.main(["--merge", str(tmp_path / "d"), "--out", out]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "d" / "ablation.json").write_text("[1, 2]")
    assert ablation.main(["--merge", str(tmp_path / "d"), "--out", out]) == 2
    assert "not a saved comparison" in capsys.readouterr().err
    (tmp_path / "d" / "ablation.json").write_text('{"args": {}, "runs": [{"row": "vit"}]}')
    assert ablation.main(["--merge", str(tmp_path / "d"), "--out", out]) == 2
    assert "not one of this comparison's" in capsys.readouterr().err
    _saved_comparison(tmp_path / "m", ["clip"], [0], machine="AMD EPYC")  # type: ignore[arg-type]
    assert ablation.main(["--merge", str(tmp_path / "m"), "--out", out]) == 2
    assert "a saved run is not one of this comparison's" in capsys.readouterr().err
    assert not (tmp_path / "out" / "ablation.md").exists()


def test_train_shards_takes_the_first_n_and_keeps_their_runs_apart(tmp_path: Path, capsys):
    from lightclip import _core

    for n in range(1, 7):
        names = _core.shard_names(ablation.train_shards(n))
        assert names == [f"train-{i:06d}.tar" for i in range(n)]
    assert ablation.train_shards(6) == ablation.TRAIN_SHARDS
    assert ablation.parse_args([]).train_shards == 6
    assert ablation.parse_args(["--train-shards", "2"]).train_shards == 2
    for bad in ("0", "7"):
        with pytest.raises(SystemExit):
            ablation.parse_args(["--train-shards", bad])
    assert "invalid choice" in capsys.readouterr().err
    # A report saved before the option existed trained on all six shards.
    _saved_comparison(tmp_path / "old", ["clip"], [0])
    _saved_comparison(tmp_path / "six", ["clip"], [1], train_shards=6)
    _saved_comparison(tmp_path / "two", ["clip"], [2], train_shards=2)
    out = tmp_path / "out"
    assert (
        ablation.main(["--merge", str(tmp_path / "old"), str(tmp_path / "six"), "--out", str(out)])
        == 0
    )
    assert "trained on" not in (out / "ablation.md").read_text()
    argv = ["--merge", str(tmp_path / "old"), str(tmp_path / "two"), "--out", str(out)]
    assert ablation.main(argv) == 2
    assert "train_shards 2 against 6" in capsys.readouterr().err
    assert ablation.main(["--merge", str(tmp_path / "two"), "--out", str(tmp_path / "t")]) == 0
    assert (
        "128 px, trained on 2 of the 6 train shards, 10 steps"
        in (tmp_path / "t" / "ablation.md").read_text()
    )


def test_final_contrastive_loss_is_the_mean_over_the_last_tenth() -> None:
    curve = [{"step": s, "loss_ins": float(s)} for s in range(10, 101, 10)]
    assert ablation.final_contrastive_loss(curve) == 100.0  # only step 100 is past 90
    curve = [{"step": s, "loss_ins": float(s)} for s in range(1, 101)]
    assert ablation.final_contrastive_loss(curve) == pytest.approx(sum(range(91, 101)) / 10)


def test_ablation_refuses_overrides_of_what_it_varies(flickr8k_dir: Path, tmp_path: Path, capsys):
    argv = ["--data-dir", str(flickr8k_dir), "--out", str(tmp_path), "--train-opt", "seed=3"]
    assert ablation.main(argv) == 2
    assert "set by the experiment itself" in capsys.readouterr().err


def test_train_opt_given_twice_adds_up_and_a_key_given_twice_is_refused(
    flickr8k_dir: Path, tmp_path: Path, capsys
) -> None:
    args = ablation.parse_args(["--train-opt", "wd=0", "--train-opt", "warmup=5", "alpha=0.1"])
    assert key_values(args.train_opt, "--train-opt") == {"wd": 0, "warmup": 5, "alpha": 0.1}
    argv = ["--data-dir", str(flickr8k_dir), "--out", str(tmp_path)]
    argv += ["--train-opt", "wd=0", "--train-opt", "wd=0.1"]
    assert ablation.main(argv) == 2
    assert "--train-opt: wd given twice" in capsys.readouterr().err
    assert not (tmp_path / "ablation.json").exists()


def test_flickr8k_subject_labels() -> None:
    from lightclip.experiments.flickr8k_zero_shot import SUBJECTS, subject_label

    dog = SUBJECTS.index("dog")
    assert subject_label(["Two dogs run .", "A dog .", "dogs play", "a man", "a man"]) == dog
    assert subject_label(["A man and a dog ."] * 5) is None  # two subjects agree: ambiguous
    assert subject_label(["A dog .", "A dog .", "A cat ."]) is None  # only 2 votes
    assert subject_label(["The hotdog stand ."] * 5) is None  # words, not substrings
    women = ["Two women talk .", "A woman laughs .", "women outside", "people", "x"]
    assert subject_label(women) == SUBJECTS.index("woman")


def test_ablation_reports_missing_data(tmp_path: Path, capsys) -> None:
    assert ablation.main(["--data-dir", str(tmp_path), "--steps", "1"]) == 2
    assert "no Flickr8k shards" in capsys.readouterr().err


def test_demo_seeds_runs_the_demo_per_seed_with_its_variations(tmp_path: Path) -> None:
    from lightclip.experiments import demo_seeds

    torch.set_num_threads(1)
    argv = ["--steps", "2", "--batch-size", "8", "--seeds", "2", "--first-seed", "3"]
    argv += ["--recipe", "clip", "--lr", "1e-3", "--train-opt", "alpha=0.3"]
    argv += ["--train-opt", "save_every_n_steps=1"]  # given twice, the flag's pairs add up
    argv += ["--model", "lightclip-tiny-mnv2", "--model-opt", "text_layers=4"]
    assert demo_seeds.main([*argv, "--heldout-samples", "48", "--out", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [3, 4]
    for run in runs:
        config = json.loads((tmp_path / f"seed{run['seed']}" / "config.json").read_text())
        assert (config["recipe"], config["lr"], config["alpha"]) == ("clip", 1e-3, 0.3)
        assert config["save_every_n_steps"] == 1  # the demo sets 100; --train-opt overrides it
        # --model's preset (residual blocks as the identity), with --model-opt's fields.
        model = json.loads(Path(config["model"]).read_text())
        assert (model["image_tower"], model["zero_init_residual"]) == ("mobilenetv2", True)
        assert model["text_layers"] == 4
        assert (config["seed"], config["steps"], config["batch_size"]) == (run["seed"], 2, 8)
        metrics = run["metrics"]
        for _, key in demo_seeds.FIGURES:
            assert run["ratios"][key] == pytest.approx(metrics[key] / metrics[f"chance_{key}"])
        assert metrics["chance_image_retrieval_recall@10"] == pytest.approx(10 / 48)
    mean = sum(r["ratios"]["zeroshot_acc1"] for r in runs) / 2
    last = (tmp_path / "table.md").read_text().splitlines()[-1]
    assert last.startswith("| mean ± std") and f"{mean:.2f} ± " in last


@pytest.mark.parametrize(
    ("opt", "message"), [("bogus=1", "not training options"), ("lr=1.0", "flags of their own")]
)
def test_demo_seeds_refuses_bad_train_options(tmp_path: Path, capsys, opt, message) -> None:
    from lightclip.experiments import demo_seeds

    assert demo_seeds.main(["--train-opt", opt, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_centroid_probe_tells_colour_from_shape() -> None:
    from lightclip.experiments.demo_seeds import centroid_probe

    colours, shapes = ["red", "blue", "green"], ["circle", "square", "star", "cross"]
    names = [f"{c} {s}" for c in colours for s in shapes]
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, len(names), (600,), generator=generator)
    colour = F.one_hot(labels // len(shapes), len(colours)).float()
    shape = F.one_hot(labels % len(shapes), len(shapes)).float()
    noise = 0.05 * torch.randn(len(labels), 7, generator=generator)
    both = centroid_probe(torch.cat([colour, shape], dim=1) + noise, labels, names)
    assert both["probe_colour_acc"] == both["probe_shape_acc"] == 1.0
    assert both["probe_scenes"] == 300
    # An embedding that holds the colour only: the shape is a guess among four.
    blind = centroid_probe(torch.cat([colour, 0 * shape], dim=1) + noise, labels, names)
    assert blind["probe_colour_acc"] == 1.0
    assert 0.1 < blind["probe_shape_acc"] < 0.45
    assert both["probe_colour_confusions"] == blind["probe_colour_confusions"] == []


def test_centroid_probe_names_the_colours_it_confuses() -> None:
    from lightclip.experiments.demo_seeds import centroid_probe, colour_confusions

    colours, shapes = ["red", "orange", "green"], ["circle", "square"]
    names = [f"{c} {s}" for c in colours for s in shapes]
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, len(names), (1200,), generator=generator)
    # Red and orange share one direction, green has its own: the probe can only guess between
    # the first two, so each goes to the other about half the time and green never.
    direction = torch.tensor([0, 0, 1])[labels // len(shapes)]
    noise = 0.2 * torch.randn(len(labels), 32, generator=generator)
    features = torch.cat([F.one_hot(direction, 2).float(), noise], dim=1)
    result = centroid_probe(features, labels, names)
    confused = {(t, p): share for t, p, share in result["probe_colour_confusions"]}
    assert set(confused) == {("red", "orange"), ("orange", "red")}
    assert all(0.25 < share < 0.75 for share in confused.values())
    assert 0.6 < result["probe_colour_acc"] < 0.8
    # Shares are per true colour, most frequent first, and small ones are left out.
    pairs = [("red", "red")] * 6 + [("red", "blue")] * 3 + [("red", "green")] + [("blue", "red")]
    most = [["blue", "red", 1.0], ["red", "blue", 0.3]]
    assert colour_confusions(pairs) == [*most, ["red", "green", 0.1]]
    assert colour_confusions(pairs, at_least=0.2) == most


def test_mask_words_masks_exactly_the_given_words() -> None:
    from lightclip.experiments.demo_seeds import mask_words
    from lightclip.tokenizer import MASK_TOKEN

    text = torch.tensor([[1, 7, 5, 9, 2, 0], [1, 5, 5, 3, 2, 0]])
    masked, labels = mask_words(text, [5, 9])
    m = MASK_TOKEN
    assert masked.tolist() == [[1, 7, m, m, 2, 0], [1, m, m, 3, 2, 0]]
    assert labels.tolist() == [[-100, -100, 5, 9, -100, -100], [-100, 5, 5, -100, -100, -100]]


def test_fused_mlm_probe_needs_the_fused_pass() -> None:
    import lightclip
    from lightclip.experiments.demo_seeds import fused_mlm_probe

    torch.set_num_threads(1)
    assert fused_mlm_probe(lightclip.create_model("clip-tiny-mnv2").eval(), num_samples=8) == {}
    model = lightclip.create_model("lightclip-tiny-mnv2", seed=0).eval()
    probe = fused_mlm_probe(model, num_samples=8)
    assert set(probe) == {"mlm_colour_acc", "mlm_shape_acc"}
    assert all(0.0 <= v <= 1.0 for v in probe.values())


def test_lone_shapes_pick_one_shape_scenes_with_their_caption_words() -> None:
    import lightclip
    from lightclip._core import ReadingConfig
    from lightclip.experiments.shape_supervised import LoneShapes
    from lightclip.validation import eval_pipeline_options

    model = lightclip.create_model("lightclip-tiny-mnv2")
    options = eval_pipeline_options(model, image_size=None, batch_size=60, threads=1, seed=0)
    data = lightclip.DataPipeline(
        "synthetic:train", reading=ReadingConfig(num_samples=60), **options
    )
    batch = next(iter(data))
    lone = LoneShapes(model, list(data.class_names))
    images, colour, shape = lone(batch)
    tokenizer = lightclip.get_tokenizer("lightclip-tiny-mnv2")
    word = {w: int(tokenizer([w])[0, 1]) for w in lone.colours + lone.shapes + ["small", "large"]}
    rows = [
        t for t in batch["text"] if int(sum((t == word[s]).sum() for s in ("small", "large"))) == 1
    ]
    assert 5 < len(rows) == len(images) < 60
    for text, c, s in zip(rows, colour.tolist(), shape.tolist(), strict=True):
        assert word[lone.colours[c]] in text.tolist() and word[lone.shapes[s]] in text.tolist()


def test_shape_supervised_smoke_run(tmp_path: Path) -> None:
    from lightclip.experiments import shape_supervised

    torch.set_num_threads(1)
    argv = ["--seeds", "2", "--steps", "2", "--eval-every", "1", "--eval-samples", "60"]
    assert shape_supervised.main([*argv, "--batch-size", "16", "--out", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [[row["step"] for row in rows] for rows in runs.values()] == [[1, 2], [1, 2]]
    assert all(0 <= row["shape_acc"] <= 1 for rows in runs.values() for row in rows)
    assert (tmp_path / "table.md").read_text().splitlines()[-1].startswith("| 2 | ")
    assert shape_supervised.main(["--steps", "0", "--out", str(tmp_path)]) == 2


def test_shape_supervised_trains_the_plain_cnn_in_the_towers_place(tmp_path: Path) -> None:
    from lightclip.experiments import shape_supervised

    cnn = shape_supervised.PlainCNN(width=24, channels=(8, 16))
    assert tuple(cnn(torch.randn(3, 3, 64, 64)).shape) == (3, 24)
    convs = [m for m in cnn.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 16)]
    assert tuple(cnn.trunk(torch.randn(1, 3, 64, 64)).shape) == (1, 16, 16, 16)
    torch.set_num_threads(1)
    argv = ["--tower", "plain-cnn", "--cnn-channels", "8,16", "--seeds", "1", "--steps", "2"]
    argv += ["--eval-every", "2", "--eval-samples", "60", "--batch-size", "16"]
    assert shape_supervised.main([*argv, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["runs"]["0"]
    assert [row["step"] for row in rows] == [2]
    assert "the plain CNN (8, 16 channels) in place of" in (tmp_path / "table.md").read_text()
    plain = ["--tower", "plain-cnn"]
    for bad in (
        ["--tower", "vit"],
        [*plain, "--cnn-channels", "32,x"],
        [*plain, "--cnn-channels", "0"],
        ["--cnn-channels", "8,16"],  # the preset's tower has no such channels
        [*plain, "--model-opt", "width_mult=1.0"],  # a preset's tower option
    ):
        with pytest.raises(SystemExit):
            shape_supervised.parse_args([*bad, "--out", str(tmp_path)])
    kept = shape_supervised.parse_args([*plain, "--model-opt", "image_size=96", "--out", "x"])
    assert kept.cnn_channels == shape_supervised.PLAIN_CNN_CHANNELS
