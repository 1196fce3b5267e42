"""Per-epoch sample orders: sequential, random, chunk-aware shuffle, weighted; with sharding.

An :class:`EpochPlan` is a list of *groups*. A group names the storage blocks it needs and the
order in which their samples are handed out; the reader loads a group's blocks once and cuts
all its samples. Every order is a pure function of ``(seed, epoch)`` and of the shard, so all
DataLoader workers and distributed ranks compute the same global plan and keep their part:
together they visit every sample exactly once per epoch.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from arcoforge.errors import ConfigError

from .indexing import SampleGrid

__all__ = ["EpochPlan", "Group", "Shard", "make_plan", "current_shard"]

Mode = Literal["sequential", "random", "chunk_shuffle"]
#: how shards are made equal: ``"pad"`` repeats samples of the shard's own order, ``"drop"``
#: leaves out the last ones, so every shard hands out the same number of samples
Balance = Literal["pad", "drop"]


@dataclass(frozen=True)
class Shard:
    """This process's slice of the work: shard ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ConfigError(f"shard index {self.index} not in [0, {self.count})")


def current_shard(world_size: int | None = None, rank: int | None = None) -> Shard:
    """Shard of the calling process: torch.distributed rank × DataLoader worker.

    ``world_size``/``rank`` override what ``torch.distributed`` reports. Without torch, or
    outside a DataLoader worker, that part of the shard is (0 of 1).
    """
    workers, worker = 1, 0
    # only consult torch if it is already loaded: a DataLoader worker or an initialized
    # process group implies it is, and importing torch here (amid reader threads) is costly
    torch = sys.modules.get("torch")
    if torch is not None:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            workers, worker = int(info.num_workers), int(info.id)
        if world_size is None or rank is None:
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized():
                world_size, rank = dist.get_world_size(), dist.get_rank()
    world_size = 1 if world_size is None else int(world_size)
    rank = 0 if rank is None else int(rank)
    return Shard(rank * workers + worker, world_size * workers)


@dataclass(frozen=True)
class Group:
    """Blocks to load together and the sample order within them."""

    blocks: tuple[int, ...]
    samples: np.ndarray  # sample ids, in hand-out order


@dataclass(frozen=True)
class EpochPlan:
    """All groups of one shard for one epoch."""

    groups: tuple[Group, ...]

    @property
    def n_samples(self) -> int:
        """Samples this shard hands out this epoch."""
        return int(sum(g.samples.size for g in self.groups))

    def sample_ids(self) -> np.ndarray:
        """Concatenated sample order."""
        if not self.groups:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([g.samples for g in self.groups])

    def head(self, n: int) -> EpochPlan:
        """The first ``n`` samples of this plan."""
        return self._cut(0, int(n))

    def skip(self, n: int) -> EpochPlan:
        """This plan without its first ``n`` samples (to resume mid-epoch)."""
        return self._cut(int(n), None)

    def _cut(self, start: int, stop: int | None) -> EpochPlan:
        groups = []
        pos = 0
        for g in self.groups:
            lo, hi = pos, pos + g.samples.size
            pos = hi
            a = max(start, lo)
            b = hi if stop is None else min(stop, hi)
            if b <= a:
                continue
            samples = g.samples if (a, b) == (lo, hi) else g.samples[a - lo:b - lo]
            groups.append(Group(g.blocks, samples))
        return EpochPlan(tuple(groups))

    def padded(self, n: int, grid: SampleGrid, fallback: np.ndarray) -> EpochPlan:
        """This plan followed by its own samples again (cyclically) up to ``n`` samples;
        ``fallback`` (the global order) supplies them if this plan is empty."""
        deficit = int(n) - self.n_samples
        if deficit <= 0:
            return self
        own = self.sample_ids()
        extra = np.resize(own if own.size else fallback, deficit).astype(np.int64)
        blocks = tuple(np.unique(grid.block_of(extra)).tolist())
        return EpochPlan((*self.groups, Group(blocks, extra)))


def _warn_dropped(sizes: Sequence[int]) -> None:
    """``balance="drop"`` cuts every shard to the smallest: say so when that leaves out more
    than a tenth of the epoch (shards own whole blocks, so few or uneven blocks can leave out
    most of it, or all of it when a shard owns no block)."""
    total, kept = sum(sizes), min(sizes) * len(sizes)
    if total and total - kept > total / 10:
        warnings.warn(
            f"balance='drop' hands out {kept} of the epoch's {total} samples ({min(sizes)} per "
            f"shard; shards own {min(sizes)}..{max(sizes)}): {total - kept} are left out. Use "
            "balance='pad', fewer workers or ranks, or smaller storage chunks (more blocks).",
            UserWarning, stacklevel=3)


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF])


