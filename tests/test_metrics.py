"""lightclip.metrics against hand-worked cases, closed-form chance levels and a brute force."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightclip.errors import InvalidInputError
from lightclip.metrics import (
    ZeroShotAccumulator,
    retrieval_metrics,
    retrieval_ranks,
    zero_shot_metrics,
)

# --------------------------------------------------------------------------- brute force


def brute_retrieval_ranks(img, txt, owner, ties):
    """The definition, one query at a time, in Python scalars."""
    s = (img.double() @ txt.double().T).tolist()
    owner = owner.tolist()
    ahead = (lambda a, b: a >= b) if ties == "pessimistic" else (lambda a, b: a > b)
    i2t = []
    for i, row in enumerate(s):
        best = max(row[t] for t in range(len(owner)) if owner[t] == i)
        i2t.append(1 + sum(1 for t, v in enumerate(row) if owner[t] != i and ahead(v, best)))
    t2i = []
    for t, o in enumerate(owner):
        col = [s[i][t] for i in range(len(s))]
        t2i.append(1 + sum(1 for i, v in enumerate(col) if i != o and ahead(v, col[o])))
    return i2t, t2i


def brute_zero_shot(scores, labels, ties):
    ahead = (lambda a, b: a >= b) if ties == "pessimistic" else (lambda a, b: a > b)
    counts = []
    for row, y in zip(scores.tolist(), labels.tolist(), strict=True):
        counts.append(sum(1 for c, v in enumerate(row) if c != y and ahead(v, row[y])))
    acc1 = sum(c < 1 for c in counts) / len(counts)
    acc5 = sum(c < 5 for c in counts) / len(counts)
    recalls = []
    for cls in sorted(set(labels.tolist())):
        idx = [i for i, y in enumerate(labels.tolist()) if y == cls]
        recalls.append(sum(counts[i] == 0 for i in idx) / len(idx))
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": sum(recalls) / len(recalls)}


# --------------------------------------------------------------------------- hand-worked


def test_retrieval_hand_worked_with_ties():
    # 3 images, 4 captions: image 0 owns captions 0 and 1, image 1 owns 2, image 2 owns 3.
    # Scores S = img @ txt.T are written out directly by taking img = I and txt = S.T.
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.9, 0.0],  # image 0: best own 0.9, caption 2 ties it
            [0.2, 0.3, 0.5, 0.6],  # image 1: own 0.5, caption 3 beats it
            [0.4, 0.4, 0.4, 0.4],  # image 2: everything ties
        ]
    )
    img, txt = torch.eye(3), scores.T.contiguous()
    owner = torch.tensor([0, 0, 1, 2])
    pess = retrieval_ranks(img, txt, owner, ties="pessimistic")
    assert pess.image_to_text.tolist() == [2, 2, 4]
    # caption 0 -> image 0 (0.9; others 0.2, 0.4) rank 1; caption 1 (0.1; 0.3, 0.4) rank 3;
    # caption 2 -> image 1 (0.5; 0.9, 0.4) rank 2; caption 3 -> image 2 (0.4; 0.0, 0.6) rank 2.
    assert pess.text_to_image.tolist() == [1, 3, 2, 2]
    opt = retrieval_ranks(img, txt, owner, ties="optimistic")
    assert opt.image_to_text.tolist() == [1, 2, 1]
    assert opt.text_to_image.tolist() == [1, 3, 2, 2]

    m = retrieval_metrics(img, txt, owner, ks=(1, 2), ties="pessimistic")
    assert m["text_retrieval_recall@1"] == 0.0
    assert m["text_retrieval_recall@2"] == pytest.approx(2 / 3)
    assert m["text_retrieval_mean_rank"] == pytest.approx(8 / 3)
    assert m["text_retrieval_median_rank"] == 2.0
    assert m["image_retrieval_recall@1"] == 0.25
    assert m["image_retrieval_recall@2"] == 0.75
    assert m["image_retrieval_median_rank"] == 2.0  # ranks 1,2,2,3
    assert m["image_retrieval_mean_rank"] == 2.0


def test_perfect_model_ranks_everything_first():
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(50, 64, generator=gen), dim=1)
    owner = torch.arange(50).repeat_interleave(5)
    txt = img[owner] + 1e-3 * torch.randn(250, 64, generator=gen)
    m = retrieval_metrics(img, txt, owner, block_size=7)
    for key in ("text_retrieval", "image_retrieval"):
        assert m[f"{key}_recall@1"] == 1.0
        assert m[f"{key}_mean_rank"] == 1.0
        assert m[f"{key}_median_rank"] == 1.0


def test_pessimistic_ties_give_a_constant_model_the_worst_ranks():
    n, c = 20, 5
    img = torch.ones(n, 8)
    txt = torch.ones(n * c, 8)
    owner = torch.arange(n).repeat_interleave(c)
    ranks = retrieval_ranks(img, txt, owner, ties="pessimistic")
    assert ranks.image_to_text.tolist() == [n * c - c + 1] * n  # behind every other caption
    assert ranks.text_to_image.tolist() == [n] * (n * c)
    assert retrieval_metrics(img, txt, owner, ties="pessimistic")["text_retrieval_recall@10"] == 0.0
    assert retrieval_ranks(img, txt, owner, ties="optimistic").text_to_image.max() == 1


def test_random_model_matches_chance():
    # With continuous random scores the best of c own captions among T is in the top k with
    # probability 1 - C(T-k, c) / C(T, c); a caption finds its image in the top k with k / N.
    n, c, dim = 400, 5, 32
    gen = torch.Generator().manual_seed(1)
    img = torch.randn(n, dim, generator=gen)
    txt = torch.randn(n * c, dim, generator=gen)
    owner = torch.randperm(n * c, generator=gen) % n
    m = retrieval_metrics(img, txt, owner, block_size=64)
    t = n * c
    for k in (1, 5, 10):
        p_i2t = 1 - math.comb(t - k, c) / math.comb(t, c)
        sd = math.sqrt(p_i2t * (1 - p_i2t) / n)
        assert abs(m[f"text_retrieval_recall@{k}"] - p_i2t) < 5 * sd + 1e-9
        p_t2i = k / n
        sd = math.sqrt(p_t2i * (1 - p_t2i) / t)
        assert abs(m[f"image_retrieval_recall@{k}"] - p_t2i) < 5 * sd
    # the mean rank of a uniform position among N is (N + 1) / 2
    assert m["image_retrieval_mean_rank"] == pytest.approx((n + 1) / 2, rel=0.05)


def test_block_size_does_not_change_results():
    gen = torch.Generator().manual_seed(2)
    img = torch.randn(37, 16, generator=gen)
    txt = torch.randn(111, 16, generator=gen)
    owner = torch.arange(111) % 37
    ref = retrieval_ranks(img, txt, owner, block_size=10_000)
    for block in (1, 5, 36, 37, 38):
        got = retrieval_ranks(img, txt, owner, block_size=block)
        assert torch.equal(got.image_to_text, ref.image_to_text)
        assert torch.equal(got.text_to_image, ref.text_to_image)


@settings(max_examples=60, deadline=None)
@given(
    n_images=st.integers(1, 7),
    extra_captions=st.lists(st.integers(0, 3), min_size=7, max_size=7),
    block=st.integers(1, 8),
    ties=st.sampled_from(["pessimistic", "optimistic"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_retrieval_ranks_equal_brute_force(n_images, extra_captions, block, ties, seed):
    # Small integer features make exact ties common, which is where implementations differ.
    gen = torch.Generator().manual_seed(seed)
    owner = torch.cat([torch.full((1 + extra_captions[i],), i) for i in range(n_images)])[
        torch.randperm(sum(1 + extra_captions[i] for i in range(n_images)), generator=gen)
    ]
    img = torch.randint(-2, 3, (n_images, 3), generator=gen).float()
    txt = torch.randint(-2, 3, (owner.numel(), 3), generator=gen).float()
    got = retrieval_ranks(img, txt, owner, block_size=block, ties=ties)
    i2t, t2i = brute_retrieval_ranks(img, txt, owner, ties)
    assert got.image_to_text.tolist() == i2t
    assert got.text_to_image.tolist() == t2i
    m = retrieval_metrics(img, txt, owner, block_size=block, ties=ties)
    assert m["text_retrieval_median_rank"] == pytest.approx(float(np.median(i2t)))
    assert m["image_retrieval_mean_rank"] == pytest.approx(float(np.mean(t2i)))


# --------------------------------------------------------------------------- zero-shot


def test_zero_shot_hand_worked():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # label 0: top-1
            [0.5, 0.5, 0.0],  # label 1: tie with class 0 -> pessimistic miss, optimistic hit
            [0.2, 0.3, 0.1],  # label 2: last
            [0.0, 0.2, 0.8],  # label 2: top-1
        ]
    )
    labels = torch.tensor([0, 1, 2, 2])
    m = zero_shot_metrics(scores, labels, ks=(1, 2), ties="pessimistic")
    assert m["acc1"] == 0.5
    assert m["acc2"] == 0.75
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0 + 0.5) / 3)
    o = zero_shot_metrics(scores, labels, ks=(1, 2), ties="optimistic")
    assert o["acc1"] == 0.75
    assert o["mean_per_class_recall"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_pessimistic_zero_shot_constant_scores_score_zero():
    m = zero_shot_metrics(torch.zeros(10, 7), torch.arange(10) % 7, ties="pessimistic")
    assert m == {"acc1": 0.0, "acc5": 0.0, "mean_per_class_recall": 0.0}


def test_zero_shot_random_scores_near_chance():
    gen = torch.Generator().manual_seed(3)
    n, c = 5000, 20
    m = zero_shot_metrics(
        torch.randn(n, c, generator=gen), torch.randint(0, c, (n,), generator=gen)
    )
    for k, key in ((1, "acc1"), (5, "acc5")):
        p = k / c
        assert abs(m[key] - p) < 5 * math.sqrt(p * (1 - p) / n)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    c=st.integers(1, 9),
    chunk=st.integers(1, 10),
    ties=st.sampled_from(["pessimistic", "optimistic"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_zero_shot_accumulator_equals_brute_force(n, c, chunk, ties, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (n, c), generator=gen).float()
    labels = torch.randint(0, c, (n,), generator=gen)
    acc = ZeroShotAccumulator(num_classes=c, ties=ties)
    for s in range(0, n, chunk):
        acc.update(scores[s : s + chunk], labels[s : s + chunk])
    assert acc.count == n
    got = acc.compute()
    ref = brute_zero_shot(scores, labels, ties)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value)


# --------------------------------------------------------------------------- errors


def test_errors_name_the_problem():
    img, txt = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(InvalidInputError, match="image 2 has no caption"):
        retrieval_ranks(img, txt, torch.tensor([0, 1, 1]))
    with pytest.raises(InvalidInputError, match=r"text_to_image\[1\] = 5"):
        retrieval_ranks(img, txt, torch.tensor([0, 5, 2]))
    with pytest.raises(InvalidInputError, match="text_to_image must be an integer tensor"):
        retrieval_ranks(img, txt, torch.tensor([0, 1]))
    with pytest.raises(InvalidInputError, match="differ in width"):
        retrieval_ranks(img, torch.randn(3, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(InvalidInputError, match="text_features contains NaN"):
        retrieval_ranks(img, txt.index_fill(0, torch.tensor([1]), float("nan")), torch.arange(3))
    with pytest.raises(InvalidInputError, match="ties must be one of"):
        retrieval_ranks(img, txt, torch.arange(3), ties="random")
    with pytest.raises(InvalidInputError, match=r"labels\[0\] = 4"):
        zero_shot_metrics(torch.randn(2, 3), torch.tensor([4, 0]))
    with pytest.raises(InvalidInputError, match="scores has 3 columns but there are 2 classes"):
        ZeroShotAccumulator(num_classes=2).update(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(InvalidInputError, match="no samples"):
        ZeroShotAccumulator(num_classes=2).compute()


# --------------------------------------------------------------------------- CLIP_benchmark
# The default rule ranks ties as CLIP_benchmark's own code does (torch.topk): on scores full of
# exact ties its functions, run here, must give our numbers.


@settings(max_examples=40, deadline=None)
@given(
    n_images=st.integers(2, 25),
    extra_captions=st.integers(0, 40),
    levels=st.integers(0, 3),
    block=st.integers(1, 30),
    seed=st.integers(0, 2**31 - 1),
)
def test_default_ties_give_clip_benchmarks_retrieval_recalls(
    n_images, extra_captions, levels, block, seed
):
    cb = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    gen = torch.Generator().manual_seed(seed)
    owner = torch.cat(
        [torch.arange(n_images), torch.randint(0, n_images, (extra_captions,), generator=gen)]
    )
    # Few small integer values: most scores tie with others (levels 0 is a constant model).
    img = torch.randint(0, levels + 1, (n_images, 3), generator=gen).float()
    txt = torch.randint(0, levels + 1, (len(owner), 3), generator=gen).float()
    ks = [k for k in (1, 2, 5, 10) if k <= n_images]
    m = retrieval_metrics(img, txt, owner, ks=ks, block_size=block)
    scores = txt @ img.T  # as CLIP_benchmark computes them
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(owner)), owner] = True
    for k in ks:
        t2i = cb.batchify(cb.recall_at_k, scores, positive, block, "cpu", k=k)
        i2t = cb.batchify(cb.recall_at_k, scores.T, positive.T, block, "cpu", k=k)
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx((t2i > 0).float().mean().item())
        assert m[f"text_retrieval_recall@{k}"] == pytest.approx((i2t > 0).float().mean().item())


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    c=st.integers(5, 12),
    levels=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # CLIP_benchmark's own float(array)
def test_default_ties_give_clip_benchmarks_zero_shot_numbers(n, c, levels, seed):
    cb = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
    from sklearn.metrics import balanced_accuracy_score

    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels + 1, (n, c), generator=gen).float()
    labels = torch.randint(0, c, (n,), generator=gen)
    m = zero_shot_metrics(scores, labels)
    acc1, acc5 = cb.accuracy(scores, labels, topk=(1, 5))
    assert (m["acc1"], m["acc5"]) == (pytest.approx(acc1), pytest.approx(acc5))
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true"
        warnings.simplefilter("ignore")
        want = balanced_accuracy_score(labels.numpy(), scores.argmax(dim=1).numpy())
    assert m["mean_per_class_recall"] == pytest.approx(want)


def test_topk_accumulator_refuses_a_k_beyond_what_it_kept():
    acc = ZeroShotAccumulator(num_classes=8, max_k=3)
    acc.update(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))
    assert set(acc.compute(ks=(1, 3))) == {"acc1", "acc3", "mean_per_class_recall"}
    with pytest.raises(InvalidInputError, match="max_k >= 5"):
        acc.compute(ks=(1, 5))


def test_lightclip_eval_passes_ties_through(monkeypatch):
    import argparse

    from lightclip import eval_cli

    parser = argparse.ArgumentParser()
    eval_cli.add_eval_arguments(parser)
    seen = {}

    def fake_retrieval(model, data, **kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(eval_cli, "load_eval_model", lambda *a: (None, "m"))
    monkeypatch.setattr(eval_cli, "make_eval_data", lambda *a, **k: None)
    monkeypatch.setattr(eval_cli, "evaluate_retrieval", fake_retrieval)
    for argv, want in [([], "topk"), (["--ties", "pessimistic"], "pessimistic")]:
        args = parser.parse_args(["--dataset", "x", "--task", "zeroshot_retrieval", *argv])
        with pytest.raises(SystemExit):
            eval_cli.run_eval(args)
        assert seen["ties"] == want
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "x", "--ties", "random"])
