"""Collapse diagnostics (python/lightclip/diagnostics.py): the O(B·N·D) mean cross-sample
cosine against a brute-force loop over every pair, the collapsed and orthogonal extremes, no
gradient, and the four numbers reaching a training run's history and metrics.csv; the MLM
fusion gain against per-position log-probabilities."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lightclip
from lightclip.diagnostics import (
    collapse_diagnostics,
    cross_sample_cosine,
    fusion_diagnostics,
    training_diagnostics,
)
from quiet_run import quiet_config
from train_fakes import FakePipeline


def brute_force(vectors: torch.Tensor, counts: list[int] | None = None) -> float:
    """Mean of cos(a, b) over every a in sample i, b in sample j, i != j, one pair at a time."""
    b, n = vectors.shape[:2]
    counts = counts or [n] * b
    sims = [
        F.cosine_similarity(vectors[i, p], vectors[j, q], dim=0)
        for i in range(b)
        for j in range(b)
        if i != j
        for p in range(counts[i])
        for q in range(counts[j])
    ]
    return float(torch.stack(sims).mean())


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_with_masked_words(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    # A shared offset makes the mean clearly non-zero; the padding is far from it.
    tokens = torch.randn(4, 6, 5, generator=gen) + torch.randn(5, generator=gen)
    counts = torch.randint(0, 7, (4,), generator=gen)
    counts[0] = 2  # at least two samples with words
    counts[1] = 6
    padded = tokens.clone()
    for i, c in enumerate(counts.tolist()):
        padded[i, c:] = -100.0
    got = cross_sample_cosine(padded, counts)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert float(got) == pytest.approx(brute_force(tokens, counts.tolist()), abs=1e-5)
    assert float(cross_sample_cosine(tokens)) == pytest.approx(brute_force(tokens), abs=1e-5)


def test_collapsed_gives_one_orthogonal_gives_zero_and_no_pairs_gives_nan() -> None:
    direction = torch.randn(7)
    collapsed = direction * torch.rand(3, 4, 1).add(0.5)  # one direction, any length
    assert float(cross_sample_cosine(collapsed)) == pytest.approx(1.0, abs=1e-6)
    assert float(cross_sample_cosine(collapsed, torch.tensor([4, 1, 2]))) == pytest.approx(1.0)
    orthogonal = torch.eye(6).reshape(3, 2, 6)  # every sample in its own subspace
    assert float(cross_sample_cosine(orthogonal)) == pytest.approx(0.0, abs=1e-7)
    assert math.isnan(float(cross_sample_cosine(torch.randn(1, 5, 3))))
    assert math.isnan(float(cross_sample_cosine(torch.randn(3, 5, 3), torch.tensor([5, 0, 0]))))


def test_diagnostics_of_a_forward_need_no_grad_and_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(5)
    out = {
        "image_features": torch.randn(5, 8, generator=gen, requires_grad=True),
        "text_features": torch.randn(5, 8, generator=gen, requires_grad=True),
        "image_tokens": torch.randn(5, 4, 8, generator=gen, requires_grad=True),
        "word_tokens": torch.randn(5, 6, 8, generator=gen, requires_grad=True),
        "word_lengths": torch.tensor([1, 6, 3, 0, 2]),
    }
    metrics = collapse_diagnostics(out)
    assert set(metrics) == {"img_cos", "txt_cos", "tok_img_cos", "tok_word_cos"}
    assert all(not v.requires_grad and v.grad_fn is None for v in metrics.values())
    want = {
        "img_cos": brute_force(out["image_features"].detach().unsqueeze(1)),
        "txt_cos": brute_force(out["text_features"].detach().unsqueeze(1)),
        "tok_img_cos": brute_force(out["image_tokens"].detach()),
        "tok_word_cos": brute_force(out["word_tokens"].detach(), [1, 6, 3, 0, 2]),
    }
    for k, v in want.items():
        assert float(metrics[k]) == pytest.approx(v, abs=1e-5), k
    # Without tokens (plain CLIP, token loss off) only the global ones.
    plain = collapse_diagnostics({**out, "image_tokens": None, "word_tokens": None})
    assert set(plain) == {"img_cos", "txt_cos"}


@pytest.mark.usefixtures("one_torch_thread")
def test_training_history_and_csv_carry_the_diagnostics(tmp_path: Path) -> None:
    from lightclip.models import build_model

    config = quiet_config(tmp_path, steps=2)
    result = lightclip.train(config, data=FakePipeline(num_samples=8, batch_size=4))
    keys = ("img_cos", "txt_cos", "tok_img_cos", "tok_word_cos")
    assert [h["step"] for h in result.history] == [1, 2]
    for h in result.history:
        assert all(-1.0 <= h[k] <= 1.0 for k in keys), h
    # Step 1's numbers are those of the untrained model's forward on the first batch.
    first = next(iter(FakePipeline(num_samples=8, batch_size=4)))
    model = build_model(config).train()
    with torch.no_grad():
        want = collapse_diagnostics(model(first["image"], first["text"]))
    for k in keys:
        assert result.history[0][k] == pytest.approx(float(want[k]), abs=1e-6), k
    with (tmp_path / "run" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"]
    for r, h in zip(rows, result.history, strict=True):
        for k in keys:
            assert float(r[k]) == pytest.approx(h[k]), k
    # The plain CLIP recipe has no token outputs, so only the global diagnostics.
    clip = lightclip.train(
        quiet_config(tmp_path, name="clip", recipe="clip", steps=1),
        data=FakePipeline(num_samples=4, batch_size=4),
    )
    (row,) = clip.history
    assert "img_cos" in row and "txt_cos" in row and "tok_img_cos" not in row


def nll_per_masked_token(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of −log p(label) over the positions whose label is not -100, one at a time."""
    nll = [
        -float(torch.log_softmax(row.double(), dim=0)[int(label)])
        for row, label in zip(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), strict=True)
        if int(label) != -100
    ]
    return sum(nll) / len(nll)


