"""Torch CPU threads for a block of small work.

Our hot loops on CPU (rendering and collecting frames, a planner's decision, a world-model step
on cached latents) are small ops; a second thread only adds overhead, and beside another busy
process torch's spinning threads make them 30-50x slower. They run inside `torch_threads(1)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch CPU threads (None: leave them), then restore the count."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
