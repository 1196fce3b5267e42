"""Transforms: make each source analysis-ready before it joins the store.

A recipe takes an ordered list of transforms, ``af.ZarrRecipe(pattern, transforms=[...])``.  Each
is applied to every source file as an :class:`xarray.Dataset`, together with the file's
:class:`~arcoforge.forge.patterns.Index` (its position and keys in the pattern)::

    def fix_units(index, ds):           # the pangeo-forge ``preprocess`` idiom
        ds["sst"].attrs["units"] = "degC"
        return ds

    recipe = af.ZarrRecipe(pattern, transforms=[
        fix_units,                                   # any function (index, ds) -> ds
        af.transforms.Rename({"tasmax": "tmax"}),
        af.transforms.ExpandDimFromKey("member"),    # a new dimension from the pattern key
    ])

The scan applies the transforms lazily to each file's metadata, so the target's schema is the
transformed one; store tasks apply them again to read the data.  Transforms are part of the
recipe's hash and provenance: changing one publishes a new version.

Two kinds:

* **metadata-only** transforms (:attr:`Transform.metadata_only` is True: renaming, dropping or
  keeping variables, positional selection, attributes, a new dimension from a key) see the
  *raw* dataset -- values as stored, packing attributes (``scale_factor``, ``_FillValue``,
  ``units``) still attributes -- and keep the fast raw-copy path: the bytes are copied, never
  decoded and re-encoded.
* **value-changing** transforms (user functions, :class:`Select` by label,
  :class:`ReexpressTimes`, :class:`SetEncoding`) see the *decoded* dataset, as
  ``xr.open_dataset`` shows it (masked, scaled, times as datetimes).  The result is encoded back
  with each variable's ``.encoding`` (dtype, packing, fill value, time units), so what they do
  not change stays faithful to the source.

Three transforms need to see every file first and are resolved after a first scan
(:attr:`Transform.needs_all_files`): :class:`DropDuplicateSteps`, :class:`FillMissingVariable`
and :class:`ReexpressTimes` without explicit ``units``.  They must come after the per-file
transforms in the list.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import xarray as xr

from arcoforge.errors import ConfigError, SchemaError
from arcoforge.forge.patterns import Index
from arcoforge.forge.schema import group_path

if TYPE_CHECKING:
    from arcoforge.forge.schema import FileSchema

__all__ = [
    "Transform",
    "Function",
    "Rename",
    "DropVariables",
    "KeepVariables",
    "Select",
    "SetAttrs",
    "SetEncoding",
    "ExpandDimFromKey",
    "FillMissingVariable",
    "ReexpressTimes",
    "DropDuplicateSteps",
    "OnGroup",
    "as_transforms",
    "apply_transforms",
    "apply_decoded",
    "as_stored",
    "describe_transforms",
    "resolve_transforms",
]

def _json(value: Any) -> Any:
    """A JSON-able, stable rendering of a transform parameter (for hashes and provenance)."""
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, slice):
        return {"slice": [value.start, value.stop, value.step]}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class Transform:
    """Base class of the transforms: one step applied to each source dataset.

    Subclasses are dataclasses implementing :meth:`apply`.  Set :attr:`metadata_only` when the
    step only renames, drops, selects by position or sets attributes: it then sees the raw
    (undecoded) dataset and keeps the raw-copy path.  Otherwise it sees the decoded dataset.
    """

    #: True: applied to the raw dataset, values are copied untouched (the fast path)
    metadata_only: ClassVar[bool] = False
    #: True: must see every file's schema first (resolved by :meth:`resolve` after a scan)
    needs_all_files: ClassVar[bool] = False
    #: False: the result does not depend on the file's place in the pattern, so the scan of
    #: the same bytes may be reused for another index (the scan cache)
    depends_on_index: ClassVar[bool] = True

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        """Return the transformed ``ds`` (the source at pattern position ``index``)."""
        raise NotImplementedError

    def __call__(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        return self.apply(index, ds)

    def apply_to_decoded(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        """:meth:`apply` on a decoded dataset (``verify``'s view of a source); the same unless
        the step creates raw values (:class:`FillMissingVariable`)."""
        return self.apply(index, ds)

    def resolve(self, files: Sequence[FileSchema], concat_dim: str | None) -> Transform:
        """A copy bound to the scanned ``files`` (transforms with :attr:`needs_all_files`);
        ``concat_dim`` is the pattern's concat dimension."""
        return self

    def resolve_appending(self, files: Sequence[FileSchema], concat_dim: str | None,
                          stored: Callable[[str], xr.Variable | None]) -> Transform:
        """:meth:`resolve` for an append: ``files`` are only the new files and those at the
        store's end, so whatever the first build bound from other files is read from the
        published store, ``stored(name)`` (the raw variable with its attribute types, or None).
        """
        return self.resolve(files, concat_dim)

    def describe(self) -> dict[str, Any]:
        """What this step does, JSON-able: part of the recipe hash and of provenance."""
        params = {f.name: _json(getattr(self, f.name)) for f in fields(self)  # type: ignore[arg-type]
                  if f.repr}
        return {"transform": type(self).__name__, **params}


@dataclass
class Function(Transform):
    """A user function ``(index, ds) -> ds``: the pangeo-forge ``preprocess`` idiom.

    It sees the decoded dataset (set ``metadata_only=True`` when it only renames, drops or sets
    attributes, to see the raw one and keep the raw-copy path).  Its source code is part of the
    recipe hash, so editing the function publishes a new version.
    """

    func: Callable[[Index, xr.Dataset], xr.Dataset]
    metadata_only: bool = False  # type: ignore[misc]

    def __post_init__(self) -> None:
        if not callable(self.func):
            raise ConfigError(f"transform {self.func!r} is not callable; a transform is a "
                              "function (index, ds) -> ds or an arcoforge.transforms.Transform")

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        out = self.func(index, ds)
        if not isinstance(out, xr.Dataset):
            raise ConfigError(
                f"transform {_name(self.func)} returned {type(out).__name__}, not an "
                "xarray.Dataset; a transform must return the (new) dataset")
        return out

    def describe(self) -> dict[str, Any]:
        try:
            source = inspect.getsource(self.func)
        except (OSError, TypeError):
            source = repr(self.func)
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        return {"transform": "Function", "name": _name(self.func), "source_sha256": digest,
                "metadata_only": self.metadata_only}


def _name(func: Any) -> str:
    module = getattr(func, "__module__", None) or ""
    qual = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{qual}" if module else qual


def _missing(ds: xr.Dataset, names: Sequence[Hashable], what: str, index: Index) -> None:
    absent = [n for n in names if n not in ds.variables]
    if absent:
        group = ds.encoding.get("group")
        where = f"group {group!r} of the source" if group else "the source"
        hint = ("; a step for some groups only goes in OnGroup(<group>, [...])"
                if group else "")
        raise SchemaError(
            f"{what}: no variable {', '.join(repr(a) for a in absent)} in {where} at {index} "
            f"(it has {', '.join(repr(str(v)) for v in ds.variables)}){hint}")


@dataclass
class Rename(Transform):
    """Rename variables and dimensions: ``Rename({"tasmax": "tmax", "lat": "latitude"})``.

    Names absent from a file are an error unless ``missing_ok=True``.
    """

    names: Mapping[str, str]
    missing_ok: bool = False
    metadata_only: ClassVar[bool] = True
    depends_on_index: ClassVar[bool] = False

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        present = {k: v for k, v in self.names.items() if k in ds.variables or k in ds.dims}
        if not self.missing_ok and len(present) != len(self.names):
            _missing(ds, [k for k in self.names if k not in present], "Rename", index)
        return ds.rename(present)


@dataclass
class DropVariables(Transform):
    """Drop variables: ``DropVariables(["time_bnds"])`` (absent names are ignored)."""

    names: Sequence[str]
    metadata_only: ClassVar[bool] = True
    depends_on_index: ClassVar[bool] = False

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        return ds.drop_vars([n for n in self.names if n in ds.variables])


@dataclass
class KeepVariables(Transform):
    """Keep only these variables, plus the coordinates they need (their dimension
    coordinates and the names in their ``coordinates`` and ``bounds`` attributes)."""

    names: Sequence[str]
    metadata_only: ClassVar[bool] = True
    depends_on_index: ClassVar[bool] = False

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        _missing(ds, self.names, "KeepVariables", index)
        keep: set[Hashable] = set(self.names)
        for name in self.names:
            var = ds.variables[name]
            keep.update(d for d in var.dims if d in ds.variables)
            for attr in ("coordinates", "bounds"):  # raw: attributes; decoded: encoding
                keep.update(str(var.attrs.get(attr, "")).split())
                keep.update(str(var.encoding.get(attr, "")).split())
        for kept in list(keep):  # bounds of kept coordinates
            if kept in ds.variables:
                keep.update(str(ds.variables[kept].attrs.get("bounds", "")).split())
        return ds.drop_vars([n for n in ds.variables if n not in keep])


@dataclass
class Select(Transform):
    """Subset each file: ``Select(isel={"lat": slice(0, 90)})`` by position (metadata-only),
    or ``Select(sel={"lat": slice(-30, 30)})`` by coordinate label (on decoded values)."""

    isel: Mapping[str, Any] | None = None
    sel: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.isel and not self.sel:
            raise ConfigError("Select needs isel={...} or sel={...}")

    @property  # type: ignore[misc]
    def metadata_only(self) -> bool:  # type: ignore[override]
        return not self.sel

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        for part in (self.isel, self.sel):
            absent = [d for d in (part or {}) if d not in ds.dims]
            if absent:
                raise SchemaError(f"Select: the source at {index} has no dimension "
                                  f"{', '.join(map(repr, absent))} (it has {list(ds.dims)})")
        if self.isel:
            ds = ds.isel(self.isel)
        if self.sel:
            ds = ds.sel(self.sel)
        return ds


@dataclass
class SetAttrs(Transform):
    """Set (or, with value None, delete) attributes: ``SetAttrs({"sst": {"units": "degC"},
    None: {"title": "..."}})`` -- the key ``None`` addresses the global attributes."""

    attrs: Mapping[str | None, Mapping[str, Any]]
    metadata_only: ClassVar[bool] = True
    depends_on_index: ClassVar[bool] = False

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        ds = ds.copy()
        for name, new in self.attrs.items():
            if name is not None and name not in ds.variables:
                _missing(ds, [name], "SetAttrs", index)
            target = ds.attrs if name is None else ds.variables[name].attrs
            for key, value in new.items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
        return ds


@dataclass
class SetEncoding(Transform):
    """Change how variables are stored: ``SetEncoding({"sst": {"dtype": "int16",
    "scale_factor": 0.01, "_FillValue": -32768}})`` (keys of xarray's ``.encoding``).

    Values are decoded, then encoded again with the new encoding.  ``None`` removes a key
    (``{"scale_factor": None, "add_offset": None}`` stores the values unpacked), except for
    ``_FillValue``, where it means "no fill value", as in xarray."""

    encoding: Mapping[str, Mapping[str, Any]]

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        _missing(ds, list(self.encoding), "SetEncoding", index)
        ds = ds.copy()
        for name, enc in self.encoding.items():
            current = ds.variables[name].encoding
            for key, value in enc.items():
                if value is None and key != "_FillValue":
                    current.pop(key, None)
                else:
                    current[key] = value
        return ds


@dataclass
class ExpandDimFromKey(Transform):
    """A new dimension from a pattern key: ``ExpandDimFromKey("member")`` gives every data
    variable a leading dimension ``member`` of length 1 whose coordinate is the file's key.

    With ``ConcatDim("member", keys=[...])`` in the pattern, files of an ensemble (each
    holding the same variables) become one ``(member, ...)`` dataset.  ``dim`` defaults to the
    pattern dimension ``key``; ``variables`` limits which variables get the dimension (default:
    every variable that is not a coordinate)."""

    key: str
    dim: str | None = None
    variables: Sequence[str] | None = None
    metadata_only: ClassVar[bool] = True

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        dim = self.dim or self.key
        try:
            value = index.key(self.key)
        except Exception:  # noqa: BLE001
            raise ConfigError(
                f"ExpandDimFromKey({self.key!r}): the pattern has no combine dimension "
                f"{self.key!r} (the file's index is {index})") from None
        if dim in ds.dims:
            raise SchemaError(f"ExpandDimFromKey: the source at {index} already has a "
                              f"dimension {dim!r}")
        names = list(self.variables) if self.variables is not None else list(ds.data_vars)
        _missing(ds, names, "ExpandDimFromKey", index)
        coord = np.asarray([value], dtype=object if isinstance(value, str) else None)
        out = ds.copy()
        for name in names:
            out[name] = ds[name].expand_dims({dim: 1})
        return out.assign_coords({dim: (dim, coord)})


# -- transforms that see every file ------------------------------------------------------------


@dataclass
class FillMissingVariable(Transform):
    """Add a variable to the files that lack it, filled with ``fill_value``.

    Its dimensions, dtype and attributes come from the first file that has it; its shape from
    each file's own dimension lengths.  The default fill is the variable's ``_FillValue``
    (or ``missing_value``), else NaN for floats; integer variables without one need an
    explicit ``fill_value``.
    """

    name: str
    fill_value: Any = None
    template: dict[str, Any] | None = field(default=None, repr=False)
    metadata_only: ClassVar[bool] = True
    needs_all_files: ClassVar[bool] = True

    def resolve(self, files: Sequence[FileSchema], concat_dim: str | None) -> Transform:
        have = [f for f in files if self.name in f.variables]
        if not have:
            raise SchemaError(f"FillMissingVariable({self.name!r}): no source file has a "
                              f"variable {self.name!r}")
        var = have[0].variables[self.name]
        return self._bound(var.dims, var.dtype, var.attrs, have[0].url)

    def resolve_appending(self, files: Sequence[FileSchema], concat_dim: str | None,
                          stored: Callable[[str], xr.Variable | None]) -> Transform:
        var = None if any(self.name in f.variables for f in files) else stored(self.name)
        if var is None:
            return self.resolve(files, concat_dim)
        # none of the files at the seam has it: the store's variable is the template the
        # first build took from its first file that had it
        return self._bound(var.dims, str(var.dtype), var.attrs, "the published store")

    def _bound(self, dims: Sequence[Hashable], dtype: Any, attrs: Mapping[str, Any],
               source: str) -> FillMissingVariable:
        """A copy bound to the template variable (dims, dtype, attributes) found in
        ``source``; the fill: ``fill_value``, else its ``_FillValue``/``missing_value``, else
        NaN for floats."""
        fill = self.fill_value
        if fill is None:
            fill = attrs.get("_FillValue", attrs.get("missing_value"))
        if fill is None:
            if np.dtype(dtype).kind not in "fc":
                raise ConfigError(
                    f"FillMissingVariable({self.name!r}): {dtype} variable without "
                    "_FillValue; give fill_value=... (a value that is not valid data)")
            fill = np.nan
        template = {"dims": list(dims), "dtype": dtype, "attrs": dict(attrs),
                    "fill": fill, "from": source}
        return FillMissingVariable(self.name, self.fill_value, template)

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        if self.name in ds.variables:
            return ds
        if self.template is None:
            return ds  # first scan: resolved afterwards
        import dask.array as da

        dims = tuple(self.template["dims"])
        absent = [d for d in dims if d not in ds.sizes]
        if absent:
            raise SchemaError(
                f"FillMissingVariable({self.name!r}): the source at {index} has no dimension "
                f"{', '.join(map(repr, absent))} to give the filled variable its shape")
        shape = tuple(ds.sizes[d] for d in dims)
        data = da.full(shape, self.template["fill"], dtype=np.dtype(self.template["dtype"]))
        out = ds.copy()
        out[self.name] = xr.Variable(dims, data, dict(self.template["attrs"]))
        return out

    def apply_to_decoded(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        if self.name in ds.variables:
            return ds
        out = self.apply(index, ds)
        decoded = _decode(xr.Dataset({self.name: out.variables[self.name]}))
        out[self.name] = decoded.variables[self.name]
        return out

    def describe(self) -> dict[str, Any]:
        return {"transform": "FillMissingVariable", "name": self.name,
                "fill_value": _json(self.fill_value)}


def _is_time(var: xr.Variable) -> bool:
    """A decoded CF time variable (datetimes from "<unit> since <date>" units)."""
    units = var.encoding.get("units")
    return isinstance(units, str) and " since " in units and var.dtype.kind in "MO"


@dataclass
class ReexpressTimes(Transform):
    """Store every time-like variable with one unit origin, e.g. ``units="milliseconds since
    2018-07-02"`` -- for files that each count time from their own origin (GOES GLM granules:
    ``event_time_offset`` in "milliseconds since <file start>").

    Without ``units`` each variable takes the units of its first file.  Integer times are
    widened to int64 (an int16 offset overflows once several files share one origin); floats
    to float64.  ``variables`` limits which variables change (default: every time-like one)."""

    units: str | None = None
    variables: Sequence[str] | None = None
    bound: dict[str, str] | None = field(default=None, repr=False)

    @property  # type: ignore[misc]
    def needs_all_files(self) -> bool:  # type: ignore[override]
        return self.units is None

    def resolve(self, files: Sequence[FileSchema], concat_dim: str | None) -> Transform:
        if self.units is not None:
            return self
        bound: dict[str, str] = {}
        for f in files:
            for name, var in f.variables.items():
                units = var.attrs.get("units")
                if name in bound or not isinstance(units, str) or " since " not in units:
                    continue
                if self.variables is None or name in self.variables:
                    bound[name] = units
        return ReexpressTimes(None, self.variables, bound)

    def resolve_appending(self, files: Sequence[FileSchema], concat_dim: str | None,
                          stored: Callable[[str], xr.Variable | None]) -> Transform:
        if self.units is not None:
            return self
        # the store holds each variable in the units of the first build's first file, not
        # in those of the first file at the seam
        bound = dict(self.resolve(files, concat_dim).bound or {})  # type: ignore[attr-defined]
        for name in bound:
            var = stored(name)
            units = var.attrs.get("units") if var is not None else None
            if isinstance(units, str) and " since " in units:
                bound[name] = units
        return ReexpressTimes(None, self.variables, bound)

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        if self.units is None and self.bound is None:
            return ds  # first scan: resolved afterwards
        ds = ds.copy()
        names = self.variables if self.variables is not None else list(ds.variables)
        for name in names:
            if name not in ds.variables:
                continue
            var = ds.variables[name]
            units = self.units or (self.bound or {}).get(str(name))
            if units is None or not _is_time(var):
                continue
            enc = var.encoding
            old = np.dtype(enc.get("dtype", "float64"))
            enc["units"] = units
            enc["dtype"] = np.dtype("int64") if old.kind in "iu" else np.dtype("float64")
            if "_FillValue" in enc and enc["_FillValue"] is not None:
                enc["_FillValue"] = enc["dtype"].type(enc["_FillValue"])
        return ds

    def describe(self) -> dict[str, Any]:
        return {"transform": "ReexpressTimes", "units": self.units,
                "variables": _json(self.variables)}


@dataclass
class DropDuplicateSteps(Transform):
    """Drop steps of the concat dimension that repeat a coordinate value already present in
    another file (CMIP files that repeat the boundary month): ``keep="first"`` keeps the
    earlier file's step, ``keep="last"`` the later one's."""

    keep: Literal["first", "last"] = "first"
    selection: dict[Index, list[int]] | None = field(default=None, repr=False)
    dim: str | None = field(default=None, repr=False)
    metadata_only: ClassVar[bool] = True
    needs_all_files: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.keep not in ("first", "last"):
            raise ConfigError(f"DropDuplicateSteps(keep={self.keep!r}): keep is 'first' or "
                              "'last'")

    def resolve(self, files: Sequence[FileSchema], concat_dim: str | None) -> Transform:
        from arcoforge.forge.schema import comparable_concat_values

        per_file = comparable_concat_values(files, concat_dim)
        if per_file is None:
            raise SchemaError("DropDuplicateSteps needs a concat dimension with a coordinate "
                              "variable in every file")
        dim = concat_dim
        order = range(len(files)) if self.keep == "first" else range(len(files) - 1, -1, -1)
        seen: set[Any] = set()
        selection: dict[Index, list[int]] = {}
        for pos in order:
            vals = per_file[pos]
            keep = [i for i, v in enumerate(vals.tolist()) if v not in seen]
            seen.update(vals.tolist())
            if len(keep) != len(vals):
                selection[files[pos].index] = keep
        return DropDuplicateSteps(self.keep, selection, dim)

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        if not self.selection or self.dim is None:
            return ds
        keep = self.selection.get(index)
        if keep is None:
            return ds
        return ds.isel({self.dim: keep})

    def describe(self) -> dict[str, Any]:
        return {"transform": "DropDuplicateSteps", "keep": self.keep}


@dataclass
class OnGroup(Transform):
    """Apply ``transforms`` to one group of a grouped recipe only.

    With ``ZarrRecipe(groups=[...])`` every transform runs on each listed group's dataset in
    turn (``ds.encoding["group"]`` names it, ``""`` for the root).  ``OnGroup("data_01/ku",
    [KeepVariables(["ssha", "swh_ocean"])])`` runs its steps on that group and passes every
    other group through unchanged.
    """

    group: str
    transforms: Sequence[Any] = ()

    def __post_init__(self) -> None:
        self.group = group_path(self.group)
        self.transforms = as_transforms(self.transforms)
        wide = [type(t).__name__ for t in self.transforms if t.needs_all_files]
        if wide:
            raise ConfigError(f"OnGroup({self.group!r}): {', '.join(wide)} needs every file "
                              "and every group; put it in the recipe's transforms instead")

    @property  # type: ignore[override]
    def metadata_only(self) -> bool:  # type: ignore[override]
        return all(t.metadata_only for t in self.transforms)

    @property  # type: ignore[override]
    def depends_on_index(self) -> bool:  # type: ignore[override]
        return any(t.depends_on_index for t in self.transforms)

    def _mine(self, ds: xr.Dataset) -> bool:
        return str(ds.encoding.get("group") or "").strip("/") == self.group

    def apply(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        if not self._mine(ds):
            return ds
        group = ds.encoding.get("group")
        decoded = not self.metadata_only  # apply_transforms decoded it for these steps
        for t in self.transforms:
            ds = _run_step(t.apply, index, ds, carry=decoded)  # as between the recipe's steps
            ds.encoding.setdefault("group", group)
        return ds

    def apply_to_decoded(self, index: Index, ds: xr.Dataset) -> xr.Dataset:
        if not self._mine(ds):
            return ds
        group = ds.encoding.get("group")
        for t in self.transforms:
            ds = _run_step(t.apply_to_decoded, index, ds, carry=not t.metadata_only)
            ds.encoding.setdefault("group", group)
        return ds

    def describe(self) -> dict[str, Any]:
        return {"transform": "OnGroup", "group": self.group,
                "transforms": describe_transforms(self.transforms)}


# -- applying a chain ---------------------------------------------------------------------------


def as_transforms(items: Sequence[Any] | None) -> tuple[Transform, ...]:
    """Normalise a recipe's ``transforms`` argument (functions become :class:`Function`) and
    check the order (transforms that see every file come last)."""
    out: list[Transform] = []
    for item in items or ():
        if isinstance(item, Transform):
            out.append(item)
        elif callable(item):
            out.append(Function(item))
        else:
            raise ConfigError(f"transforms: {item!r} is neither a function (index, ds) -> ds "
                              "nor an arcoforge.transforms.Transform")
    seen_global = None
    for t in out:
        if t.needs_all_files:
            seen_global = t
        elif seen_global is not None:
            raise ConfigError(
                f"transforms: {type(seen_global).__name__} needs every file's schema and must "
                f"come after the per-file transforms, but {type(t).__name__} follows it")
    return tuple(out)


def describe_transforms(transforms: Sequence[Transform]) -> list[dict[str, Any]]:
    """The transforms' descriptions (provenance and the recipe hash)."""
    return [t.describe() for t in transforms]


def transforms_digest(transforms: Sequence[Transform]) -> str:
    return hashlib.sha256(json.dumps(describe_transforms(transforms), sort_keys=True,
                                     default=str).encode()).hexdigest()


def resolve_transforms(transforms: Sequence[Transform], files: Sequence[FileSchema],
                       concat_dim: str | None,
                       stored: Callable[[str], xr.Variable | None] | None = None,
                       ) -> tuple[Transform, ...]:
    """Bind the transforms that need every file's schema to the scanned ``files``; for an
    append, ``stored`` gives the published store's variables (see
    :meth:`Transform.resolve_appending`)."""
    if stored is None:
        return tuple(t.resolve(files, concat_dim) if t.needs_all_files else t
                     for t in transforms)
    return tuple(t.resolve_appending(files, concat_dim, stored) if t.needs_all_files else t
                 for t in transforms)


def _decode(ds: xr.Dataset) -> xr.Dataset:
    from arcoforge.quiet import expected_warnings

    with expected_warnings():
        return xr.decode_cf(ds, use_cftime=None)


def _packed_range(enc: Mapping[str, Any]) -> tuple[float, float] | None:
    """The decoded values an integer ``encoding`` (dtype, scale_factor, add_offset,
    ``_Unsigned``) can hold, or None when the encoding does not pack into integers."""
    dtype = enc.get("dtype")
    if dtype is None or np.dtype(dtype).kind not in "iu":
        return None
    info = np.iinfo(np.dtype(dtype))
    lo, hi = float(info.min), float(info.max)
    if str(enc.get("_Unsigned", "")).lower() == "true" and np.dtype(dtype).kind == "i":
        lo, hi = 0.0, float(2 ** (8 * np.dtype(dtype).itemsize) - 1)
    scale = float(np.asarray(enc.get("scale_factor", 1.0)))
    offset = float(np.asarray(enc.get("add_offset", 0.0)))
    a, b = lo * scale + offset, hi * scale + offset
    return (min(a, b), max(a, b))


def _check_fits(name: str, enc: Mapping[str, Any], bounds: tuple[float, float]) -> Any:
    """A block function that raises when decoded values fall outside what the variable's
    integer encoding can hold (the cast would wrap them around silently)."""
    lo, hi = bounds
    # half a step of slack: values round to the nearest step
    step = abs(float(np.asarray(enc.get("scale_factor", 1.0)))) / 2

    def check(block: np.ndarray) -> np.ndarray:
        values = np.asarray(block)
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if finite.size and (finite.min() < lo - step or finite.max() > hi + step):
            raise SchemaError(
                f"variable {name!r}: a transform made values from {float(finite.min()):g} to "
                f"{float(finite.max()):g}, but its encoding ({np.dtype(enc['dtype']).name}"
                + (f", scale_factor {float(np.asarray(enc['scale_factor'])):g}"
                   if "scale_factor" in enc else "")
                + (f", add_offset {float(np.asarray(enc['add_offset'])):g}"
                   if "add_offset" in enc else "")
                + f") holds only {lo:g} to {hi:g}: they would wrap around. Give the variable "
                "an encoding that holds them with arcoforge.transforms.SetEncoding (e.g. "
                "{'dtype': 'int32'} or {'dtype': 'float32'}), or drop its encoding in the "
                "transform.")
        return block
    return check


def _check_fill_fits(name: str, enc: Mapping[str, Any]) -> None:
    """Raise when a variable's ``_FillValue``/``missing_value`` cannot be held by the dtype it
    will be stored as (``SetEncoding({"sst": {"dtype": "int8"}})`` keeping the source's -999:
    the cast wraps it to 25, and every valid 25 would read back as missing)."""
    dtype = enc.get("dtype")
    if dtype is None:
        return
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        return
    for key in ("_FillValue", "missing_value"):
        value = enc.get(key)
        if value is None:
            continue
        for v in np.atleast_1d(np.asarray(value)).tolist():
            if not isinstance(v, int | float):
                continue
            if dtype.kind == "f":  # FLT_MAX written in decimal is a little above finfo.max
                with np.errstate(over="ignore"):
                    fits = not np.isfinite(v) or bool(np.isfinite(dtype.type(v)))
            else:
                info = np.iinfo(dtype)
                fits = float(v).is_integer() and info.min <= v <= info.max
            if not fits:
                raise SchemaError(
                    f"variable {name!r}: its {key} {v!r} cannot be stored as {dtype} (it would "
                    f"become another value, and that value would read back as missing); give "
                    f"one that {dtype} holds, e.g. SetEncoding({{{name!r}: {{'dtype': "
                    f"'{dtype}', {key!r}: {_fill_suggestion(dtype)}}}}})")


def _fill_suggestion(dtype: np.dtype) -> str:
    if dtype.kind == "f":
        return "float('nan')"
    info = np.iinfo(dtype)
    return str(info.max if dtype.kind == "u" else info.min)


def _guard_packing(ds: xr.Dataset) -> xr.Dataset:
    """Check lazily, block by block as the values are read, that decoded float variables fit
    the integer encoding they will be packed with."""
    changed = {}
    for name, var in ds.variables.items():
        _check_fill_fits(str(name), var.encoding)
        bounds = _packed_range(var.encoding)
        if bounds is None or var.dtype.kind not in "fiu":
            continue
        check = _check_fits(str(name), var.encoding, bounds)
        data = var.data
        if hasattr(data, "map_blocks"):
            data = data.map_blocks(check, dtype=var.dtype)
        else:
            data = check(np.asarray(data))
        changed[name] = xr.Variable(var.dims, data, var.attrs, var.encoding)
    if not changed:
        return ds
    out = ds.copy()
    for name, var in changed.items():
        out[name] = var
        out[name].encoding = dict(var.encoding)
    return out


def _encode(ds: xr.Dataset) -> xr.Dataset:
    """Back to raw values and attributes with each variable's ``.encoding`` (values that the
    integer packing cannot hold are an error, not wrapped around)."""
    from xarray import conventions

    ds = _guard_packing(ds).copy()
    for var in ds.variables.values():
        # a source variable without a fill value gets none (xarray's encoder adds NaN to
        # every float, which the source and open_mfdataset of it do not have)
        if var.encoding and "_FillValue" not in var.encoding:
            var.encoding["_FillValue"] = None
    variables, attrs = conventions.encode_dataset_coordinates(ds)
    variables, attrs = conventions.cf_encoder(variables, attrs)
    for name, var in variables.items():
        enc = ds.variables[name].encoding if name in ds.variables else {}
        _keep_time_text(var, enc)
        # xarray writes ``_Unsigned`` back only for variables with a fill value; without it
        # the stored integers would read back as negative numbers
        unsigned = ds.variables[name].encoding.get("_Unsigned") if name in ds.variables else None
        if unsigned is not None and "_Unsigned" not in var.attrs and var.dtype.kind == "i":
            var.attrs["_Unsigned"] = unsigned
    out = xr.Dataset(variables, attrs=attrs)
    # the encoder turns data variables' coordinates into a "coordinates" attribute; keep the
    # coordinate flags of the original so the raw view matches what a file would show
    return out.set_coords([n for n in ds.coords if n in out.variables])


def apply_decoded(transforms: Sequence[Transform], index: Index, ds: xr.Dataset,
                  url: str) -> xr.Dataset:
    """Apply ``transforms`` to a dataset as ``xr.open_dataset`` decodes it (what ``verify``
    compares the store with): every step sees decoded values."""
    group = ds.encoding.get("group")
    for t in transforms:
        try:
            if group is not None:
                ds.encoding.setdefault("group", group)
            # as the build does between decoded steps
            ds = _run_step(t.apply_to_decoded, index, ds, carry=not t.metadata_only)
        except Exception as err:  # noqa: BLE001
            raise SchemaError(f"transform {t.describe().get('name') or type(t).__name__} failed "
                              f"on {url}: {type(err).__name__}: {err}") from err
    return ds


def as_stored(ds: xr.Dataset, **decode: Any) -> xr.Dataset:
    """A decoded dataset as a store written from it reads back: encoded with each variable's
    ``.encoding`` (xarray's CF encoder, as a build after value-changing steps) and decoded
    again with ``decode`` (keywords of :func:`xarray.decode_cf`).  Values that a step changed
    on packed data are then rounded to the packing's steps, as the store holds them."""
    from arcoforge.quiet import expected_warnings

    encoded = _encode(ds)
    for var in encoded.variables.values():
        var.encoding = {}  # raw values and attributes only, as a store holds them
    with expected_warnings():
        return xr.decode_cf(encoded, **decode)


def _same_time_units(a: str, b: str) -> bool:
    """Whether two CF time units mean the same ("days since 1854-01-15 00:00" and "days since
    1854-01-15"): xarray's encoder rewrites the text, arcoforge keeps the source's."""
    import pandas as pd

    try:
        ua, _, ra = a.partition(" since ")
        ub, _, rb = b.partition(" since ")
        return ua.strip() == ub.strip() and pd.Timestamp(ra.strip()) == pd.Timestamp(rb.strip())
    except (ValueError, TypeError):
        return False


def _keep_time_text(var: xr.Variable, enc: Mapping[str, Any]) -> None:
    """Keep a time variable's ``units`` text as the source wrote it, and no ``calendar`` that
    the source did not have (xarray's encoder writes its own spelling of both)."""
    units = enc.get("units")
    if isinstance(units, str) and isinstance(var.attrs.get("units"), str) and \
            var.attrs["units"] != units and _same_time_units(units, var.attrs["units"]):
        var.attrs["units"] = units
    if "units" in enc and "calendar" not in enc and \
            var.attrs.get("calendar") in ("proleptic_gregorian", "standard", "gregorian") and \
            var.dtype.kind in "iuf" and "units" in var.attrs:
        var.attrs.pop("calendar")  # CF's default calendar; what a file without one means


def _run_step(step: Callable[[Index, xr.Dataset], xr.Dataset], index: Index, ds: xr.Dataset,
              carry: bool) -> xr.Dataset:
    """One step on decoded values (``carry``): it gets a shallow copy, so that a variable it
    replaces -- also in place, ``ds["air"] = ds["air"] + 1`` as pangeo-forge preprocessors
    write -- keeps the source's encoding (see :func:`_carry_encoding`)."""
    if not carry:
        return step(index, ds)
    after = step(index, ds.copy(deep=False))
    return _carry_encoding(ds, after) if isinstance(after, xr.Dataset) else after


def _carry_encoding(before: xr.Dataset, after: xr.Dataset) -> xr.Dataset:
    """A value-changing step that replaced a variable (``ds["sst"] = ds["sst"] + 273.15``)
    drops its ``.encoding``; keep the source's when the values keep their dtype, so what the
    step did not mean to change (packing, fill value, time units) stays as it was."""
    for name, var in after.variables.items():
        old = before.variables.get(name)
        if old is not None and old.encoding and not var.encoding and var.dtype == old.dtype:
            var.encoding = dict(old.encoding)
    return after


def apply_transforms(transforms: Sequence[Transform], index: Index,
                     raw: xr.Dataset, url: str) -> xr.Dataset:
    """Apply ``transforms`` to the raw (``decode_cf=False``) dataset of the source at ``index``
    and return the transformed raw dataset: metadata-only steps run on the raw view,
    value-changing ones between a decode and an encode."""
    ds = raw
    decoded = False
    group = raw.encoding.get("group")  # a grouped source: which group (see OnGroup)
    for t in transforms:
        try:
            if t.metadata_only:
                if decoded:
                    ds = _encode(ds)
                    decoded = False
            elif not decoded:
                ds = _decode(ds)
                decoded = True
            if group is not None:
                ds.encoding.setdefault("group", group)
            ds = _run_step(t.apply, index, ds, carry=decoded)
        except (ConfigError, SchemaError) as err:
            err.add_note(f"arcoforge: in transform {t.describe().get('transform')} on {url}")
            raise
        except Exception as err:  # noqa: BLE001 - user code: say where it failed
            raise SchemaError(
                f"transform {t.describe().get('name') or type(t).__name__} failed on {url} "
                f"(pattern index {index}): {type(err).__name__}: {err}") from err
    if decoded:
        ds = _encode(ds)
    return _encode_leftovers(ds)


def _encode_leftovers(ds: xr.Dataset) -> xr.Dataset:
    """Encode the variables a metadata-only step created with values that are not raw file
    values (datetimes or bools, e.g. ``ExpandDimFromKey`` over date keys): as a file would
    hold them, so builds and appends see the same dtype."""
    odd = [n for n, v in ds.variables.items() if v.dtype.kind in "Mmb"]
    if not odd:
        return ds
    encoded = _encode(ds[odd] if all(n in ds.data_vars or n in ds.coords for n in odd)
                      else xr.Dataset({n: ds.variables[n] for n in odd}))
    out = ds.copy()
    for name in odd:
        out[name] = encoded.variables[name]
    return out
