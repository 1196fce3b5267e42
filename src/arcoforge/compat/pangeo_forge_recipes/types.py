"""pangeo-forge-recipes 0.10's ``types`` module: how a file is located in a pattern.

* :class:`CombineOp` -- the kind of combination (merge, concat, subset).
* :class:`Dimension` -- a named combine dimension and its operation.
* :class:`Position` -- a place along a dimension: an item number in a sequence, or (as
  :class:`IndexedPosition`) an offset into the combined dataset with its total size.
* :class:`Index` -- a ``dict`` of :class:`Dimension` -> :class:`Position`, hashable, so that it
  can key a Beam-style collection; ``Indexed`` is the ``(Index, value)`` pair type.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from arcoforge.errors import ConfigError

__all__ = ["CombineOp", "Dimension", "Position", "IndexedPosition", "Index", "Indexed", "T"]


class CombineOp(Enum):
    """How the items along a dimension are combined (values as in pangeo-forge-recipes)."""

    MERGE = 1
    CONCAT = 2
    SUBSET = 3


@dataclass(frozen=True, order=True)
class Dimension:
    """A combine dimension: its ``name`` and the :class:`CombineOp` applied along it."""

    name: str
    operation: CombineOp


@dataclass(frozen=True, order=True)
class Position:
    """A place along a dimension.  ``indexed=False``: ``value`` numbers an item of a sequence
    (the n-th file); ``indexed=True``: ``value`` is an offset into the combined dataset."""

    value: int
    indexed: bool = False


@dataclass(frozen=True, order=True)
class IndexedPosition(Position):
    """An offset (``value``) into a combined dimension of ``dimsize`` items."""

    indexed: bool = True
    dimsize: int = 0


class Index(dict[Dimension, Position]):
    """Where one item sits in a multidimensional set: ``{Dimension: Position}``.

    Unlike a plain ``dict`` it is hashable and pickles to a sorted, deterministic state.
    """

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.__getstate__()))

    def __getstate__(self) -> list[tuple[Dimension, Position]]:
        return sorted(self.items())

    def __setstate__(self, state: list[tuple[Dimension, Position]]) -> None:
        self.clear()
        self.update(dict(state))

    def find_concat_dim(self, dim_name: str) -> Dimension | None:
        """The concat :class:`Dimension` called ``dim_name``, or None when there is none."""
        found = [d for d in self if d.name == dim_name and d.operation == CombineOp.CONCAT]
        if len(found) > 1:
            raise ConfigError(f"the index {self} has {len(found)} concat dimensions named "
                              f"{dim_name!r}; a pattern's dimension names must be unique")
        return found[0] if found else None

    def find_position(self, dim_name: str) -> int:
        """The position (``value``) along the concat dimension ``dim_name``."""
        dim = self.find_concat_dim(dim_name)
        if dim is None:
            names = sorted(d.name for d in self)
            raise ConfigError(f"the index has no concat dimension named {dim_name!r} "
                              f"(its dimensions: {names})")
        return self[dim].value


T = TypeVar("T")

#: an item of a Beam-style collection: ``(Index, value)``; generic, as in pangeo-forge-recipes
#: (``Indexed[xr.Dataset]`` annotates recipe functions)
Indexed = tuple[Index, T]
