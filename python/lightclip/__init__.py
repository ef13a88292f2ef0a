"""lightclip: train lightweight CLIP models with the LightCLIP recipe, on a Rust core.

>>> import lightclip, torch
>>> rows, cols = lightclip.match_tokens(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))  # Hungarian
>>> rows.tolist(), cols.tolist()
([[0, 1]], [[0, 1]])
"""

# torch first: the extension links libtorch, and importing torch is what loads it into the
# process (an installed wheel also finds it through its rpath).
import torch  # noqa: F401  (imported for its side effect)

from . import _core
from ._core import get_num_threads, match_tokens, set_num_threads
from .config import TrainConfig
from .data import (
    AugmentationConfig,
    DataPipeline,
    PipelineDataset,
    ReadingConfig,
    TextConfig,
    augmentation_defaults,
)
from .errors import DataError, InvalidDtypeError, InvalidInputError, LightclipError
from .evaluate import evaluate_retrieval, evaluate_zero_shot
from .labels import LabelSchedule, soft_labels
from .models import (
    LightCLIP,
    add_model_config,
    create_model,
    create_model_and_transforms,
    create_model_from_pretrained,
    list_models,
)
from .pretrained import LoadReport, list_pretrained, load_pretrained, register_pretrained
from .tokenizer import EOT_TOKEN, MASK_TOKEN, SOT_TOKEN, get_tokenizer, tokenize
from .train import TrainResult, train

__version__: str = _core.__version__

__all__ = [
    "__version__",
    "DataError",
    "InvalidDtypeError",
    "InvalidInputError",
    "LightclipError",
    "evaluate_retrieval",
    "evaluate_zero_shot",
    "DataPipeline",
    "PipelineDataset",
    "AugmentationConfig",
    "TextConfig",
    "ReadingConfig",
    "augmentation_defaults",
    "LabelSchedule",
    "soft_labels",
    "TrainConfig",
    "TrainResult",
    "train",
    "LightCLIP",
    "create_model",
    "create_model_and_transforms",
    "list_models",
    "get_num_threads",
    "match_tokens",
    "set_num_threads",
    "EOT_TOKEN",
    "MASK_TOKEN",
    "SOT_TOKEN",
    "get_tokenizer",
    "tokenize",
    "add_model_config",
    "create_model_from_pretrained",
    "list_pretrained",
    "load_pretrained",
    "register_pretrained",
    "LoadReport",
]
