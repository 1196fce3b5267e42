"""pangeo-forge-recipes 0.9's ``HDFReferenceRecipe``, as an :class:`arcoforge.VirtualRecipe`.

``HDFReferenceRecipe(pattern, ...)`` takes the 0.9 arguments and is an arcoforge
:class:`~arcoforge.forge.virtual.recipe.VirtualRecipe`: ``arcoforge.bake(recipe,
"icechunk://repo")`` references the files' chunks in an Icechunk repository (virtual chunk
containers), and :func:`arcoforge.forge.virtual.write_kerchunk` writes the kerchunk JSON that
0.9 wrote (``output_json_fname``) for older readers.

How the 0.9 options map onto arcoforge:

* ``file_pattern`` -> ``pattern`` (:meth:`FilePattern.to_arcoforge`); ``netcdf_storage_options``
  -> ``SourceOptions.storage_options`` (e.g. ``{"anon": True}``; secrets only from the env).
* ``concat_dims`` and ``identical_dims``: the pattern's concat dimension, and the variables
  without it, which arcoforge stores inline; ``inline_threshold``: arcoforge inlines the
  coordinate-like variables and what the parser cannot map, whatever their size.
* Refused with a :class:`~arcoforge.errors.ConfigError`: ``preprocess``/``postprocess`` (they
  would change values a reference cannot change; use ``af.ZarrRecipe`` with transforms) and
  ``coo_map``/``coo_dtypes`` (coordinates are taken from the files, as they are).
* ``target_options``, ``output_storage_options``, ``output_intake_yaml_fname``,
  ``storage_config`` are kept for the record (the target is given to ``bake``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arcoforge.errors import ConfigError
from arcoforge.forge.io.options import SourceOptions
from arcoforge.forge.patterns import FilePattern as AfPattern
from arcoforge.forge.virtual.recipe import VirtualRecipe

from ..patterns import FilePattern
from .base import BaseRecipe

__all__ = ["HDFReferenceRecipe"]


@dataclass(init=False)
class HDFReferenceRecipe(VirtualRecipe, BaseRecipe):
    """pangeo-forge-recipes 0.9's reference recipe, baked as a virtual dataset."""

    def __init__(
        self,
        file_pattern: FilePattern | AfPattern,
        output_json_fname: str = "reference.json",
        output_intake_yaml_fname: str = "reference.yaml",
        netcdf_storage_options: dict[str, Any] | None = None,
        target_options: dict[str, Any] | None = None,
        inline_threshold: int = 500,
        output_storage_options: dict[str, Any] | None = None,
        concat_dims: list[str] | None = None,
        identical_dims: list[str] | None = None,
        coo_map: dict[str, Any] | None = None,
        coo_dtypes: dict[str, Any] | None = None,
        preprocess: Callable[..., Any] | None = None,
        postprocess: Callable[..., Any] | None = None,
        storage_config: Any = None,
        *,
        source_options: SourceOptions | None = None,
    ) -> None:
        if not isinstance(file_pattern, FilePattern | AfPattern):
            raise ConfigError(f"HDFReferenceRecipe: file_pattern must be a FilePattern, got "
                              f"{type(file_pattern).__name__}")
        if preprocess is not None or postprocess is not None:
            which = "preprocess" if preprocess is not None else "postprocess"
            raise ConfigError(
                f"HDFReferenceRecipe({which}=...) is not supported: references point at the "
                "files' bytes as they are. Materialize instead: arcoforge.ZarrRecipe(pattern, "
                "transforms=[...])")
        if coo_map or coo_dtypes:
            raise ConfigError(
                "HDFReferenceRecipe(coo_map=/coo_dtypes=) is not supported: arcoforge takes the "
                "coordinates from the files as they are (and refuses files whose coordinates or "
                "time units disagree). Materialize instead: arcoforge.ZarrRecipe(pattern)")
        options = source_options or SourceOptions()
        if isinstance(file_pattern, FilePattern):
            pangeo = file_pattern
            extra = {**(pangeo.fsspec_open_kwargs or {}), **dict(netcdf_storage_options or {})}
            if pangeo.fsspec_open_kwargs:
                pangeo.check_arcoforge()  # refuses secrets before they reach the options
            af_pattern = pangeo.to_arcoforge()
        else:
            af_pattern = file_pattern
            extra = dict(netcdf_storage_options or {})
        if extra:
            options = dataclasses.replace(
                options, storage_options={**options.storage_options, **extra})
        concat = af_pattern.concat_dim
        if concat_dims and (concat is None or list(concat_dims) != [concat.name]):
            raise ConfigError(f"HDFReferenceRecipe: concat_dims={concat_dims!r} must name the "
                              f"pattern's concat dimension "
                              f"({concat.name if concat is not None else 'none'})")
        super().__init__(pattern=af_pattern, source_options=options)
        self.file_pattern = file_pattern
        self.output_json_fname = output_json_fname
        self.output_intake_yaml_fname = output_intake_yaml_fname
        self.netcdf_storage_options = dict(netcdf_storage_options or {})
        self.target_options = dict(target_options or {})
        self.inline_threshold = inline_threshold
        self.output_storage_options = dict(output_storage_options or {})
        self.concat_dims = list(concat_dims or ([concat.name] if concat else []))
        self.identical_dims = list(identical_dims or [])
        self.coo_map = dict(coo_map or {})
        self.coo_dtypes = dict(coo_dtypes or {})
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.storage_config = storage_config

    def copy_pruned(self, nkeep: int = 2) -> HDFReferenceRecipe:
        """A copy that references the first ``nkeep`` files of the concat dimension."""
        clone = copy.copy(self)
        clone.pattern = self.pattern.prune(nkeep)
        prune = getattr(self.file_pattern, "prune", None)
        clone.file_pattern = prune(nkeep) if prune is not None else clone.pattern
        return clone
