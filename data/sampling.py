"""Length-grouped training batches: little padding, yet neighbouring steps as unrelated as plain shuffling."""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffle all indices, cut them into pools of `pool_batches` batches, sort each pool by length, split it into
    batches, then shuffle the batches of the whole epoch.

    transformers' LengthGroupedSampler stops before the last step: each pool's batches come out consecutively, long
    to short, so fifty neighbouring steps share a length (and CoLA's label mix varies with length). The order is a
    pure function of (seed, epoch), so a resumed run can rebuild it.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = 50,
                 num_processes: int = 1) -> None:
        """With `num_processes` > 1 the number of batches is made a multiple of it by halving the largest batches,
        so that Accelerate, which deals whole batches round-robin to the processes, never pads the epoch with
        repeated samples: every sample is trained exactly once per epoch."""
        self.lengths = torch.as_tensor(list(lengths))
        # Not named `batch_size`: Accelerate's BatchSamplerShard reads that attribute and then treats every batch
        # of another size as incomplete, refilling it with samples from the start of the epoch.
        self.max_batch_size, self.seed, self.pool_batches = batch_size, seed, pool_batches
        self.num_processes = num_processes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = (len(self.lengths) + self.max_batch_size - 1) // self.max_batch_size
        return n + (-n) % self.num_processes

    def batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        pool = self.max_batch_size * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            size = self.max_batch_size
            batches.extend(chunk[i:i + size].tolist() for i in range(0, len(chunk), size))
        for _ in range((-len(batches)) % self.num_processes):
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            batch = batches.pop(largest)
            batches[largest:largest] = [batch[: len(batch) // 2], batch[len(batch) // 2:]]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1  # a new order each pass unless set_epoch says otherwise
        yield from self.batches(epoch)
