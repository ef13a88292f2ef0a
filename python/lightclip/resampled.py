"""Shards drawn with replacement (``lightclip train --dataset-resampled``, open_clip's
ResampledShards): the training data as a stream of shards picked at random, not passes.

Each draw picks as many shards as the source names, uniformly with replacement, seeded by
``(seed, epoch, draw)``; every rank makes the same draws and reads its share of them, so the
ranks see different shards. A draw is read by an ordinary :class:`~lightclip.data.DataPipeline`
over the drawn shard list (a shard drawn twice is read twice), and the next draw follows when
it runs out. An epoch is ``num_samples`` samples over all ranks; without it the stream does not
end (train with ``--steps``). The incomplete batch at the end of a draw is dropped, as at the
end of an epoch. Resume is exact: the position is (epoch, draw, position in the draw).

    >>> from lightclip.resampled import draw_shards
    >>> draw_shards(["a.tar", "b.tar", "c.tar"], seed=0, epoch=0, draw=0)
    ['c.tar', 'b.tar', 'b.tar']
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _core
from .data import DataPipeline, checked_epoch, saved_position
from .errors import DataError, InvalidInputError


def draw_shards(shards: list[str], *, seed: int, epoch: int, draw: int) -> list[str]:
    """``len(shards)`` shards drawn uniformly with replacement; the same on every rank."""
    rng = np.random.default_rng([seed, epoch, draw])
    return [shards[i] for i in rng.integers(0, len(shards), size=len(shards))]


def _inner_epoch(epoch: int, draw: int) -> int:
    # One distinct number per (epoch, draw) (Cantor pairing), so the pipeline's shuffle and
    # augmentation streams differ between draws as they do between epochs.
    return (epoch + draw) * (epoch + draw + 1) // 2 + draw


class ResampledShards:
    """DataPipeline's protocol (``set_epoch``, ``state_dict``, ``load_state_dict``, ``len``
    when ``num_samples`` is given) over shards drawn with replacement.

    ``source``: shard paths or brace patterns joined by ``::``; ``pipeline_kwargs`` are
    :class:`~lightclip.data.DataPipeline`'s (``batch_size``, ``seed``, ``rank``,
    ``world_size``, ``augmentation``, ``text``, ``reading`` ... ; ``batch_size`` is
    required), given to the pipeline of every draw.
    """

    def __init__(self, source: str, *, num_samples: int | None = None, **pipeline_kwargs: Any):
        self.shards = _core.shard_names(source)
        if num_samples is not None and num_samples < 1:
            raise InvalidInputError(f"invalid `num_samples`: must be at least 1, got {num_samples}")
        self.source, self.num_samples = source, num_samples
        self.seed = int(pipeline_kwargs.get("seed", 0))
        self.batch_size = int(pipeline_kwargs["batch_size"])
        self.world_size = int(pipeline_kwargs.get("world_size") or 1)
        self._kwargs = pipeline_kwargs
        self._epoch, self._draw, self._yielded = 0, 0, 0
        self._inner: dict[str, int] | None = None  # position in the current draw
        self._current: DataPipeline | None = None

    def __len__(self) -> int:
        """Batches per epoch on this rank (``num_samples`` over all ranks)."""
        if self.num_samples is None:
            raise TypeError("resampled shards without num_samples form an endless stream")
        return max(self.num_samples // (self.batch_size * self.world_size), 1)

    # ---------------------------------------------------------------- position
    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch, self._draw, self._yielded, self._inner = checked_epoch(epoch), 0, 0, None

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self._epoch,
            "draw": self._draw,
            "yielded": self._yielded,
            "inner": dict(self._inner) if self._inner is not None else None,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, draw, yielded = saved_position(
            state, ("epoch", "draw", "yielded"), self.world_size, "ResampledShards"
        )
        inner = state.get("inner")
        if inner is not None and not isinstance(inner, dict):
            raise InvalidInputError(f"state: not a ResampledShards state_dict (inner={inner!r})")
        self._epoch, self._draw, self._yielded = epoch, draw, yielded
        self._inner = dict(inner) if inner is not None else None

    # ---------------------------------------------------------------- iteration
    def _draw_pipeline(self) -> DataPipeline:
        drawn = draw_shards(self.shards, seed=self.seed, epoch=self._epoch, draw=self._draw)
        pipeline = DataPipeline("::".join(drawn), **self._kwargs)
        if self._inner is not None:
            pipeline.load_state_dict(self._inner)
        else:
            pipeline.set_epoch(_inner_epoch(self._epoch, self._draw))
        return pipeline

    def __iter__(self) -> Iterator[dict[str, Any]]:
        limit = len(self) if self.num_samples is not None else None
        while limit is None or self._yielded < limit:
            fresh = self._inner is None
            self._current = pipeline = self._draw_pipeline()
            batches = iter(pipeline)
            try:
                got = 0
                for batch in batches:
                    got += 1
                    self._yielded += 1
                    self._inner = pipeline.state_dict()
                    yield batch
                    if limit is not None and self._yielded >= limit:
                        break
                else:
                    if fresh and got == 0:
                        raise DataError(
                            f"--dataset-resampled {self.source}: draw {self._draw} of epoch "
                            f"{self._epoch} yielded no batch of {self.batch_size} (stats "
                            f"{pipeline.stats()})"
                        )
                    self._draw, self._inner = self._draw + 1, None
            finally:
                batches.close()  # type: ignore[attr-defined]
                pipeline.close()  # each draw reads its shards once: no read-ahead
        self.set_epoch(self._epoch + 1)

    def stats(self) -> dict[str, Any]:
        """The current draw's pipeline counters (see :meth:`DataPipeline.stats`)."""
        return self._current.stats() if self._current is not None else {}

    @property
    def class_names(self) -> list[str] | None:
        return None


__all__ = ["ResampledShards", "draw_shards"]