def make_plan(
    grid: SampleGrid,
    mode: Mode = "sequential",
    *,
    seed: int = 0,
    epoch: int = 0,
    shard: Shard | None = None,
    buffer_blocks: int = 4,
    batch_size: int = 32,
    weights: np.ndarray | None = None,
    num_samples: int | None = None,
    balance: Balance | None = None,
) -> EpochPlan:
    """Plan one epoch.

    * ``sequential`` — blocks in storage order, samples in order inside each block.
    * ``chunk_shuffle`` — blocks permuted per (seed, epoch); samples shuffled inside a buffer of
      ``buffer_blocks`` consecutive blocks, so reading stays chunk-sequential.
    * ``random`` — a global permutation (each group is one batch; reads are random).
    * ``weights`` (per sample, any mode but ``sequential``) — draw ``num_samples`` samples with
      replacement proportional to ``weights``, then read them chunk-aware as in ``chunk_shuffle``.

    Sharding splits whole blocks (or, in ``random`` mode, samples) round-robin after the global
    order is fixed, so shards never overlap and together cover every sample once.

    Shards then differ in size (by whole blocks). ``balance`` makes them equal, as distributed
    data parallel training needs (every rank must run the same number of steps): ``"pad"``
    tops every shard up to the largest by repeating its own first samples (each sample is seen
    at least once), ``"drop"`` cuts every shard to the smallest (each at most once).
    """
    shard = shard or Shard()
    if balance is not None:
        if balance not in ("pad", "drop"):
            raise ConfigError(f"unknown balance {balance!r}; use 'pad', 'drop' or None")
        kw = dict(mode=mode, seed=seed, epoch=epoch, buffer_blocks=buffer_blocks,
                  batch_size=batch_size, weights=weights, num_samples=num_samples)
        sizes = [make_plan(grid, shard=Shard(i, shard.count), **kw).n_samples  # type: ignore[arg-type]
                 for i in range(shard.count)]
        own = make_plan(grid, shard=shard, **kw)  # type: ignore[arg-type]
        if balance == "drop":
            _warn_dropped(sizes)
            return own.head(min(sizes))
        fallback = make_plan(grid, shard=Shard(), **kw).sample_ids()  # type: ignore[arg-type]
        return own.padded(max(sizes), grid, fallback)
    blocks = grid.blocks_with_samples()
    if weights is not None:
        return _weighted_plan(grid, blocks, weights, num_samples, seed, epoch, shard,
                              buffer_blocks)
    if mode == "sequential":
        mine = blocks[shard.index :: shard.count]
        return EpochPlan(tuple(Group((b,), ids) for b, ids in mine))
    rng = _rng(seed, epoch)
    if mode == "chunk_shuffle":
        perm = rng.permutation(len(blocks))
        mine = [blocks[i] for i in perm][shard.index :: shard.count]
        groups = []
        for start in range(0, len(mine), max(1, buffer_blocks)):
            chunk = mine[start : start + max(1, buffer_blocks)]
            ids = np.concatenate([ids for _, ids in chunk])
            groups.append(Group(tuple(b for b, _ in chunk), rng.permutation(ids)))
        return EpochPlan(tuple(groups))
    if mode == "random":
        ids = rng.permutation(grid.valid_ids())[shard.index :: shard.count]
        groups = []
        for start in range(0, ids.size, batch_size):
            part = ids[start : start + batch_size]
            groups.append(Group(tuple(np.unique(grid.block_of(part)).tolist()), part))
        return EpochPlan(tuple(groups))
    raise ConfigError(f"unknown sampling mode {mode!r}; use sequential, random or chunk_shuffle")


def _weighted_plan(
    grid: SampleGrid,
    blocks: list[tuple[int, np.ndarray]],
    weights: np.ndarray,
    num_samples: int | None,
    seed: int,
    epoch: int,
    shard: Shard,
    buffer_blocks: int,
) -> EpochPlan:
    rng = _rng(seed, epoch)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (grid.n_samples,):
        raise ConfigError(f"weights must have one entry per sample ({grid.n_samples})")
    if grid.valid is not None:
        w = np.where(grid.valid, w, 0.0)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError("weights must be finite, non-negative and not all zero")
    n = int(num_samples) if num_samples is not None else int(np.count_nonzero(w))
    draws = rng.choice(grid.n_samples, size=n, replace=True, p=w / w.sum())
    block = grid.block_of(draws)
    order = np.argsort(block, kind="stable")
    draws, block = draws[order], block[order]
    uniq, first = np.unique(block, return_index=True)
    per_block = np.split(draws, first[1:])
    perm = rng.permutation(len(uniq))
    mine = [(int(uniq[i]), per_block[i]) for i in perm][shard.index :: shard.count]
    groups = []
    step = max(1, buffer_blocks)
    for start in range(0, len(mine), step):
        chunk = mine[start : start + step]
        ids = np.concatenate([ids for _, ids in chunk])
        groups.append(Group(tuple(b for b, _ in chunk), rng.permutation(ids)))
    return EpochPlan(tuple(groups))


WeightFn = Callable[[dict[str, np.ndarray]], np.ndarray]
