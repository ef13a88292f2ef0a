"""The LightCLIP model: an image tower, a text tower, and the training-only LightCLIP parts.

State-dict layout (open_clip's ``CustomTextCLIP`` naming, so an export maps straight across):

    visual.trunk.*        image tower trunk (timm names, see resnet.py / mobilenet.py / swin.py)
    visual.head.*         pooling/projection to the joint space
    text.*                text tower (open_clip ``TextTransformer`` names, see text.py)
    logit_scale           log of the contrastive temperature's inverse, init ln(1/0.07)
    logit_bias            SigLIP's bias of every logit (``init_logit_bias`` models only)
  training only, dropped by ``export()``:
    token_proj_image.*    Linear(stage-4 channels -> d_tok) for the token alignment loss,
    token_proj_text.*     Linear(text width -> d_tok)      both with token_space="heads" only
    fusion.*              image-to-text fusion for the fused MLM pass (fusion.py)
    mlm_head.*            Linear(text width -> vocab) predicting the original tokens
    distill_proj.*        Linear(embed_dim -> teacher's embed_dim, no bias) for feature
                          distillation, with ``distill_dim`` only (``--w-distill-feature``)

The token alignment loss's tokens live, by default (``token_space="joint"``), in the joint
embedding space, mapped there by each tower's own projection (the image tower's
``project_tokens``, the text tower's ``text_projection``): no parameter of their own, and a
collapse of all tokens to one direction would fight the contrastive loss instead of satisfying
L_tok for free, as it can through the separate heads of ``token_space="heads"``.

    >>> import torch, lightclip
    >>> model = lightclip.create_model("clip-tiny-mnv2")
    >>> img = torch.randn(2, 3, 64, 64)
    >>> tuple(model.encode_image(img, normalize=True).shape)
    (2, 128)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .config import LightCLIPConfig
from .fusion import ImageToTextFusion
from .intermediates import image_intermediates, take_indices
from .mobilenet import MobileNetV2Tower
from .resnet import ResNetTower
from .swin import SwinTower
from .text import TextTransformer

#: Attribute names of the training-only modules; ``export()`` drops exactly these.
TRAINING_ONLY_MODULES = (
    "token_proj_image",
    "token_proj_text",
    "fusion",
    "mlm_head",
    "distill_proj",
)

#: ``forward(image, None)`` / ``forward(None, text)`` without ``output_dict``: open_clip's
#: (image_features, text_features, logit_scale), the missing side None; a model with a logit
#: bias (SigLIP) returns it fourth.
OpenClipOutput = (
    tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]
    | tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]
)

ImageTower = ResNetTower | MobileNetV2Tower | SwinTower


def build_image_tower(cfg: LightCLIPConfig) -> ImageTower:
    if cfg.image_tower == "resnet18":
        return ResNetTower(cfg)
    if cfg.image_tower == "mobilenetv2":
        return MobileNetV2Tower(cfg)
    return SwinTower(cfg)


class LightCLIP(nn.Module):
    """A dual-encoder CLIP with LightCLIP's training-only heads (see the module docstring).

    open_clip's model API: ``encode_image``, ``encode_text``, ``get_logits``,
    ``forward_intermediates``, ``lock_image_tower``, ``lock_text_tower``,
    ``set_grad_checkpointing``, and ``forward``: open_clip's tuple, or with ``output_dict`` a
    dict, which with both inputs is the training forward (open_clip's keys and what the
    LightCLIP losses read).
    """

    #: SigLIP's bias of every logit (open_clip's), with ``init_logit_bias``; CLIP models have
    #: none.
    logit_bias: nn.Parameter | None

    def __init__(self, config: LightCLIPConfig, output_dict: bool = False) -> None:
        super().__init__()
        self.config = config
        self.output_dict = output_dict
        self.context_length = config.context_length
        self.vocab_size = config.vocab_size
        self.visual = build_image_tower(config)
        self.text = TextTransformer(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.logit_bias = (
            None
            if config.init_logit_bias is None
            else nn.Parameter(torch.tensor(float(config.init_logit_bias)))
        )
        channels = self.visual.stage_channels
        self.token_proj_image: nn.Linear | None = None
        self.token_proj_text: nn.Linear | None = None
        self.fusion: ImageToTextFusion | None = None
        self.mlm_head: nn.Linear | None = None
        if config.token_head and config.token_space == "heads":
            self.token_proj_image = nn.Linear(channels[-1], config.d_tok)
            self.token_proj_text = nn.Linear(config.text_width, config.d_tok)
        if config.fusion_stages and config.mlm:
            self.fusion = ImageToTextFusion(
                config.fusion_stages, channels, config.text_width, config.fusion_heads
            )
        if config.mlm:
            self.mlm_head = nn.Linear(config.text_width, config.vocab_size)
            nn.init.normal_(self.mlm_head.weight, std=config.text_width**-0.5)
            nn.init.zeros_(self.mlm_head.bias)
        self.distill_proj: nn.Linear | None = None
        if config.distill_dim:
            # One map for both towers: the student's image and text embeddings share one joint
            # space and the teacher's share another, so the map between the spaces is one
            # map. Two would let each tower match the teacher through a map of its own while
            # the image-text similarities the student is used for stay unconstrained. Equal
            # widths start at the identity (the loss is then the plain gap between the
            # embeddings); other widths at nn.Linear's default.
            self.distill_proj = nn.Linear(config.embed_dim, config.distill_dim, bias=False)
            if config.distill_dim == config.embed_dim:
                nn.init.eye_(self.distill_proj.weight)

    # ----------------------------------------------------------------- inference (open_clip API)
    def check_images(self, images: torch.Tensor, arg: str = "images") -> None:
        if not images.is_floating_point():
            raise InvalidInputError(f"{arg}: expected a float tensor, got {images.dtype}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise InvalidInputError(
                f"{arg}: expected [batch, 3, H, W], got shape {tuple(images.shape)}"
            )
        h, w = images.shape[-2:]
        if h % 32 or w % 32:
            raise InvalidInputError(f"{arg}: height and width must be multiples of 32, got {h}x{w}")

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        self.check_images(images)
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text(text)
        return F.normalize(features, dim=-1) if normalize else features

    def exp_logit_scale(self) -> torch.Tensor:
        # The trainer clamps the parameter itself; clamping here too keeps a forward from
        # ever producing a temperature beyond the bound.
        return self.logit_scale.clamp(max=self.config.max_logit_scale).exp()

    def _logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[N_img, N_txt] logits of normalised features: scaled, plus the bias if any."""
        logits = self.exp_logit_scale() * image_features @ text_features.T
        return logits if self.logit_bias is None else logits + self.logit_bias

    def get_logits(
        self, image: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """open_clip's ``(logits_per_image [N_img, N_txt], logits_per_text [N_txt, N_img])``:
        cosine similarities times ``exp(logit_scale)``, plus ``logit_bias`` where the model has
        one (SigLIP).

            >>> import torch, lightclip
            >>> model = lightclip.create_model("clip-tiny-mnv2").eval()
            >>> text = lightclip.get_tokenizer("clip-tiny-mnv2")(["a dog", "a cat", "a car"])
            >>> per_image, per_text = model.get_logits(torch.randn(2, 3, 64, 64), text)
            >>> tuple(per_image.shape), tuple(per_text.shape)
            ((2, 3), (3, 2))
        """
        image_features = self.encode_image(image, normalize=True)
        text_features = self.encode_text(text, normalize=True)
        logits_per_image = self._logits(image_features, text_features)
        return logits_per_image, logits_per_image.T

    def forward_intermediates(
        self,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        image_indices: int | Sequence[int] | None = None,
        text_indices: int | Sequence[int] | None = None,
        stop_early: bool = False,
        normalize: bool = True,
        normalize_intermediates: bool = False,
        intermediates_only: bool = False,
        image_output_fmt: str = "NCHW",
        image_output_extra_tokens: bool = False,
        text_output_fmt: str = "NLC",
        text_output_extra_tokens: bool = False,
        output_logits: bool = False,
        output_logit_scale_bias: bool = False,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """open_clip's ``forward_intermediates``, with its arguments and keys.

        ``image_intermediates``: the image tower's feature maps, numbered as timm numbers the
        exported tower's (ResNet-18, MobileNet-V2: stem at stride 2 then the 4 stages; Swin: the
        4 stages), ``image_output_fmt`` "NCHW", "NHWC" or "NLC" (tokens, row-major).
        ``text_intermediates``: each text block's output [B, L, width] ("NLC").
        ``*_indices``: None all, n the last n, a list those (negative from the end).
        ``image_features`` / ``text_features``: as ``encode_*``, L2-normalised with
        ``normalize``; left out with ``intermediates_only``, which also turns off
        ``normalize`` and ``output_logits``. ``output_logits`` adds ``image_logits`` /
        ``text_logits`` (needs both inputs; with the model's ``logit_bias`` added, where it has
        one), ``output_logit_scale_bias`` adds ``logit_scale`` (exp'd) and ``logit_bias``. Our
        towers have no class or prefix tokens, so ``*_output_extra_tokens``
        adds nothing.

            >>> import torch, lightclip
            >>> model = lightclip.create_model("clip-tiny-mnv2").eval()
            >>> out = model.forward_intermediates(torch.randn(1, 3, 64, 64), image_indices=2)
            >>> [tuple(t.shape) for t in out["image_intermediates"]], sorted(out)
            ([(1, 48, 4, 4), (1, 160, 2, 2)], ['image_features', 'image_intermediates'])
        """
        if intermediates_only:
            normalize = output_logits = False
        if output_logits and (image is None or text is None):
            raise InvalidInputError("output_logits: needs both image and text")
        if text is not None and text_output_fmt != "NLC":
            raise InvalidInputError(f"text_output_fmt: only 'NLC' exists, got {text_output_fmt!r}")
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        if image is not None:
            self.check_images(image, "image")
            take = take_indices(self.visual.num_feature_maps, image_indices, "image_indices")
            out.update(
                image_intermediates(
                    self.visual,
                    image,
                    take,
                    stop_early=stop_early,
                    normalize_intermediates=normalize_intermediates,
                    intermediates_only=intermediates_only,
                    output_fmt=image_output_fmt,
                )
            )
        if text is not None:
            blocks = len(self.text.transformer.resblocks)
            take = take_indices(blocks, text_indices, "text_indices")
            out.update(
                self.text.forward_intermediates(
                    text, take, stop_early, normalize_intermediates, intermediates_only
                )
            )
        for key in ("image_features", "text_features"):
            features = out.get(key)
            if normalize and isinstance(features, torch.Tensor):
                out[key] = F.normalize(features, dim=-1)
        if output_logits:
            image_features, text_features = out["image_features"], out["text_features"]
            assert isinstance(image_features, torch.Tensor)
            assert isinstance(text_features, torch.Tensor)
            image_logits = self._logits(image_features, text_features)
            out["image_logits"] = image_logits
            out["text_logits"] = image_logits.T
        if output_logit_scale_bias:
            out["logit_scale"] = self.exp_logit_scale()
            if self.logit_bias is not None:
                out["logit_bias"] = self.logit_bias
        return out

    # ----------------------------------------------------------------- LiT, memory (open_clip API)
    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze the image tower but its last ``unlocked_groups`` groups (LiT), of the six
        groups stem, stage1..stage4, head (``models/tower_lock.py`` says what each holds);
        ``freeze_bn_stats`` also keeps the frozen groups' BatchNorm statistics, in train mode
        too.

            >>> import lightclip
            >>> model = lightclip.create_model("clip-tiny-mnv2")
            >>> model.lock_image_tower(unlocked_groups=1)
            >>> [n for n, p in model.visual.named_parameters() if p.requires_grad]
            ['head.proj.weight']
        """
        self.visual.lock(unlocked_groups=unlocked_groups, freeze_bn_stats=freeze_bn_stats)

    def lock_text_tower(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the text tower but its last ``unlocked_layers`` groups, open_clip's groups:
        the embeddings, each block, the last block with ``ln_final``, ``text_projection``.
        ``freeze_layer_norm=False`` leaves the frozen groups' LayerNorms trainable.

            >>> import lightclip
            >>> model = lightclip.create_model("clip-tiny-mnv2")
            >>> model.lock_text_tower(unlocked_layers=1)
            >>> [n for n, p in model.text.named_parameters() if p.requires_grad]
            ['text_projection']
        """
        self.text.lock(unlocked_layers=unlocked_layers, freeze_layer_norm=freeze_layer_norm)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass instead of keeping them: per block in the
        text transformer, per stage in the image tower. Outputs and gradients are unchanged,
        and so are BatchNorm statistics (the recomputation does not update them).

            >>> import lightclip
            >>> model = lightclip.create_model("clip-tiny-mnv2")
            >>> model.set_grad_checkpointing(True)
        """
        self.visual.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        *,
        masked_text: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        other_text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None] | OpenClipOutput:
        """open_clip's forward: ``(image_features, text_features, logit_scale)`` (normalised
        features, a missing input's None, ``exp(logit_scale)``; ``logit_bias`` fourth where the
        model has one, as open_clip's SigLIP models), or with ``output_dict`` a dict.
        With both inputs and ``output_dict`` (as open_clip's trainer builds its models, and
        ours does), or with ``masked_text`` / ``mlm_labels`` / ``other_text``, that dict is the
        training forward
        (:meth:`forward_train`): open_clip's keys plus what the LightCLIP losses read.

            >>> import torch, lightclip
            >>> model = lightclip.create_model("clip-tiny-mnv2").eval()
            >>> image_features, text_features, logit_scale = model(torch.randn(2, 3, 64, 64), None)
            >>> tuple(image_features.shape), text_features
            ((2, 128), None)
            >>> text = lightclip.get_tokenizer("clip-tiny-mnv2")(["a dog", "a cat"])
            >>> [tuple(t.shape) for t in model(torch.randn(2, 3, 64, 64), text)[:2]]
            [(2, 128), (2, 128)]
        """
        training_inputs = any(t is not None for t in (masked_text, mlm_labels, other_text))
        if image is not None and text is not None and (self.output_dict or training_inputs):
            return self.forward_train(
                image, text, masked_text=masked_text, mlm_labels=mlm_labels, other_text=other_text
            )
        if training_inputs:
            raise InvalidInputError(
                "masked_text / mlm_labels / other_text belong to the training forward, which "
                "needs both image and text"
            )
        image_features = None if image is None else self.encode_image(image, normalize=True)
        text_features = None if text is None else self.encode_text(text, normalize=True)
        logit_scale = self.exp_logit_scale()
        if self.output_dict:
            out = {
                "image_features": image_features,
                "text_features": text_features,
                "logit_scale": logit_scale,
            }
            if self.logit_bias is not None:
                out["logit_bias"] = self.logit_bias
            return out
        if self.logit_bias is not None:
            return image_features, text_features, logit_scale, self.logit_bias
        return image_features, text_features, logit_scale

    def forward_train(
        self,
        images: torch.Tensor,
        text: torch.Tensor,
        *,
        masked_text: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        other_text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Everything the three LightCLIP losses need, from one image pass and up to four
        text passes (clean; masked; masked with image fusion; the other captions).

        Returns ``image_features``/``text_features`` [B, E] (L2-normalised), ``logit_scale``
        (exp'd), ``logit_bias`` (None without one), ``image_tokens`` [B, N_img, D] (stage-4
        locations, row-major) and
        ``word_tokens`` [B, C-2, D] (L2-normalised; word j is text position j+1, zero past the
        last EOT; None without the token head; D is E in the joint token space, ``d_tok``
        with ``token_space="heads"``),
        ``word_lengths`` [B] (tokens strictly between SOT and EOT), and ``mlm_logits_text`` /
        ``mlm_logits_fused``: [B, C, V] logits at every position, or, when ``mlm_labels``
        ([B, C], -100 = not masked) is given, [M, V] at the M masked positions only (the
        vocabulary projection skips every other position), with ``mlm_labels`` [M] the
        matching targets. The MLM entries are None without ``masked_text`` or with MLM off;
        ``mlm_logits_fused`` is None with fusion off. With ``distill_dim``,
        ``distill_image_features`` / ``distill_text_features`` [B, distill_dim]: the normalised
        features through ``distill_proj``, L2-normalised again (the feature distillation's
        input; absent otherwise). With ``other_text`` [B, M, C] (each image's M other captions,
        ``--captions-per-sample`` M + 1), ``other_text_features`` [B, M, E], L2-normalised.
        """
        self.check_images(images)
        if text.dim() != 2 or text.shape[0] != images.shape[0]:
            raise InvalidInputError(
                f"text: expected [{images.shape[0]}, context] ids to match images, "
                f"got {tuple(text.shape)}"
            )
        for arg, t in (("masked_text", masked_text), ("mlm_labels", mlm_labels)):
            if t is not None and t.shape != text.shape:
                raise InvalidInputError(
                    f"{arg}: shape {tuple(t.shape)} must equal text's {tuple(text.shape)}"
                )
        if other_text is not None and (
            other_text.dim() != 3 or (other_text.shape[0], other_text.shape[2]) != text.shape
        ):
            raise InvalidInputError(
                f"other_text: expected [{text.shape[0]}, M, {text.shape[1]}] ids, got "
                f"{tuple(other_text.shape)}"
            )
        # The forward's one wait for the device: the ids checked and the last EOT found, the
        # other captions' with the drawn ones'.
        batch = text.shape[0]
        probe = text if other_text is None else torch.cat([text, other_text.flatten(0, 1)])
        eot_all, last_eot = self.text.checked_eot(probe, masked_text)
        eot = eot_all[:batch]
        stages = self.visual.forward_stages(images)
        image_tokens: torch.Tensor | None = None  # in the joint space, un-normalised
        if self.config.token_head and self.config.token_space == "joint":
            image_features, image_tokens = self.visual.forward_head_and_tokens(stages[-1])
        else:
            image_features = self.visual.forward_head(stages[-1])
        context = text.shape[1]
        # The mask is causal, so nothing after the last EOT can change a word or an EOT state:
        # run the text passes on the columns up to it and pad the per-position outputs back.
        keep = last_eot + 1 if self.config.trim_padding else context
        text, masked_text, mlm_labels = (
            None if t is None else t[:, :keep] for t in (text, masked_text, mlm_labels)
        )
        states = self.text.forward_tokens(text, checked=True)
        text_features = self.text.pool(states, text, eot)
        out: dict[str, torch.Tensor | None] = {
            "image_features": F.normalize(image_features, dim=-1),
            "text_features": F.normalize(text_features, dim=-1),
            "logit_scale": self.exp_logit_scale(),
            "logit_bias": self.logit_bias,
            "image_tokens": None,
            "word_tokens": None,
            "word_lengths": eot - 1,
            "mlm_logits_text": None,
            "mlm_logits_fused": None,
            "mlm_labels": None,
        }
        if other_text is not None:
            others = other_text.flatten(0, 1)[:, :keep]
            pooled = self.text.pool(
                self.text.forward_tokens(others, checked=True), others, eot_all[batch:]
            )
            out["other_text_features"] = F.normalize(pooled, dim=-1).unflatten(
                0, other_text.shape[:2]
            )
        if self.distill_proj is not None:
            for key in ("image_features", "text_features"):
                out[f"distill_{key}"] = F.normalize(self.distill_proj(out[key]), dim=-1)
        words: torch.Tensor | None = None
        if image_tokens is not None:
            words = self.text.project_tokens(states[:, 1 : keep - 1])
        elif self.token_proj_image is not None and self.token_proj_text is not None:
            image_tokens = self.token_proj_image(stages[-1].flatten(2).transpose(1, 2))
            words = self.token_proj_text(states[:, 1 : keep - 1])
        if image_tokens is not None and words is not None:
            out["image_tokens"] = F.normalize(image_tokens, dim=-1)
            words = F.normalize(words, dim=-1)
            out["word_tokens"] = F.pad(words, (0, 0, 0, context - keep))
        if masked_text is not None and self.mlm_head is not None:
            out.update(self._mlm(stages, text, masked_text, mlm_labels))
            if mlm_labels is None and keep < context:
                for k in ("mlm_logits_text", "mlm_logits_fused"):
                    if out[k] is not None:
                        out[k] = F.pad(out[k], (0, 0, 0, context - keep))
        return out

    def _mlm(
        self,
        stages: list[torch.Tensor],
        text: torch.Tensor,
        masked_text: torch.Tensor,
        mlm_labels: torch.Tensor | None,
    ) -> dict[str, torch.Tensor | None]:
        assert self.mlm_head is not None
        select = None if mlm_labels is None else mlm_labels != -100

        def logits(states: torch.Tensor) -> torch.Tensor:
            return self.mlm_head(states if select is None else states[select])  # type: ignore[misc]

        x = self.text.embed(masked_text, "masked_text", checked=True)
        fused_states = None
        if self.fusion is None:
            masked_states = self.text.ln_final(self.text.run_stages(x))
        else:
            # Both passes agree up to the first fused stage: run that prefix once.
            first = min(self.fusion.stages)
            prefix: dict[str, torch.Tensor] = {}

            def keep_prefix(stage: int, h: torch.Tensor) -> torch.Tensor:
                if stage == first:
                    prefix["h"] = h
                return h

            masked_states = self.text.ln_final(self.text.run_stages(x, 1, keep_prefix))
            inject = self.fusion.hook(self.fusion.image_tokens(stages))
            h = inject(first, prefix["h"])
            fused_states = self.text.ln_final(self.text.run_stages(h, first + 1, inject))
        return {
            "mlm_logits_text": logits(masked_states),
            "mlm_logits_fused": None if fused_states is None else logits(fused_states),
            "mlm_labels": None if select is None else mlm_labels[select],  # type: ignore[index]
        }

    # ----------------------------------------------------------------- export
    def export(self) -> LightCLIP:
        """The inference model: the same towers and weights with every training-only module
        dropped (a plain ``clip-*`` model), in eval mode, on this model's device and dtype."""
        plain = LightCLIP(self.config.as_plain_clip(), output_dict=self.output_dict)
        keep = {
            k: v
            for k, v in self.state_dict().items()
            if k.split(".", 1)[0] not in TRAINING_ONLY_MODULES
        }
        plain.load_state_dict(keep, strict=True)
        ref = self.logit_scale
        return plain.to(device=ref.device, dtype=ref.dtype).eval()

    inference_model = export

    def num_parameters(self, part: str | None = None) -> int:
        """Parameter count of the whole model or of one attribute (``"visual"``, ``"text"``...)."""
        module = self if part is None else getattr(self, part)
        if module is None:
            return 0
        if isinstance(module, nn.Parameter):
            return module.numel()
        return sum(p.numel() for p in module.parameters())
