"""A stand-in data pipeline for the training-loop tests (imported by tests/test_train_*.py).

Sample i of epoch e is a pure function of (seed, epoch, i), and rank r of a W-rank job gets
the r-th slice of every global batch, so a 1-rank run with batch W*b sees exactly the samples
a W-rank run with batch b sees, step by step. It has DataPipeline's resume protocol
(set_epoch / state_dict / load_state_dict / __len__), which lets the loop's own resume logic
be tested apart from the Rust pipeline's.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

SOT, EOT, MASK = 49406, 49407, 49408


class FakePipeline:
    def __init__(
        self,
        num_samples: int = 32,
        batch_size: int = 8,
        image_size: int = 64,
        context_length: int = 32,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.b, self.size, self.ctx, self.seed = (
            num_samples,
            batch_size,
            image_size,
            context_length,
            seed,
        )
        self.rank, self.world = rank, world_size
        self.epoch, self.position = 0, 0
        self.batches_served = 0

    def __len__(self) -> int:
        return self.n // (self.b * self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]

    def _sample(self, index: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7_919 + index)
        image = torch.randn(3, self.size, self.size, generator=g)
        words = int(torch.randint(3, self.ctx - 2, (1,), generator=g))
        text = torch.zeros(self.ctx, dtype=torch.long)
        text[0], text[words + 1] = SOT, EOT
        text[1 : words + 1] = torch.randint(1, 1000, (words,), generator=g)
        chosen = torch.rand(words, generator=g) < 0.3
        chosen[0] = True
        positions = torch.arange(1, words + 1)[chosen]
        labels = torch.full((self.ctx,), -100, dtype=torch.long)
        labels[positions] = text[positions]
        masked = text.clone()
        masked[positions] = MASK
        return image, text, masked, labels, torch.tensor(words)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while self.position < len(self):
            start = (self.position * self.world + self.rank) * self.b
            columns = zip(*(self._sample(start + j) for j in range(self.b)), strict=True)
            image, text, masked, labels, lengths = (torch.stack(c) for c in columns)
            self.position += 1
            self.batches_served += 1
            yield {
                "image": image,
                "text": text,
                "masked_text": masked,
                "mlm_labels": labels,
                "word_lengths": lengths,
            }
