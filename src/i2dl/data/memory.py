"""Batches sliced from tensors held in memory: the fast path for MNIST-scale data on a CPU.

Per-sample `Dataset.__getitem__` + collate costs more than a small model's forward pass at this scale, so the
whole set stays one uint8 tensor and each batch is one indexing operation. The loader is stateful
(`state_dict`/`load_state_dict`), so a run resumed from a mid-epoch checkpoint continues with the same
shuffled order, and each batch's augmentation is seeded by (seed, epoch, batch): same seed, same batches.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class InMemoryBatches:
    """Iterates `(images float [0, 1] (B, 1, H, W), labels)` batches from uint8 `images` (N, H, W)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        transform: Transform | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.transform, self.rank, self.world_size = transform, rank, world_size
        self.epoch = 0  # the epoch the next `iter()` starts
        self._start = 0  # batch to start from (non-zero only right after a mid-epoch restore)
        self._yielded = 0

    def _per_rank(self) -> int:
        n = len(self.images)
        return n // self.world_size if self.world_size > 1 else n

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for `epoch` (every rank draws the same permutation, then takes its share)."""
        n = len(self.images)
        if self.shuffle:
            index = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        else:
            index = torch.arange(n)
        if self.world_size > 1:
            index = index[: self._per_rank() * self.world_size][self.rank :: self.world_size]
        return index

    def __iter__(self) -> Iterator:
        epoch, start = self.epoch, self._start
        self.epoch, self._start = epoch + 1, 0
        index = self.order(epoch)
        for b in range(start, len(self)):
            self._yielded = b + 1
            idx = index[b * self.batch_size : (b + 1) * self.batch_size]
            generator = None
            if self.transform is not None:
                generator = torch.Generator().manual_seed(hash((self.seed, epoch, b)) & 0x7FFF_FFFF)
            yield self.make_batch(self.images[idx].unsqueeze(1).float().div_(255.0), self.labels[idx], generator)

    def make_batch(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None):
        """One batch from images in [0, 1] and their labels; `generator` seeds this batch's augmentation."""
        return (x if generator is None else self.transform(x, generator)), labels

    def state_dict(self) -> dict:
        return {"epoch": self.epoch - 1, "yielded": self._yielded, "batches": len(self)}

    def load_state_dict(self, state: dict) -> None:
        # Lightning does not prefetch from a loader that has a length, so `yielded` batches were trained on
        if state["yielded"] >= state["batches"]:  # saved at an epoch's end: the next epoch starts fresh
            self.epoch, self._start = state["epoch"] + 1, 0
        else:
            self.epoch, self._start = state["epoch"], state["yielded"]


class InMemoryEvalLoaders:
    """LightningDataModule mix-in: validation and test loaders over the `(images, labels)` it holds in `self.val`
    and `self.test`, `hparams.eval_batch_size` a batch, each process reading its share."""

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _eval_loader(self, data) -> InMemoryBatches:
        rank, world = self._rank()
        return InMemoryBatches(*data, batch_size=self.hparams.eval_batch_size, rank=rank, world_size=world)

    def val_dataloader(self) -> InMemoryBatches:
        return self._eval_loader(self.val)

    def test_dataloader(self) -> InMemoryBatches:
        return self._eval_loader(self.test)
