"""The main job, as far as the package goes today: learn a token-level alignment end to end.

Image-patch tokens and word tokens are drawn so that each word secretly belongs to one patch
(plus noise), then a projection of the words is learned so that every word's cosine
similarity with its own patch (computed by the Rust core through libtorch, with autograd)
beats its similarity with the other patches. It prints the loss and the accuracy of "which
patch does each word point at", which starts at chance and must end near 1.
"""

from __future__ import annotations

import time

import torch

from ._core import token_similarity


def run_demo(seed: int = 0, steps: int = 200, batch: int = 32, patches: int = 49,
             words: int = 12, dim: int = 64) -> float:
    gen = torch.Generator().manual_seed(seed)
    image_tokens = torch.randn(batch, patches, dim, generator=gen)
    owner = torch.randint(0, patches, (batch, words), generator=gen)
    hidden_map = torch.randn(dim, dim, generator=gen) / dim**0.5
    own_patch = torch.gather(image_tokens, 1, owner[..., None].expand(-1, -1, dim))
    word_tokens = own_patch @ hidden_map + 0.1 * torch.randn(batch, words, dim, generator=gen)

    projection = torch.nn.Linear(dim, dim)
    optimiser = torch.optim.Adam(projection.parameters(), lr=1e-2)
    start = time.perf_counter()
    for step in range(steps + 1):
        sim = token_similarity(projection(word_tokens), image_tokens)  # [B, words, patches]
        loss = torch.nn.functional.cross_entropy(sim.flatten(0, 1) / 0.05, owner.flatten())
        accuracy = (sim.argmax(-1) == owner).float().mean().item()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}  word->patch accuracy {accuracy:.3f}")
        if step < steps:
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    print(f"chance {1 / patches:.3f}; {steps} steps in {time.perf_counter() - start:.1f}s")
    return accuracy