@pytest.mark.parametrize("shape", [(7,), (2, 5)])
def test_fusion_gain_is_the_text_only_minus_the_fused_cross_entropy(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(len(shape))
    text = torch.randn(*shape, 11, generator=gen, requires_grad=True)
    # The fused pass is the text pass moved toward the right words: it must show a gain.
    labels = torch.randint(0, 11, shape, generator=gen)
    labels.view(-1)[::3] = -100
    fused = text.detach() + 2.0 * F.one_hot(labels.clamp_min(0), 11)
    out = {"mlm_logits_text": text, "mlm_logits_fused": fused, "mlm_labels": labels}
    gain = fusion_diagnostics(out)["mlm_fusion_gain"]
    want = nll_per_masked_token(text.detach(), labels) - nll_per_masked_token(fused, labels)
    assert want > 0.5
    assert float(gain) == pytest.approx(want, abs=1e-5)
    assert not gain.requires_grad
    # No fused pass (MLM without fusion, or no MLM), or no labels: nothing to log.
    assert fusion_diagnostics({**out, "mlm_logits_fused": None}) == {}
    assert fusion_diagnostics({"image_features": text}) == {}
    # Nothing masked: NaN, like a cosine over no pair.
    nothing = fusion_diagnostics({**out, "mlm_labels": torch.full(shape, -100)})
    assert math.isnan(float(nothing["mlm_fusion_gain"]))


@pytest.mark.usefixtures("one_torch_thread")
def test_the_fusion_gain_starts_at_zero_and_reaches_the_log_only_with_fusion(
    tmp_path: Path,
) -> None:
    # The fusion blocks' output projections start at zero (SPEC), so before any update the
    # fused pass is the text-only pass and the gain is exactly nothing.
    config = quiet_config(tmp_path, steps=1)
    first = next(iter(FakePipeline(num_samples=4, batch_size=4)))
    from lightclip.models import build_model

    model = build_model(config).train()
    with torch.no_grad():
        out = model(
            first["image"],
            first["text"],
            masked_text=first["masked_text"],
            mlm_labels=first["mlm_labels"],
        )
    diagnostics = training_diagnostics(out)
    assert set(diagnostics) >= {"img_cos", "mlm_fusion_gain"}
    assert float(diagnostics["mlm_fusion_gain"]) == pytest.approx(0.0, abs=1e-6)
    (row,) = lightclip.train(config, data=FakePipeline(num_samples=4, batch_size=4)).history
    assert row["mlm_fusion_gain"] == pytest.approx(0.0, abs=1e-6)
    (row,) = lightclip.train(
        quiet_config(tmp_path, name="nofusion", steps=1, fusion=False),
        data=FakePipeline(num_samples=4, batch_size=4),
    ).history
    assert "loss_mlm" in row and "mlm_fusion_gain" not in row
