"""What every pangeo-forge-recipes 0.9 recipe class shares: ``copy_pruned`` and the executor
methods (which arcoforge replaces with ``arcoforge bake``)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, NoReturn

from arcoforge.errors import ConfigError

__all__ = ["BaseRecipe", "setup_logging"]


class BaseRecipe:
    """Mixin of the 0.9 recipe classes.

    ``arcoforge_unsupported`` is None for a recipe arcoforge bakes, else the reason it cannot
    (arcoforge's loaders list such a recipe, and lint and bake report the reason).
    """

    arcoforge_unsupported: ClassVar[str | None] = None

    def copy_pruned(self, nkeep: int = 2) -> Any:
        """A copy of this recipe whose pattern keeps the first ``nkeep`` keys of each concat
        dimension (every merge key)."""
        raise NotImplementedError  # each recipe class implements it

    def _no_executor(self, name: str) -> NoReturn:
        raise ConfigError(
            f"{type(self).__name__}.{name}() is not available in arcoforge: recipes are "
            "compiled and run by arcoforge itself. Run `arcoforge bake recipe.py --target "
            "STORE [--engine local|dask|beam]` or call arcoforge.bake(recipe, STORE)")

    def to_function(self) -> NoReturn:
        """Not available: bake with :func:`arcoforge.bake` (the message says how)."""
        self._no_executor("to_function")

    def to_generator(self) -> NoReturn:
        """Not available: bake with :func:`arcoforge.bake` (the message says how)."""
        self._no_executor("to_generator")

    def to_dask(self) -> NoReturn:
        """Not available: bake with ``engine="dask"`` (the message says how)."""
        self._no_executor("to_dask")

    def to_prefect(self, wrap_dask: bool = False) -> NoReturn:
        """Not available: bake with :func:`arcoforge.bake` (the message says how)."""
        self._no_executor("to_prefect")

    def to_beam(self) -> NoReturn:
        """Not available: bake with ``engine="beam"`` (the message says how)."""
        self._no_executor("to_beam")


def setup_logging(level: str = "INFO") -> None:
    """Show arcoforge's log messages at ``level`` (``"DEBUG"``, ``"INFO"`` or ``"WARNING"``)
    on standard output, for interactive recipe development."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"unknown log level {level!r}; use 'DEBUG', 'INFO' or 'WARNING'")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s - %(levelname)s - %(message)s"))
    for name in ("arcoforge", "pangeo_forge_recipes"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(numeric)
        logger.addHandler(handler)
