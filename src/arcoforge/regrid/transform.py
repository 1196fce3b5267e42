"""The recipe step: :class:`Regrid` resamples every source granule onto one area.

>>> area = {"crs": "EPSG:4326", "extent": [-180, -90, 180, 90], "resolution": 0.5}
>>> recipe = af.ZarrRecipe(pattern, transforms=[Regrid(area, method="nearest",
...                                                    radius_of_influence=30_000),
...                                             af.transforms.ExpandDimFromKey("time")])

Many orbits become one ``(time, y, x)`` cube; each granule's ``coverage`` mask records which
cells it reached.  The step works on every engine (it is a plain dataclass, picklable) and
with append (tomorrow's orbits are regridded the same way: the area and parameters are part
of the recipe hash).  Neighbour information is cached per process, so a repeat orbit (same
geolocation) reuses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import xarray as xr

from ..errors import ConfigError
from ..forge.patterns import Index
from ..forge.transforms import Transform
from .accessor import resample
from .areas import describe_area, resolve_area
from .engines import METHODS

__all__ = ["Regrid"]


@dataclass
class Regrid(Transform):
    """Resample each source swath onto ``area`` (see :func:`arcoforge.regrid.resample`).

    Parameters
    ----------
    area
        Area spec mapping, pyresample ``AreaDefinition`` or gridded reference dataset.
    method
        ``"nearest"``, ``"bilinear"``, ``"ewa"``, ``"bucket_avg"`` or ``"bucket_count"``.
    radius_of_influence
        Search radius (metres).  Give it in recipes: the default is estimated from each
        granule's geolocation, so it could differ between granules.
    neighbours, epsilon, rows_per_scan, lon, lat, variables, coverage, ewa_options
        As for :func:`~arcoforge.regrid.resample`.
    """

    area: Any
    method: str = "nearest"
    radius_of_influence: float | None = None
    neighbours: int = 32
    epsilon: float = 0.0
    rows_per_scan: int | None = None
    lon: str | None = None
    lat: str | None = None
    variables: Sequence[str] | None = None
    coverage: bool = True
    ewa_options: Mapping[str, Any] | None = None
    _area_def: Any = field(default=None, init=False, repr=False, compare=False)

    metadata_only: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"Regrid: method {self.method!r} is not one of "
                              f"{', '.join(METHODS)}")

    @property
    def area_definition(self) -> Any:
        """The resolved pyresample ``AreaDefinition``."""
        if self._area_def is None:
            self._area_def = resolve_area(self.area)
        return self._area_def

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        """The granule ``ds`` on the area, with its ``coverage`` mask."""
        out = resample(ds, self.area_definition, self.method,
                       radius_of_influence=self.radius_of_influence, neighbours=self.neighbours,
                       epsilon=self.epsilon, rows_per_scan=self.rows_per_scan, lon=self.lon,
                       lat=self.lat, variables=self.variables, coverage=self.coverage,
                       ewa_options=self.ewa_options)
        assert isinstance(out, xr.Dataset)
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-able description (the area as CRS WKT, extent and shape): part of the recipe
        hash."""
        return {"transform": "Regrid", "area": describe_area(self.area_definition),
                "method": self.method, "radius_of_influence": self.radius_of_influence,
                "neighbours": self.neighbours, "epsilon": self.epsilon,
                "rows_per_scan": self.rows_per_scan, "lon": self.lon, "lat": self.lat,
                "variables": list(self.variables) if self.variables is not None else None,
                "coverage": self.coverage,
                "ewa_options": dict(sorted(self.ewa_options.items())) if self.ewa_options
                else None}
