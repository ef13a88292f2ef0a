"""open_clip's training flags on `lightclip train`, each against a reference:
open_clip_train's own lr schedulers, the weights before training, a run without the flag,
the files open_clip would leave, the rows of a CSV written here."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import tarfile
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightclip
from lightclip import checkpoint as ckpt
from lightclip.config import parse_args
from lightclip.data import build_pipeline
from lightclip.errors import InvalidInputError
from lightclip.models import build_model
from lightclip.resampled import ResampledShards
from lightclip.schedules import lr_schedule
from quiet_run import quiet_config
from train_fakes import FakePipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Plain CLIP keeps the runs small: no token, MLM or fusion heads.
_config = partial(quiet_config, recipe="clip", warmup=0)


def _data(num_samples: int = 8) -> FakePipeline:
    return FakePipeline(num_samples=num_samples, batch_size=4)  # num_samples / 4 steps an epoch


def _trained_state(result: lightclip.TrainResult) -> dict[str, torch.Tensor]:
    assert result.checkpoint is not None
    return ckpt.model_state(ckpt.load_checkpoint(result.checkpoint))


def _initial_state(config: lightclip.TrainConfig) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in build_model(config).state_dict().items()}


# --- --lr-scheduler against open_clip_train.scheduler ---------------------------------------


@pytest.mark.parametrize(
    ("name", "extra"),
    [("cosine", {}), ("const", {}), ("const-cooldown", dict(cooldown=7, power=2.0, end=1e-4))],
)
def test_lr_schedules_are_open_clips(name: str, extra: dict) -> None:
    scheduler = pytest.importorskip("open_clip_train.scheduler")
    base, warmup, total = 1e-3, 5, 30
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    if name == "cosine":
        reference = scheduler.cosine_lr(optimizer, base, warmup, total)
    elif name == "const":
        reference = scheduler.const_lr(optimizer, base, warmup, total)
    else:
        reference = scheduler.const_lr_cooldown(
            optimizer, base, warmup, total, extra["cooldown"], extra["power"], extra["end"]
        )
    ours = lr_schedule(
        name,
        base_lr=base,
        warmup_steps=warmup,
        total_steps=total,
        cooldown_steps=extra.get("cooldown"),
        cooldown_power=extra.get("power", 1.0),
        cooldown_end_lr=extra.get("end", 0.0),
    )
    for step in range(total):
        assert ours(step) == pytest.approx(reference(step), rel=1e-12, abs=1e-15), step


def test_const_cooldown_run_counts_cooldown_epochs_in_steps(tmp_path: Path) -> None:
    # 4 epochs of 2 steps, cooldown over the last epoch: open_clip's cooldown_steps is
    # (batches per epoch // accum_freq) * epochs_cooldown = 2.
    scheduler = pytest.importorskip("open_clip_train.scheduler")
    config = _config(
        tmp_path, epochs=4, lr=1e-3, warmup=1, lr_scheduler="const-cooldown", epochs_cooldown=1
    )
    result = lightclip.train(config, data=_data())
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    reference = scheduler.const_lr_cooldown(optimizer, 1e-3, 1, 8, 2, 1.0, 0.0)
    assert [h["lr"] for h in result.history] == pytest.approx([reference(s) for s in range(8)])
    assert result.history[-1]["lr"] < 1e-3  # the cooldown happened


def test_lr_scheduler_flags_that_cannot_apply_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="--epochs-cooldown"):
        parse_args(["--lr-scheduler", "const-cooldown"])
    with pytest.raises(InvalidInputError, match="--epochs-cooldown"):
        parse_args(["--epochs-cooldown", "2"])  # cosine has no cooldown


# --- --lock-image / --lock-text / --grad-checkpointing ----------------------------------------


def test_locked_image_tower_and_bn_stats_stay_bit_identical(tmp_path: Path) -> None:
    config = _config(
        tmp_path, name="locked", steps=2, lr=1e-2, lock_image=True, lock_image_freeze_bn_stats=True
    )
    before = _initial_state(config)
    after = _trained_state(lightclip.train(config, data=_data()))
    visual = [k for k in before if k.startswith("visual.")]
    assert any("running_mean" in k for k in visual)  # BatchNorm statistics are among them
    for key in visual:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(
        before["text.token_embedding.weight"], after["text.token_embedding.weight"]
    )

    # Without --lock-image-freeze-bn-stats the frozen weights stay, the statistics move on
    # (as open_clip's LiT does).
    moving = _config(tmp_path, name="stats", steps=2, lr=1e-2, lock_image=True)
    after = _trained_state(lightclip.train(moving, data=_data()))
    bn = [k for k in visual if "running_mean" in k]
    assert any(not torch.equal(before[k], after[k]) for k in bn)
    weights = [k for k in visual if k.endswith("weight") and "bn" not in k]
    assert all(torch.equal(before[k], after[k]) for k in weights)


def test_locked_text_tower_leaves_only_its_unlocked_groups_trainable(tmp_path: Path) -> None:
    config = _config(
        tmp_path, steps=2, lr=1e-2, lock_text=True, lock_text_unlocked_layers=1, wd=0.5
    )
    before = _initial_state(config)
    result = lightclip.train(config, data=_data())
    after = _trained_state(result)
    changed = {k for k in before if k.startswith("text.") and not torch.equal(before[k], after[k])}
    # open_clip's last group is the projection alone, and without
    # --lock-text-freeze-layer-norm the LayerNorms stay trainable; the embeddings and the
    # blocks' weights stay, even under weight decay (frozen parameters are not in the
    # optimizer at all).
    assert "text.text_projection" in changed
    assert any("ln_" in k for k in changed)
    assert all("projection" in k or "ln_" in k for k in changed), sorted(changed)
    payload = ckpt.load_checkpoint(result.checkpoint)
    model = build_model(config)
    model.lock_text_tower(unlocked_layers=1, freeze_layer_norm=False)
    trainable = sum(p.requires_grad for p in model.parameters())
    in_optimizer = sum(len(g["params"]) for g in payload["optimizer"]["param_groups"])
    assert in_optimizer == trainable < len(list(model.parameters()))


def test_resume_with_locked_towers_continues_exactly(tmp_path: Path) -> None:
    locks = dict(lock_image=True, lock_text=True, lock_text_unlocked_layers=2, lr=1e-2)
    straight = lightclip.train(_config(tmp_path, name="straight", steps=4, **locks), data=_data())
    lightclip.train(
        _config(tmp_path, name="halves", steps=4, **locks),
        data=_data(),
        on_step=lambda s, _: s == 2,
    )
    resumed = lightclip.train(
        _config(tmp_path, name="halves", steps=4, resume="latest", **locks), data=_data()
    )
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[2:]]
    # The same checkpoint without the locks: other trainable parameters, named.
    with pytest.raises(ckpt.CheckpointError, match="--lock-image / --lock-text"):
        lightclip.train(
            _config(tmp_path, name="halves", steps=6, resume="latest", lr=1e-2), data=_data()
        )


def test_resume_with_other_locks_of_as_many_trainable_tensors_is_refused(tmp_path: Path) -> None:
    # Saved with only the image head trainable, resumed with only the text projection: the
    # optimizer holds as many tensors in each group, so torch would map the image head's
    # moments onto the text projection by position alone.
    saved = dict(lock_image=True, lock_image_unlocked_groups=1, lock_text=True, lr=1e-2)
    lightclip.train(_config(tmp_path, steps=2, **saved), data=_data())
    other = dict(lock_image=True, lock_text=True, lock_text_unlocked_layers=1, lr=1e-2)
    image_head, text_projection = build_model(_config(tmp_path)), build_model(_config(tmp_path))
    image_head.lock_image_tower(unlocked_groups=1)
    image_head.lock_text_tower()
    text_projection.lock_image_tower()
    text_projection.lock_text_tower(unlocked_layers=1)
    trainable = [
        [n for n, p in m.named_parameters() if p.requires_grad]
        for m in (image_head, text_projection)
    ]
    assert trainable == [
        ["logit_scale", "visual.head.proj.weight"],
        ["logit_scale", "text.text_projection"],
    ]  # one tensor with weight decay and one without in both: torch cannot tell them apart
    with pytest.raises(ckpt.CheckpointError, match="visual.head.proj.weight"):
        lightclip.train(_config(tmp_path, steps=4, resume="latest", **other), data=_data())


def test_grad_checkpointing_gives_the_same_loss_curve(tmp_path: Path) -> None:
    def losses(name: str, **flags) -> list[float]:
        config = _config(tmp_path, name=name, recipe="lightclip", steps=3, lr=1e-2, **flags)
        return [h["loss"] for h in lightclip.train(config, data=_data(12)).history]

    plain = losses("plain")
    assert losses("checkpointed", grad_checkpointing=True) == pytest.approx(plain, rel=1e-6)
    assert plain[0] != plain[-1]


def test_lock_options_without_the_lock_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="--lock-image-unlocked-groups needs --lock-image"):
        parse_args(["--lock-image-unlocked-groups", "2"])
    with pytest.raises(InvalidInputError, match="needs --lock-text"):
        parse_args(["--lock-text-freeze-layer-norm"])


# --- --pretrained -----------------------------------------------------------------------------


def test_pretrained_weights_are_loaded_before_training(tmp_path: Path, capsys) -> None:
    source = lightclip.train(_config(tmp_path, name="source", seed=7, steps=1), data=_data())
    source_state = _trained_state(source)
    # Both towers locked: what they hold after training is what was loaded.
    config = _config(
        tmp_path,
        name="target",
        steps=1,
        pretrained=str(source.checkpoint),
        lock_image=True,
        lock_image_freeze_bn_stats=True,
        lock_text=True,
        lock_text_freeze_layer_norm=True,
    )
    fresh = _initial_state(config)
    after = _trained_state(lightclip.train(config, data=_data()))
    towers = [k for k in after if k.startswith(("visual.", "text."))]
    assert any(not torch.equal(fresh[k], source_state[k]) for k in towers)  # seeds differ
    for key in towers:
        assert torch.equal(after[key], source_state[key]), key
    assert f"--pretrained {source.checkpoint}: " in capsys.readouterr().err  # the summary


def test_pretrained_text_layers_choose_the_inherited_source_layers(tmp_path: Path) -> None:
    source = lightclip.train(_config(tmp_path, name="source", seed=7, steps=1), data=_data())
    source_state = _trained_state(source)
    depth = 1 + max(int(k.split(".")[3]) for k in source_state if ".resblocks." in k)
    config = _config(
        tmp_path,
        name="target",
        steps=1,
        pretrained=str(source.checkpoint),
        pretrained_text_layers=",".join(["1"] * depth),  # every layer inherits source layer 1
        lock_text=True,
        lock_text_freeze_layer_norm=True,
    )
    after = _trained_state(lightclip.train(config, data=_data()))
    layer = "text.transformer.resblocks"
    for key, value in source_state.items():
        if key.startswith(f"{layer}.1."):
            for i in range(depth):
                assert torch.equal(after[key.replace(".1.", f".{i}.", 1)], value), (key, i)


# --- checkpoints: --delete-previous-checkpoint, --save-most-recent -----------------------------


def _files(tmp_path: Path, name: str) -> list[str]:
    return sorted(p.name for p in (tmp_path / name / "checkpoints").iterdir())


def test_checkpoint_files_each_flag_leaves(tmp_path: Path) -> None:
    def run(name: str, **flags) -> list[str]:
        lightclip.train(_config(tmp_path, name=name, epochs=3, **flags), data=_data())
        return _files(tmp_path, name)

    assert run("default") == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt", "epoch_latest.pt"]
    assert run("deleting", delete_previous_checkpoint=True) == ["epoch_3.pt", "epoch_latest.pt"]
    assert run("every_2", delete_previous_checkpoint=True, save_frequency=2) == [
        "epoch_2.pt",
        "epoch_latest.pt",
    ]
    # open_clip's default: epoch files only.
    assert run("no_latest", save_most_recent=False) == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt"]


def test_without_save_most_recent_resume_latest_takes_the_newest_file(tmp_path: Path) -> None:
    # A constant lr: the 2-epoch run and the 3-epoch runs share the schedule.
    flags = dict(name="run", save_most_recent=False, lr_scheduler="const")
    straight = lightclip.train(
        _config(tmp_path, name="straight", epochs=3, lr_scheduler="const"), data=_data()
    )
    first = lightclip.train(_config(tmp_path, epochs=2, **flags), data=_data())
    assert first.checkpoint is not None and first.checkpoint.name == "epoch_2.pt"
    resumed = lightclip.train(_config(tmp_path, epochs=3, resume="latest", **flags), data=_data())
    assert [h["step"] for h in resumed.history] == [5, 6]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[4:]]

    # A stop between epoch files leaves epoch_latest.pt; the next epoch file replaces it.
    lightclip.train(_config(tmp_path, steps=7, resume="latest", **flags), data=_data())
    assert _files(tmp_path, "run") == [
        "epoch_1.pt",
        "epoch_2.pt",
        "epoch_3.pt",
        "epoch_latest.pt",
    ]
    lightclip.train(_config(tmp_path, epochs=4, resume="latest", **flags), data=_data())
    assert "epoch_latest.pt" not in _files(tmp_path, "run")


# --- --zeroshot-data / --zeroshot-frequency -----------------------------------------------------


def _image_folder(root: Path, classes=("red square", "blue circle", "green ring"), per=2) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per):
            pixels = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{c}_{i}.png")
    return root


def test_zero_shot_metrics_are_logged_at_open_clips_epochs(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "classes")
    config = _config(tmp_path, epochs=5, lr=1e-2, zeroshot_data=str(folder), zeroshot_frequency=2)
    result = lightclip.train(config, data=_data())
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").open()]
    # Every 2nd epoch and after the last (open_clip's zero_shot_eval rule).
    assert [(r["epoch"], r["step"]) for r in rows] == [(2, 4), (4, 8), (5, 10)]
    for row in rows:
        assert 0.0 <= row["zeroshot-val-top1"] <= 1.0
        assert row["zeroshot-val-top5"] == 1.0  # 3 classes: the right one is always in the top 5
    # The last row is the final model's zero-shot accuracy, recomputed here.
    model = lightclip.models.LightCLIP(build_model(config).config)
    model.load_state_dict(_trained_state(result))
    data = lightclip.DataPipeline(
        str(folder),
        batch_size=4,
        image_size=64,
        train=False,
        text=lightclip.TextConfig(context_length=32),
    )
    expected = lightclip.evaluate_zero_shot(model.eval(), data)
    assert rows[-1]["zeroshot-val-top1"] == pytest.approx(expected["acc1"])
    assert result.eval_metrics["zeroshot-val-top1"] == rows[-1]["zeroshot-val-top1"]


def test_zero_shot_data_must_be_labelled(tmp_path: Path) -> None:
    unlabelled = _shards(tmp_path)  # no classnames.txt
    config = _config(tmp_path, epochs=1, zeroshot_data=unlabelled, zeroshot_frequency=1)
    with pytest.raises(InvalidInputError, match="not a labelled data set"):
        lightclip.train(config, data=_data())


# --- --csv-img-key / --csv-caption-key / --csv-separator ---------------------------------------


def _csv(tmp_path: Path, sep: str) -> Path:
    folder = _image_folder(tmp_path / "pictures", classes=("a",), per=4)
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter=sep)
        writer.writerow(["title", "picture", "caption"])
        for i, image in enumerate(sorted((folder / "a").iterdir())):
            writer.writerow([f"wrong title {i}", image, f"caption number {i}"])
    return path


def test_csv_keys_and_separator_pick_the_columns(tmp_path: Path) -> None:
    table = _csv(tmp_path, ";")
    config = _config(
        tmp_path,
        train_data=str(table),
        csv_img_key="picture",
        csv_caption_key="caption",
        csv_separator=";",
    )
    pipeline = build_pipeline(
        config,
        config.train_data,
        train=False,
        image_size=32,
        context_length=32,
        rank=0,
        world_size=1,
        num_samples=None,
        device=torch.device("cpu"),
    )
    (batch,) = list(pipeline)
    expected = lightclip.get_tokenizer(32)([f"caption number {i}" for i in range(4)])
    assert torch.equal(batch["text"], expected)
    # Read with open_clip's default keys, the file has no "filepath" column: a clear error.
    with pytest.raises(InvalidInputError, match="filepath"):
        lightclip.train(_config(tmp_path, name="defaults", train_data=str(table), steps=1))


# --- --dataset-resampled ------------------------------------------------------------------------


def _shards(tmp_path: Path, n_shards: int = 4, per_shard: int = 2) -> str:
    for s in range(n_shards):
        with tarfile.open(tmp_path / f"shard-{s}.tar", "w") as tar:
            for i in range(per_shard):
                pixels = np.full((16, 16, 3), 40 * s + i, dtype=np.uint8)
                image = io.BytesIO()
                Image.fromarray(pixels).save(image, format="PNG")
                for suffix, data in (("png", image.getvalue()), ("txt", f"s{s} i{i}".encode())):
                    info = tarfile.TarInfo(f"s{s}_{i}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(tmp_path / f"shard-{{0..{n_shards - 1}}}.tar")


def _shards_read(source: str, *, seed: int, epochs: int, per_epoch: int) -> list[list[int]]:
    data = ResampledShards(
        source,
        num_samples=per_epoch,
        batch_size=2,
        image_size=16,
        train=False,
        seed=seed,
        all_captions=True,
    )
    read = []
    for epoch in range(epochs):
        data.set_epoch(epoch)
        read.append([int(k.split("_")[0][1:]) for b in data for k in b["key"]])
    return read


def test_resampled_shards_are_drawn_with_replacement_per_seed(tmp_path: Path) -> None:
    source = _shards(tmp_path)
    read = _shards_read(source, seed=0, epochs=6, per_epoch=8)
    # Each shard's two samples come together (batch 2, unshuffled): one draw per batch.
    draws = [epoch[::2] for epoch in read]
    assert all(epoch[::2] == epoch[1::2] for epoch in read)
    assert all(len(d) == 4 for d in draws)
    # With replacement: some epoch reads a shard twice and leaves another out, which a
    # pass over the shards (a permutation) never does.
    assert any(sorted(d) != [0, 1, 2, 3] for d in draws)
    assert len({tuple(d) for d in draws}) > 1  # epochs draw anew
    assert _shards_read(source, seed=0, epochs=6, per_epoch=8) == read  # deterministic
    assert _shards_read(source, seed=1, epochs=6, per_epoch=8) != read


def test_resampled_stream_runs_across_draws_and_resumes_exactly(tmp_path: Path) -> None:
    source = _shards(tmp_path)

    def make() -> ResampledShards:
        return ResampledShards(
            source, num_samples=20, batch_size=2, image_size=16, train=False, all_captions=True
        )

    whole = [k for b in make() for k in b["key"]]
    assert len(whole) == 20  # more than one draw of 8 samples
    first = make()
    it = iter(first)
    head = [k for _ in range(5) for k in next(it)["key"]]
    state = first.state_dict()
    it.close()
    second = make()
    second.load_state_dict(state)
    assert head + [k for b in second for k in b["key"]] == whole


def test_resampled_position_from_another_job_is_refused(tmp_path: Path) -> None:
    # The checks DataPipeline makes on a saved position: another world size, a negative or
    # malformed position is one clear error, not a stream drawn from the wrong place.
    data = ResampledShards(_shards(tmp_path), num_samples=8, batch_size=2, image_size=16)
    good = {"epoch": 1, "draw": 2, "yielded": 3, "inner": None, "world_size": 1}
    data.load_state_dict(good)
    assert data.state_dict() == good
    for bad, match in [
        ({**good, "world_size": 2}, "world_size=2"),
        ({**good, "draw": -1}, "negative position"),
        ({**good, "inner": 5}, "not a ResampledShards state_dict"),
        ({"epoch": 0}, "not a ResampledShards state_dict"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            data.load_state_dict(bad)
    assert data.state_dict() == good  # a refused state changes nothing


def test_dataset_resampled_trains_epochs_of_train_num_samples(tmp_path: Path) -> None:
    source = _shards(tmp_path)
    config = _config(
        tmp_path, train_data=source, dataset_resampled=True, train_num_samples=8, epochs=2
    )
    result = lightclip.train(config)
    assert result.total_steps == 4 and result.step == 4  # 8 samples / batch 4, two epochs
    with pytest.raises(InvalidInputError, match="not a shard source"):
        lightclip.train(
            _config(
                tmp_path,
                name="csv",
                train_data=str(_csv(tmp_path, ",")),
                dataset_resampled=True,
                steps=1,
            )
        )


def test_train_num_samples_is_the_epoch_of_plain_shards(tmp_path: Path, capsys) -> None:
    # open_clip's reading for webdataset shards, whose length is not known up front: 8 samples
    # in 4 shards, batches of 4, so epochs of 4 samples are one step each, each with its epoch
    # file. Before, the flag was ignored and --epochs refused shards, asking for the flag.
    source = _shards(tmp_path)
    result = lightclip.train(
        _config(tmp_path, train_data=source, train_num_samples=4, epochs=3, workers=1)
    )
    assert (result.total_steps, result.step, result.epoch) == (3, 3, 3)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt", "epoch_latest.pt"]
    # Declared longer than the shards: as in open_clip each epoch ends with the data, and the
    # run says so, once an epoch, instead of silently stopping short of its schedule.
    capsys.readouterr()
    result = lightclip.train(
        _config(tmp_path, name="long", train_data=source, train_num_samples=16, epochs=2, workers=1)
    )
    assert (result.total_steps, result.step, result.epoch) == (8, 4, 2)
    assert capsys.readouterr().err.count("ran out at step") == 2


# --- --force-image-size, --report-to wandb --------------------------------------------------


def test_force_image_size_is_image_size() -> None:
    config = parse_args(["--force-image-size", "96", "--recipe", "clip"])
    assert config.image_size == 96
    assert build_model(config).config.image_size == 96


def test_report_to_wandb_without_the_package_is_one_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    config = _config(tmp_path, steps=1, report_to="csv,wandb")
    with pytest.raises(InvalidInputError, match="wandb package is not installed"):
        lightclip.train(config, data=_data())
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_report_to_wandb_logs_train_and_val_rows(tmp_path, monkeypatch) -> None:
    calls: list[tuple[str, object]] = []

    class Run:
        def log(self, row: dict, step: int) -> None:
            calls.append(("log", (step, sorted(row))))

        def finish(self) -> None:
            calls.append(("finish", None))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or Run()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    folder = _image_folder(tmp_path / "classes")
    config = _config(
        tmp_path,
        epochs=1,
        report_to="wandb",
        wandb_project_name="proj",
        zeroshot_data=str(folder),
        zeroshot_frequency=1,
    )
    lightclip.train(config, data=_data())
    (kind, init), *rows, last = calls
    assert kind == "init" and init["project"] == "proj" and init["name"] == "run"
    assert last == ("finish", None)
    steps = [step for _, (step, _keys) in rows]
    assert steps == [1, 2, 2]  # two train rows, then the evaluation at the epoch's end
    assert "train/loss" in rows[0][1][1]
    assert rows[-1][1][1] == sorted(
        ["val/zeroshot-val-top1", "val/zeroshot-val-top5", "val/zeroshot-val-mean-per-class-recall"]
    )
    assert init["id"] == "run" and init["resume"] is None
    # Resumed, it continues that wandb run (open_clip: id=--name, resume when resuming).
    calls.clear()
    lightclip.train(dataclasses.replace(config, epochs=2, resume="latest"), data=_data())
    (kind, init), *rows, _ = calls
    assert kind == "init" and init["id"] == "run" and init["resume"] == "allow"
    assert [step for _, (step, _keys) in rows][0] == 3


def test_report_to_wandb_offline(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="wandb is an optional dependency, not installed here")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    lightclip.train(_config(tmp_path, steps=2, report_to="wandb"), data=_data())
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
