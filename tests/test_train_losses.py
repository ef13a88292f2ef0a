"""The trainer's own pieces of maths: the MLM loss, LightCLIPLoss's weighted parts, AdamW
parameter groups, the logit clamp."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightclip.errors import InvalidInputError
from lightclip.losses.mlm import MaskedLanguageModelLoss
from lightclip.optim import LOGIT_SCALE_MAX, build_optimizer, clamp_logit_scale, parameter_groups


def _reference_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Plain log-softmax and a Python loop over the masked positions: no ignore_index machinery.
    logp = torch.log_softmax(logits.double(), dim=-1)
    picked = [
        -logp[b, c, labels[b, c]]
        for b in range(labels.shape[0])
        for c in range(labels.shape[1])
        if labels[b, c] != -100
    ]
    return torch.stack(picked).mean()


def _masked_batch(gen: torch.Generator, b: int = 3, c: int = 7, v: int = 11):
    labels = torch.randint(0, v, (b, c), generator=gen)
    labels[torch.rand(b, c, generator=gen) > 0.3] = -100
    labels[0, 1] = 4  # at least one masked position
    text = torch.randn(b, c, v, generator=gen, requires_grad=True)
    fused = torch.randn(b, c, v, generator=gen, requires_grad=True)
    return text, fused, labels


def test_mlm_loss_is_the_mean_of_both_passes_over_masked_positions() -> None:
    gen = torch.Generator().manual_seed(0)
    text, fused, labels = _masked_batch(gen)
    loss = MaskedLanguageModelLoss()(text, fused, labels)
    expected = 0.5 * (_reference_ce(text, labels) + _reference_ce(fused, labels))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    # Unmasked positions get no gradient; masked ones do, in both passes.
    unmasked = labels == -100
    assert text.grad[unmasked].abs().max() == 0 and fused.grad[unmasked].abs().max() == 0
    assert text.grad[~unmasked].abs().sum() > 0 and fused.grad[~unmasked].abs().sum() > 0


def test_mlm_loss_without_fusion_is_text_only_and_empty_mask_is_zero() -> None:
    gen = torch.Generator().manual_seed(1)
    text, _, labels = _masked_batch(gen)
    loss = MaskedLanguageModelLoss()(text, None, labels)
    assert loss.item() == pytest.approx(_reference_ce(text, labels).item(), rel=1e-5)
    nothing = torch.full_like(labels, -100)
    zero = MaskedLanguageModelLoss()(text, None, nothing)
    assert zero.item() == 0.0 and zero.requires_grad  # not NaN, and backward still works
    zero.backward()


def test_mlm_loss_global_normaliser_equals_one_ce_over_all_ranks() -> None:
    # Two "ranks" with different masked counts: rank losses normalised by (global count /
    # world size), averaged as DDP averages, equal one CE over the concatenated batch.
    gen = torch.Generator().manual_seed(2)
    (t0, _, l0), (t1, _, l1) = _masked_batch(gen), _masked_batch(gen, b=3)
    n0, n1 = int((l0 != -100).sum()), int((l1 != -100).sum())
    assert n0 != n1
    loss = MaskedLanguageModelLoss()
    per_rank = [loss(t, None, lab, num_masked=(n0 + n1) / 2) for t, lab in ((t0, l0), (t1, l1))]
    global_ce = _reference_ce(torch.cat([t0, t1]), torch.cat([l0, l1]))
    assert ((per_rank[0] + per_rank[1]) / 2).item() == pytest.approx(global_ce.item(), rel=1e-5)


def test_mlm_loss_rejects_bad_shapes() -> None:
    loss = MaskedLanguageModelLoss()
    with pytest.raises(InvalidInputError, match="labels"):
        loss(torch.zeros(2, 3, 5), None, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="logits_fused"):
        loss(torch.zeros(2, 3, 5), torch.zeros(2, 3, 6), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="logits_text"):
        loss(torch.zeros(6), None, torch.zeros(6, dtype=torch.long))


def test_mlm_loss_on_masked_positions_only_equals_the_full_form() -> None:
    # The model can return logits at the M masked positions only ([M, V], labels [M]).
    gen = torch.Generator().manual_seed(3)
    text, fused, labels = _masked_batch(gen)
    keep = labels != -100
    full = MaskedLanguageModelLoss()(text, fused, labels)
    compact = MaskedLanguageModelLoss()(text[keep], fused[keep], labels[keep])
    assert compact.item() == pytest.approx(full.item(), rel=1e-6)


class _TinyClip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(10, 8)
        self.positional_embedding = nn.Parameter(torch.zeros(5, 8))
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.ln_final = nn.LayerNorm(8)
        self.proj = nn.Linear(8, 4)
        self.text_projection = nn.Parameter(torch.randn(8, 4))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)


def test_parameter_groups_follow_the_spec() -> None:
    model = _TinyClip()
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    assert sorted(n for n, _ in decay["named"]) == ["conv.weight", "proj.weight", "text_projection"]
    assert sorted(n for n, _ in no_decay["named"]) == sorted(
        [
            "token_embedding.weight",
            "positional_embedding",
            "conv.bias",
            "bn.weight",
            "bn.bias",
            "ln_final.weight",
            "ln_final.bias",
            "proj.bias",
            "logit_scale",
        ]
    )
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    # Every trainable parameter is in exactly one group; frozen ones in none.
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [id(p) for p in decay["params"] + no_decay["params"]]
    assert sorted(grouped) == sorted(trainable)


def test_optimizer_decays_only_the_decay_group() -> None:
    model = _TinyClip()
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5, betas=(0.9, 0.98), eps=1e-6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)  # zero gradient: only weight decay can move a weight
    opt.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (
            name in {"conv.weight", "proj.weight", "text_projection"}
            and bool(before[name].abs().sum() > 0)
        ), name


def test_logit_scale_clamp() -> None:
    model = _TinyClip()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    clamp_logit_scale(model)
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))
    assert LOGIT_SCALE_MAX == pytest.approx(4.60517, abs=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    clamp_logit_scale(model)
    assert model.logit_scale.item() == 0.0
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    clamp_logit_scale(model)
    assert model.logit_scale.item() == 2.0


def _model_outputs(config):
    from lightclip.models import build_model
    from train_fakes import FakePipeline

    batch = next(iter(FakePipeline(num_samples=4, batch_size=4)))
    mlm = dict(masked_text=batch["masked_text"], mlm_labels=batch["mlm_labels"])
    out = build_model(config)(batch["image"], batch["text"], **(mlm if config.mlm else {}))
    return out, batch


def test_lightclip_loss_weighs_the_parts_the_switches_turn_on() -> None:
    from lightclip.config import TrainConfig
    from lightclip.labels import LabelSchedule
    from lightclip.losses import LightCLIPLoss, SoftClipLoss, TokenAlignmentLoss

    config = TrainConfig(w_ins=0.5, w_tok=2.0, w_mlm=0.25, alpha=0.2, r1=0.1, r2=0.5)
    out, batch = _model_outputs(config)
    total, parts = LightCLIPLoss.from_config(config)(out, batch, progress=0.7)
    schedule = LabelSchedule(
        r1=0.1, r2=0.5, alpha=0.2, ramp=config.label_ramp, ramp_width=config.label_ramp_width
    )
    f, g, scale = out["image_features"], out["text_features"], out["logit_scale"]
    lengths = out["word_lengths"] if out.get("word_lengths") is not None else batch["word_lengths"]
    expected = {
        "ins": SoftClipLoss(schedule)(f, g, scale, 0.7),
        "tok": TokenAlignmentLoss()(out["image_tokens"], out["word_tokens"], lengths),
        "mlm": MaskedLanguageModelLoss()(
            out["mlm_logits_text"], out["mlm_logits_fused"], out["mlm_labels"]
        ),
    }
    assert set(parts) == set(expected)
    for key, value in expected.items():
        assert parts[key].item() == pytest.approx(value.item(), rel=1e-6), key
    weighted = 0.5 * expected["ins"] + 2.0 * expected["tok"] + 0.25 * expected["mlm"]
    assert total.item() == pytest.approx(weighted.item(), rel=1e-6)


def test_lightclip_loss_of_the_clip_recipe_is_clips_hard_label_loss() -> None:
    from lightclip.config import TrainConfig
    from lightclip.losses import LightCLIPLoss

    config = TrainConfig(recipe="clip", w_ins=3.0)
    out, batch = _model_outputs(config)
    total, parts = LightCLIPLoss.from_config(config)(out, batch, progress=0.9)
    # open_clip's ClipLoss in a few lines of torch: cross-entropy both ways against the diagonal.
    logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
    labels = torch.arange(logits.shape[0])
    ce = torch.nn.functional.cross_entropy
    reference = (ce(logits, labels) + ce(logits.T, labels)) / 2
    assert set(parts) == {"ins"}
    assert parts["ins"].item() == pytest.approx(reference.item(), rel=1e-5)
    assert total.item() == pytest.approx(3.0 * reference.item(), rel=1e-5)


def test_token_loss_counts_from_tok_start_and_is_logged_before() -> None:
    from lightclip.config import TrainConfig
    from lightclip.losses import LightCLIPLoss

    config = TrainConfig(recipe="clip", token_loss=True, w_tok=0.5, tok_start=0.4)
    out, batch = _model_outputs(config)
    loss = LightCLIPLoss.from_config(config)
    before_total, before = loss(out, batch, progress=0.39)
    after_total, after = loss(out, batch, progress=0.4)
    assert after["tok"].item() > 0
    assert before["tok"].item() == pytest.approx(after["tok"].item(), rel=1e-6)
    assert before_total.item() == pytest.approx(before["ins"].item(), rel=1e-6)
    expected = after["ins"] + 0.5 * after["tok"]
    assert after_total.item() == pytest.approx(expected.item(), rel=1e-6)
    # Before the start the token part adds no gradient: the same as the contrastive loss alone.
    tokens = out["image_tokens"]
    (grad_before,) = torch.autograd.grad(before_total, tokens, retain_graph=True)
    (grad_after,) = torch.autograd.grad(after_total, tokens, retain_graph=True)
    assert grad_before.abs().max() == 0 and grad_after.abs().max() > 0
