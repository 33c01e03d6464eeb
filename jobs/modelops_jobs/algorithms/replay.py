"""Compute-equivalent replay: a fixed share of every batch comes from the old data D0.

Continual pre-training forgets D0 unless some of it is replayed (arXiv:2403.08763).
Replay here is *compute-equivalent*: a batch keeps its size and sequence length, and
the D0 sequences take the place of D1 sequences, so a run with x% replay processes
exactly as many tokens as one without replay (it sees x% fewer D1 tokens). Replay rates
are only comparable at equal total tokens.

D0 is read in its original order: a cursor that goes on from batch to batch (and
wraps around at the end), never a fresh random sample, as in the paper. D1 windows are
read in a seeded shuffled order, one permutation per pass. The whole position is a
handful of integers (`state_dict`), so a resumed run draws the same batches.

The D0 share of a batch is round(ratio * batch_size). Where that product is not whole
(5% of 8 sequences), rounding each batch alone would replay nothing at all; this module
rounds the running total instead, so after k batches exactly round(k * ratio *
batch_size) sequences came from D0 and each batch takes the floor or the ceiling of
ratio * batch_size. When the product is whole, every batch takes exactly that many.
"""

import math
from dataclasses import dataclass

import torch


def replayed_so_far(batches: int, batch_size: int, ratio: float) -> int:
    """D0 sequences in the first `batches` batches: round(batches * ratio * batch_size)."""
    exact = round(batches * ratio * batch_size, 9)  # drop float noise such as 0.4 * 3
    return math.floor(exact + 0.5)


def replay_count(batch_index: int, batch_size: int, ratio: float) -> int:
    """D0 sequences in batch number `batch_index` (0-based)."""
    return replayed_so_far(batch_index + 1, batch_size, ratio) - replayed_so_far(
        batch_index, batch_size, ratio
    )


@dataclass
class MixedBatch:
    """One batch: D0 rows first, then D1 rows, all of the same length."""

    input_ids: torch.Tensor
    old_rows: int

    @property
    def tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def old_tokens(self) -> int:
        return self.old_rows * self.input_ids.shape[1]


class ReplayMixer:
    """Draws batches of `batch_size` windows, a `ratio` share of them from D0 in order."""

    def __init__(
        self,
        new_windows: torch.Tensor,
        old_windows: torch.Tensor | None,
        ratio: float,
        batch_size: int,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"replay ratio must be in [0, 1), got {ratio}")
        if ratio > 0 and (old_windows is None or len(old_windows) == 0):
            raise ValueError("a replay ratio above 0 needs old (D0) data")
        if len(new_windows) == 0:
            raise ValueError("no new (D1) windows")
        if old_windows is not None and old_windows.shape[1] != new_windows.shape[1]:
            raise ValueError("old and new windows must have the same length")
        self.new_windows = new_windows
        self.old_windows = old_windows
        self.ratio = ratio
        self.batch_size = batch_size
        self.seed = seed
        self.batches = 0
        self.old_cursor = 0
        self.new_cursor = 0
        self.new_epoch = 0
        self._order_epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    # -- reading ---------------------------------------------------------------
    def _new_order(self) -> torch.Tensor:
        if self._order_epoch != self.new_epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.new_epoch)
            self._order = torch.randperm(len(self.new_windows), generator=generator)
            self._order_epoch = self.new_epoch
        return self._order

    def _take_new(self, count: int) -> torch.Tensor:
        picked: list[torch.Tensor] = []
        while count > 0:
            order = self._new_order()
            take = min(count, len(order) - self.new_cursor)
            picked.append(order[self.new_cursor : self.new_cursor + take])
            self.new_cursor += take
            count -= take
            if self.new_cursor == len(order):
                self.new_cursor = 0
                self.new_epoch += 1
        if not picked:
            return self.new_windows[:0]
        return self.new_windows[torch.cat(picked)]

    def _take_old(self, count: int) -> torch.Tensor:
        if count == 0 or self.old_windows is None:  # the constructor rules out count > 0 here
            return self.new_windows[:0]
        n = len(self.old_windows)
        rows = [(self.old_cursor + i) % n for i in range(count)]
        self.old_cursor = (self.old_cursor + count) % n
        return self.old_windows[torch.tensor(rows, dtype=torch.long)]

    def next_batch(self) -> MixedBatch:
        """The next batch; D0 rows continue where the previous batch stopped."""
        old_rows = replay_count(self.batches, self.batch_size, self.ratio)
        old = self._take_old(old_rows)
        new = self._take_new(self.batch_size - old_rows)
        self.batches += 1
        return MixedBatch(input_ids=torch.cat([old, new]), old_rows=old_rows)

    # -- resuming --------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {
            "batches": self.batches,
            "old_cursor": self.old_cursor,
            "new_cursor": self.new_cursor,
            "new_epoch": self.new_epoch,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batches = int(state["batches"])
        self.old_cursor = int(state["old_cursor"])
        self.new_cursor = int(state["new_cursor"])
        self.new_epoch = int(state["new_epoch"])
