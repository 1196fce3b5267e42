"""Per-file schemas and the combined target schema, with precise consistency errors.

A *schema* is the metadata of a dataset without its data: dimensions, variables (dims, shape,
on-disk dtype, raw attributes) and global attributes.  Sources are opened *raw*
(``decode_cf=False``), so packing (``scale_factor``/``add_offset``), ``_FillValue``,
``missing_value``, ``_Unsigned``, units and calendars pass through untouched and the target can be
written without decoding and re-encoding.

:func:`combine_schemas` checks that the files fit together (same variables, dtypes, dims, packing;
concat coordinate strictly increasing without duplicates) and raises :class:`SchemaError` naming the
file(s), the variable and the problem otherwise.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from arcoforge.errors import SchemaError
from arcoforge.forge.patterns import Index
from arcoforge.provenance import strip_provenance

__all__ = [
    "SchemaError",
    "VariableSchema",
    "FileSchema",
    "TargetSchema",
    "combine_schemas",
    "share_layout",
    "attrs_to_json",
    "attrs_from_json",
    "reexpress_times",
    "time_units_of",
    "to_target_time_units",
    "coordinate_names",
    "format_coordinate_value",
    "native_dtype",
]

log = logging.getLogger("arcoforge.forge.schema")

#: attributes whose value changes how raw values decode; they must agree across files
ENCODING_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned",
                  "units", "calendar")


@dataclass(frozen=True)
class VariableSchema:
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    attrs: dict[str, Any] = field(default_factory=dict)
    #: storage chunks of the source variable, if chunked (used for read planning)
    source_chunks: tuple[int, ...] | None = None

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


@dataclass
class FileSchema:
    """What one source file holds."""

    index: Index
    url: str
    path: str
    size: int
    sha256: str
    dims: dict[str, int]
    variables: dict[str, VariableSchema]
    attrs: dict[str, Any]
    #: raw values of the concat dimension's coordinate variable in this file (if it has one)
    concat_values: np.ndarray | None = None
    #: the URL to fetch the file again (``url`` is the display form, secrets redacted)
    fetch_url: str = ""
    #: digests of the raw values of variables without the concat dimension (see
    #: :func:`value_digest`): the store keeps one copy of them, so they must agree across files
    static_digests: dict[str, str] = field(default_factory=dict)
    #: attributes of each group of a grouped source (``recipe.groups``), by group path
    group_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TargetSchema:
    """The combined dataset: what the target will hold and which file provides what."""

    concat_dim: str | None
    dims: dict[str, int]
    variables: dict[str, VariableSchema]
    attrs: dict[str, Any]
    #: files in pattern order
    files: list[FileSchema]
    #: for each variable: the merge-group key of the files that provide it
    variable_group: dict[str, tuple[tuple[str, int], ...]]
    #: for each merge group: list of (file position in ``files``, start offset along concat dim)
    group_files: dict[tuple[tuple[str, int], ...], list[tuple[int, int]]]
    #: raw values of the concat coordinate over the whole dataset (None if it has none)
    concat_values: np.ndarray | None = None
    #: attributes of each group of a grouped build, by group path (empty: no groups)
    group_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def nbytes(self) -> int:
        total = 0
        for v in self.variables.values():
            total += int(np.prod(v.shape, dtype=np.int64)) * v.itemsize
        return total


# -- group-qualified names (see arcoforge.forge.groups) ----------------------------------


def qualify(group: str, name: str) -> str:
    """The forge's name of variable ``name`` of ``group`` (``"data_01/ku/sig0"``)."""
    return f"{group}/{name}" if group else name


def group_path(group: str) -> str:
    """A group's path as the forge names it: no leading, trailing or doubled slashes
    (``"/data_01//ku/"`` -> ``"data_01/ku"``; the root is ``""``)."""
    return "/".join(p for p in str(group).split("/") if p)


def split_name(name: str) -> tuple[str, str]:
    """``(group, leaf name)`` of a qualified variable name (``("", name)`` at the root)."""
    group, _, leaf = name.rpartition("/")
    return group, leaf


def is_concat_coordinate(name: str, concat_dim: str | None) -> bool:
    """Whether variable ``name`` (qualified or not) is named like the concat dimension."""
    return concat_dim is not None and split_name(name)[1] == concat_dim


def coordinate_of(variables: Mapping[str, Any], name: str, dim: str) -> str | None:
    """The variable that is the coordinate of dimension ``dim`` for variable ``name``: ``dim``
    in ``name``'s group or the nearest parent group that has it (NetCDF4's scoping)."""
    group = split_name(name)[0]
    while True:
        candidate = qualify(group, dim)
        if candidate in variables:
            return candidate
        if not group:
            return None
        group = split_name(group)[0]


def concat_coordinate(variables: Mapping[str, Any], concat_dim: str) -> str | None:
    """The variable holding the concat coordinate: ``concat_dim`` itself, or in a grouped
    source the first group's 1-D variable named ``concat_dim`` along it."""
    if concat_dim in variables:
        return concat_dim
    for name, var in variables.items():
        if split_name(name)[1] == concat_dim and tuple(var.dims) == (concat_dim,):
            return name
    return None


# -- attribute (de)serialisation -------------------------------------------------------------


def _json_value(value: Any) -> tuple[Any, str | None]:
    """A JSON-able value plus the numpy dtype needed to restore it exactly (None for str)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace"), None
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SU":
            return [str(v) for v in value.tolist()], None
        if value.ndim == 0:
            return value.item(), f"{value.dtype.str}"
        return value.tolist(), f"[]{value.dtype.str}"
    if isinstance(value, np.generic):
        if isinstance(value, np.bytes_):
            return value.decode("utf-8", "replace"), None
        if isinstance(value, np.str_):
            return str(value), None
        return value.item(), value.dtype.str
    if isinstance(value, (list, tuple)):
        return [_json_value(v)[0] for v in value], None
    return value, None


def attrs_to_json(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split attributes into JSON-able values and a {name: numpy dtype} map to restore types."""
    out: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, value in attrs.items():
        v, t = _json_value(value)
        if isinstance(v, float) and not np.isfinite(v):
            v = str(v)  # JSON has no NaN/inf; restored through the dtype map
            t = t or "<f8"
        out[key] = v
        if t is not None:
            types[key] = t
    return out, types


def attrs_from_json(attrs: Mapping[str, Any], types: Mapping[str, str]) -> dict[str, Any]:
    """Inverse of :func:`attrs_to_json`."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        t = types.get(key)
        if t is None:
            out[key] = value
        elif t.startswith("[]"):
            out[key] = np.asarray(value, dtype=np.dtype(t[2:]))
        else:
            out[key] = np.dtype(t).type(value if not isinstance(value, str) else float(value))
    return out


# -- combining ---------------------------------------------------------------------------------


def _attr_equal(a: Any, b: Any) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    except TypeError:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _attr_differs(a: Any, b: Any) -> bool:
    """Whether an attribute is set in one file and not the other, or set differently."""
    return (a is None) != (b is None) or (a is not None and not _attr_equal(a, b))


def _group_key(index: Index, concat_dim: str | None) -> tuple[tuple[str, int], ...]:
    return tuple((d, p) for d, p in index.positions if d != concat_dim)


def _check_same_structure(ref: FileSchema, other: FileSchema, concat_dim: str | None) -> None:
    missing = sorted(set(ref.variables) - set(other.variables))
    extra = sorted(set(other.variables) - set(ref.variables))
    if missing:
        raise SchemaError(
            f"variable(s) {', '.join(repr(m) for m in missing)} present in {ref.url} are missing "
            f"from {other.url}. Every file along the concat dimension must hold the same variables; "
            "fix or exclude the file, or split the variables with a MergeDim."
        )
    if extra:
        raise SchemaError(
            f"variable(s) {', '.join(repr(m) for m in extra)} in {other.url} are not in the first "
            f"file {ref.url}. Every file along the concat dimension must hold the same variables."
        )
    for name, rv in ref.variables.items():
        ov = other.variables[name]
        if native_dtype(rv.dtype) != native_dtype(ov.dtype):
            raise SchemaError(
                f"variable {name!r} has dtype {rv.dtype} in {ref.url} but {ov.dtype} in "
                f"{other.url}; the sources disagree (schema drift). Re-encode the odd file or "
                "build the two periods as separate datasets."
            )
        if rv.dims != ov.dims:
            raise SchemaError(
                f"variable {name!r} has dimensions {rv.dims} in {ref.url} but {ov.dims} in "
                f"{other.url}; the sources disagree (schema drift)."
            )
        for dim, rn, on in zip(rv.dims, rv.shape, ov.shape):
            if dim != concat_dim and rn != on:
                raise SchemaError(
                    f"dimension {dim!r} of variable {name!r} has length {rn} in {ref.url} but "
                    f"{on} in {other.url}; only the concat dimension {concat_dim!r} may change "
                    "length between files."
                )
    # packing/units differences only after layout: a dtype change explains more than its attrs
    # (only variables along the concat dim are copied from every file; the others come from the
    # first file, as with open_mfdataset(..., data_vars="minimal", compat="override"))
    for name, rv in ref.variables.items():
        ov = other.variables[name]
        if concat_dim not in rv.dims:
            continue
        for attr in ENCODING_ATTRS:
            if attr == "units" and _both_cf_time(rv, ov) and (
                    is_concat_coordinate(name, concat_dim) or not _is_packed(rv)):
                continue  # re-expressed in the first file's units (to_target_time_units)
            a, b = rv.attrs.get(attr), ov.attrs.get(attr)
            if _attr_differs(a, b):
                hint = ("store them in one unit with transforms=[arcoforge.transforms."
                        "ReexpressTimes()]" if attr == "units" and _both_cf_time(rv, ov) else
                        "rebuild the odd file with the same encoding, re-encode with "
                        "arcoforge.transforms.SetEncoding, or build the periods as separate "
                        "datasets")
                raise SchemaError(
                    f"variable {name!r}: attribute {attr!r} is {a!r} in {ref.url} but {b!r} in "
                    f"{other.url}. Raw values could not be copied faithfully; {hint}."
                )


#: static variables larger than this are not compared between files (their digest is skipped)
STATIC_DIGEST_MAX_BYTES = 64 * 2**20


def value_digest(values: Any) -> str:
    """A digest of raw values (dtype, shape and bytes) to compare a variable between files."""
    import hashlib

    arr = np.asarray(values)
    if arr.dtype.byteorder not in ("=", "|"):  # the same values in either byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    if arr.dtype.kind == "O":
        h.update(repr(arr.tolist()).encode())
    else:
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def wants_digest(dims: Sequence[str], shape: Sequence[int], itemsize: int,
                 concat_dim: str | None) -> bool:
    """Whether the scan records a :func:`value_digest` of a variable (a static one: no concat
    dimension, and not too large)."""
    return concat_dim is not None and concat_dim not in dims and \
        int(np.prod(shape, dtype=np.int64)) * itemsize <= STATIC_DIGEST_MAX_BYTES


def _check_static(ref: FileSchema, other: FileSchema, concat_dim: str | None) -> None:
    """Variables without the concat dimension are stored once (from the first file): they
    must be the same in every file along it, or the others' values would be lost silently."""
    if concat_dim is None:
        return
    for name, rv in ref.variables.items():
        if concat_dim in rv.dims:
            continue
        ov = other.variables[name]
        for attr in ENCODING_ATTRS:
            a, b = rv.attrs.get(attr), ov.attrs.get(attr)
            if _attr_differs(a, b):
                raise SchemaError(
                    f"variable {name!r} (no {concat_dim!r} dimension, stored once) has "
                    f"{attr}={a!r} in {ref.url} but {b!r} in {other.url}; the store would keep "
                    f"only the first. Make the files agree (e.g. transforms: Select/"
                    f"SetAttrs), or drop the variable (transforms.DropVariables)."
                )
        da, db = ref.static_digests.get(name), other.static_digests.get(name)
        if da is not None and db is not None and da != db:
            raise SchemaError(
                f"variable {name!r} has no {concat_dim!r} dimension, so the store keeps one copy, "
                f"but its values differ between {ref.url} and {other.url}; the second file's "
                f"values would be lost. Drop it ({_drop_hint(name)}), give it "
                f"the concat dimension (transforms.ExpandDimFromKey), or build the files "
                "separately."
            )


def _drop_hint(name: str) -> str:
    """The transform that drops variable ``name`` (of a group: with ``OnGroup``)."""
    group, leaf = split_name(name)
    if group:
        return f"transforms.OnGroup({group!r}, [transforms.DropVariables([{leaf!r}])])"
    return f"transforms.DropVariables([{name!r}])"


def _both_cf_time(a: VariableSchema, b: VariableSchema) -> bool:
    ua, ub = a.attrs.get("units"), b.attrs.get("units")
    return isinstance(ua, str) and isinstance(ub, str) and " since " in ua and " since " in ub


def _is_packed(v: VariableSchema) -> bool:
    return "scale_factor" in v.attrs or "add_offset" in v.attrs


def native_dtype(dtype: str) -> str:
    """``dtype`` in native byte order: files that differ only in byte order hold the same
    values (netCDF4 reports big-endian variables as ``>f4``, xarray as ``<f4``)."""
    dt = np.dtype(dtype)
    return dt.newbyteorder("=").str if dt.byteorder not in ("=", "|") else dt.str


def format_coordinate_value(value: Any, attrs: Mapping[str, Any] | None = None) -> str:
    """A coordinate value for a message: a CF time as a date in its own calendar
    (``2099-12-16 (360_day)``), anything else as a plain number or string."""
    attrs = attrs or {}
    units, calendar = attrs.get("units"), str(attrs.get("calendar", "standard"))
    item = value.item() if isinstance(value, np.generic) else value
    if isinstance(units, str) and " since " in units:
        try:
            import cftime

            date = cftime.num2date(item, units, calendar)
            text = date.isoformat(sep=" ")
            if text.endswith(" 00:00:00"):
                text = text[: -len(" 00:00:00")]
            return f"{text} ({calendar})"
        except (ValueError, TypeError, OverflowError):
            pass  # an undecodable unit or calendar: show the number
    return str(item)


def _concat_problem(files: Sequence[FileSchema], values: Sequence[np.ndarray],
                    concat_dim: str, attrs: Mapping[str, Any] | None = None) -> str | None:
    """Why the concat coordinate is not strictly increasing across files (None if it is).
    ``attrs`` are the coordinate's attributes (units, calendar) for readable values."""

    def show(v: Any) -> str:
        return format_coordinate_value(v, attrs)

    if any(np.asarray(v).dtype.kind not in "iufcmM" for v in values):
        # labels (e.g. ensemble member names): no order, but no label twice
        seen: dict[Any, str] = {}
        for f, v in zip(files, values):
            for item in np.asarray(v).ravel().tolist():
                if item in seen:
                    return (f"the {concat_dim!r} label {item!r} appears in {seen[item]} and "
                            f"{f.url}; each label of the concat coordinate must be unique.")
                seen[item] = f.url
        return None
    for f, v in zip(files, values):
        if v.size > 1 and not np.all(np.diff(v) > 0):
            dup = v[:-1][np.diff(v) == 0]
            what = f"repeats the value {show(dup[0])}" if dup.size else "is not increasing"
            return (f"coordinate {concat_dim!r} in {f.url} {what}; the concat coordinate must be "
                    "strictly increasing. Check the file or the order of keys in the pattern.")
    for (fa, va), (fb, vb) in zip(zip(files, values), zip(files[1:], values[1:])):
        if va.size and vb.size:
            if vb[0] == va[-1]:
                return (f"the same {concat_dim!r} value {show(vb[0])} appears in {fa.url} and "
                        f"{fb.url} (duplicate timestamp). Remove one of the files from the pattern, "
                        "or drop repeated steps with transforms=[arcoforge.transforms."
                        "DropDuplicateSteps()].")
            if vb[0] < va[-1]:
                return (f"coordinate {concat_dim!r} goes backwards between {fa.url} (ends at "
                        f"{show(va[-1])}) and {fb.url} (starts at {show(vb[0])}): overlapping or "
                        "out-of-order files. Sort the pattern's keys or remove the overlapping file.")
    return None


def reexpress_times(values: np.ndarray, units: Any, target_units: Any, calendar: str,
                    where: str = "") -> np.ndarray:
    """CF time ``values`` counted in ``units`` re-expressed in ``target_units`` (same dtype).

    Unchanged when the units agree or either is not a CF time unit ("<unit> since <date>").
    A SchemaError when integers cannot be re-expressed exactly.
    """
    values = np.asarray(values)
    if values.size == 0:  # a file with no records along the concat dimension
        return values
    if units == target_units or not (isinstance(units, str) and isinstance(target_units, str)
                                     and " since " in units and " since " in target_units):
        return values
    import cftime

    try:
        dates = cftime.num2date(values, units, calendar)
        converted = np.asarray(cftime.date2num(dates, target_units, calendar), dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise SchemaError(f"cannot express times {where}in {units!r} as {target_units!r}: "
                          f"{err}") from err
    if values.dtype.kind in "iu" and not np.all(converted == np.round(converted)):
        raise SchemaError(
            f"times {where}in {units!r} are not whole numbers of {target_units!r}; their "
            "integer values cannot be re-expressed exactly."
        )
    if values.dtype.kind in "iu":
        info = np.iinfo(values.dtype)
        if converted.min() < info.min or converted.max() > info.max:
            raise SchemaError(
                f"times {where}in {units!r} do not fit {values.dtype} once expressed in "
                f"{target_units!r} (they would wrap around); store them with a wider dtype: "
                "add arcoforge.transforms.ReexpressTimes() to the recipe's transforms."
            )
    return converted.astype(values.dtype)


def comparable_concat_values(files: Sequence[FileSchema],
                             concat_dim: str | None) -> list[np.ndarray] | None:
    """Every file's concat coordinate values in the first file's units (None when the files
    have no concat coordinate)."""
    if not files or concat_dim is None or any(f.concat_values is None for f in files):
        return None
    return [_in_first_units(f, files[0], concat_dim) for f in files]


def _in_first_units(f: FileSchema, first: FileSchema, concat_dim: str) -> np.ndarray:
    """``f``'s concat coordinate values in the first file's CF time units (files often count
    "days since <their own start>")."""
    attrs = f.variables[concat_coordinate(f.variables, concat_dim) or concat_dim].attrs
    first_attrs = first.variables[concat_coordinate(first.variables, concat_dim)
                                  or concat_dim].attrs
    return reexpress_times(np.asarray(f.concat_values), attrs.get("units"),
                           first_attrs.get("units"),
                           str(first_attrs.get("calendar", "standard")),
                           where=f"of {concat_dim!r} in {f.url} ")


def time_units_of(f: FileSchema, name: str, concat_dim: str | None) -> tuple[str, str] | None:
    """``(units, calendar)`` in which the raw values of variable ``name`` of file ``f`` count
    CF time: its own ``units`` ("<unit> since <date>"), or, for the concat coordinate's
    ``bounds``/``climatology`` variable without units, the coordinate's (CF: bounds inherit
    them).  None for other variables and packed ones (their raw values are not times)."""
    return _time_units(f.variables, name, concat_dim)


def _time_units(variables: Mapping[str, VariableSchema], name: str,
                concat_dim: str | None) -> tuple[str, str] | None:
    var = variables.get(name)
    if var is None or _is_packed(var):
        return None
    units, calendar = var.attrs.get("units"), var.attrs.get("calendar")
    coord_name = coordinate_of(variables, name, concat_dim) if concat_dim is not None else None
    if units is None and coord_name is not None and name != coord_name:
        coord = variables[coord_name].attrs
        if split_name(name)[1] in (_text(coord.get("bounds")), _text(coord.get("climatology"))):
            units = coord.get("units")
            calendar = calendar if calendar is not None else coord.get("calendar")
    units = _text(units)
    if units is None or " since " not in units:
        return None
    return units, str(_text(calendar) or "standard")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def to_target_time_units(schema: TargetSchema, name: str, file_pos: int,
                         values: np.ndarray) -> np.ndarray:
    """Raw values of variable ``name`` read from ``schema.files[file_pos]``, with CF times
    re-expressed in the units that the target records for ``name`` (``schema.variables``:
    those of the first file that holds it, or of the published store when appending).

    Files often count time from their own start ("days since <file start>"): the concat
    coordinate is re-expressed at scan time, and its bounds and every other CF time variable
    along the concat dimension must be too, or their dates would be wrong.  Fill values and NaN
    are kept as they are; values that need no change are returned as given.  A SchemaError
    naming the file when integers cannot be re-expressed exactly."""
    cdim = schema.concat_dim
    f = schema.files[file_pos]
    mine = time_units_of(f, name, cdim)
    if mine is None:
        return values
    target = _time_units(schema.variables, name, cdim)
    if target is None or target[0] == mine[0]:
        return values
    values = np.asarray(values)
    attrs = f.variables[name].attrs
    keep = np.zeros(values.shape, dtype=bool)
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            keep |= np.isin(values, np.asarray(attrs[key]).ravel())
    if values.dtype.kind == "f":
        keep |= np.isnan(values)
    if keep.all():
        return values
    out = values.copy()
    out[~keep] = reexpress_times(values[~keep], mine[0], target[0], target[1],
                                 where=f"of {name!r} in {f.url} ")
    return out


def _check_concat_coordinate(files: Sequence[FileSchema], concat_dim: str) -> np.ndarray | None:
    """The concatenated coordinate values; a SchemaError if a CF time coordinate overlaps,
    repeats or goes backwards (other coordinates only get a warning: some models write a
    placeholder such as 0 in every file)."""
    if any(f.concat_values is None for f in files):
        return None
    values = [_in_first_units(f, files[0], concat_dim) for f in files]
    joined = np.concatenate(values) if values else None
    problem = None
    # one vectorised test for the common case; the per-file walk only to explain a problem
    if joined is not None and joined.size > 1 and (
            joined.dtype.kind not in "iufcmM" or not bool(np.all(np.diff(joined) > 0))):
        coord = files[0].variables[concat_coordinate(files[0].variables, concat_dim)
                                   or concat_dim]
        problem = _concat_problem(files, values, concat_dim, coord.attrs)
    if problem:
        coord = files[0].variables[concat_coordinate(files[0].variables, concat_dim)
                                   or concat_dim]
        units = str(coord.attrs.get("units", ""))
        if " since " in units:
            raise SchemaError(problem)
        log.warning("%s (not a CF time coordinate, so the files are concatenated in pattern "
                    "order anyway)", problem)
    return joined


def coordinate_names(f: FileSchema) -> set[str]:
    """Names of ``f``'s coordinate-like variables: dimension coordinates (1-D, named after their
    dimension) and variables named by another variable's CF ``coordinates``, ``bounds`` or
    ``climatology`` attribute.  Only these may appear in more than one merge group."""
    out = {name for name, v in f.variables.items() if v.dims == (split_name(name)[1],)}
    for name, v in f.variables.items():
        group = split_name(name)[0]
        for key in ("coordinates", "bounds", "climatology"):
            value = v.attrs.get(key)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str):
                out.update(qualify(group, n) for n in value.split())
    return out & set(f.variables)


def _check_merge_clashes(files: Sequence[FileSchema],
                         groups: Mapping[tuple[tuple[str, int], ...], list[int]]) -> None:
    """Refuse data variables that the files of more than one merge key hold (a MergeDim over
    ensemble members, each with ``tas``, would otherwise keep the first member only)."""
    seen: dict[str, tuple[tuple[str, int], ...]] = {}
    clashes: dict[str, tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]] = {}
    for gkey, positions in groups.items():
        ref = files[positions[0]]
        coords = coordinate_names(ref)
        for name in ref.variables:
            if name in coords:
                continue
            if name in seen:
                clashes.setdefault(name, (seen[name], gkey))
            else:
                seen[name] = gkey
    if clashes:
        raise _merge_clash(sorted(clashes), files, groups, *next(iter(clashes.values())))


def _merge_clash(names: Sequence[str], files: Sequence[FileSchema],
                 groups: Mapping[tuple[tuple[str, int], ...], list[int]],
                 first_key: tuple[tuple[str, int], ...],
                 other_key: tuple[tuple[str, int], ...]) -> SchemaError:
    """The error for data variables that files of two (or more) merge keys all hold."""
    a, b = files[groups[first_key][0]], files[groups[other_key][0]]
    holders = [k for k, pos in groups.items() if names[0] in files[pos[0]].variables]

    def key_text(key: tuple[tuple[str, int], ...]) -> str:
        return ", ".join(f"{d}={p}" for d, p in key) or "(no merge key)"

    listed = ", ".join(repr(n) for n in names)
    what = f"variable {listed} is" if len(names) == 1 else f"variables {listed} are"
    return SchemaError(
        f"{what} in the files of {len(holders)} merge keys (e.g. {a.url} "
        f"[{key_text(first_key)}] and {b.url} [{key_text(other_key)}]). A MergeDim combines "
        "files that hold *different* variables; merging files that hold the same variable would "
        "keep only one of them. If they are members, realizations or levels of the same "
        "variable, put them along a dimension instead: a ConcatDim over these files, or a new "
        "dimension made from the pattern key. If only some variables repeat, drop them from all "
        "but one file with open_kwargs={'drop_variables': [...]}."
    )


#: the parts of a :class:`FileSchema` that files of one archive usually have in common
_LAYOUT_FIELDS = ("dims", "variables", "attrs", "static_digests")


def share_layout(f: FileSchema, seen: OrderedDict[bytes, Any], keep: int = 256) -> FileSchema:
    """Make ``f`` share its dimensions, variables, attributes and static digests with an
    earlier file whose ones are identical (same pickled bytes), and return it.

    A scan of 100,000 files of one archive then holds one copy of their common layout instead
    of 100,000 (memory, and the size of the plan sent to workers), and :func:`combine_schemas`
    skips comparing files that share it.  ``seen`` is the caller's table, one per scan; it
    keeps the ``keep`` most recently used layouts.
    """
    import pickle

    for name in _LAYOUT_FIELDS:
        value = getattr(f, name)
        try:
            key = name.encode() + b"\0" + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an unpicklable attribute: keep the file's own copy
            continue
        shared = seen.get(key)
        if shared is None:
            seen[key] = value
            while len(seen) > keep:
                seen.popitem(last=False)
        else:
            seen.move_to_end(key)
            setattr(f, name, shared)
    return f


#: node names a Zarr store keeps for its own metadata (v3, and v2 for other readers)
_RESERVED_NAMES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})


def _check_names(variables: Mapping[str, VariableSchema], url: str) -> None:
    """Refuse variable names that a Zarr store cannot hold (its metadata files' names)."""
    for name in variables:
        group, leaf = split_name(name)
        if leaf in _RESERVED_NAMES or leaf in (".", ".."):
            fix = f"T.Rename({{{leaf!r}: {leaf.strip('.').replace('.', '_')!r}}})"
            if group:
                fix = f"T.OnGroup({group!r}, [{fix}])"
            raise SchemaError(
                f"variable {name!r} of {url} has a name that Zarr keeps for its own metadata; "
                f"rename it with transforms=[{fix}] (T: arcoforge.transforms)")


def _shares_layout(ref: FileSchema, other: FileSchema) -> bool:
    """Whether ``other`` holds the very objects of ``ref``'s layout (see :func:`share_layout`),
    so that the structure checks between them cannot fail."""
    return all(getattr(ref, n) is getattr(other, n) for n in _LAYOUT_FIELDS)


def combine_schemas(files: Sequence[FileSchema], concat_dim: str | None,
                    nitems_per_file: int | None = None) -> TargetSchema:
    """Combine per-file schemas (in pattern order) into the target schema, or raise SchemaError."""
    if not files:
        raise SchemaError("the pattern has no files")
    groups: dict[tuple[tuple[str, int], ...], list[int]] = {}
    for pos, f in enumerate(files):
        groups.setdefault(_group_key(f.index, concat_dim), []).append(pos)

    if concat_dim is not None:
        for f in files:
            if concat_dim not in f.dims:
                raise SchemaError(
                    f"{f.url} has no dimension {concat_dim!r} (its dimensions are "
                    f"{sorted(f.dims)}). Check ConcatDim's name."
                )
            if nitems_per_file is not None and f.dims[concat_dim] != nitems_per_file:
                raise SchemaError(
                    f"{f.url} has {f.dims[concat_dim]} items along {concat_dim!r} but the pattern "
                    f"says nitems_per_file={nitems_per_file}. Fix nitems_per_file or leave it None "
                    "to have it discovered."
                )

    variables: dict[str, VariableSchema] = {}
    variable_group: dict[str, tuple[tuple[str, int], ...]] = {}
    group_files: dict[tuple[tuple[str, int], ...], list[tuple[int, int]]] = {}
    dims: dict[str, int] = {}
    concat_values: np.ndarray | None = None
    concat_total: int | None = None
    _check_merge_clashes(files, groups)

    for gkey, positions in groups.items():
        gfiles = [files[p] for p in positions]
        ref = gfiles[0]
        for other in gfiles[1:]:
            if _shares_layout(ref, other):
                continue  # the very same layout objects (share_layout): nothing to compare
            _check_same_structure(ref, other, concat_dim)
            _check_static(ref, other, concat_dim)
        offsets: list[tuple[int, int]] = []
        total = 0
        for p in positions:
            offsets.append((p, total))
            total += files[p].dims.get(concat_dim, 0) if concat_dim else 0
        group_files[gkey] = offsets
        if concat_dim is not None:
            if concat_total is not None and total != concat_total:
                raise SchemaError(
                    f"merge group {gkey} has {total} items along {concat_dim!r} but another has "
                    f"{concat_total}; all merged variables must cover the same {concat_dim!r}."
                )
            concat_total = total
            values = _check_concat_coordinate(gfiles, concat_dim)
            if values is not None:
                if concat_values is not None and not np.array_equal(values, concat_values):
                    raise SchemaError(
                        f"coordinate {concat_dim!r} differs between merge groups (first seen "
                        f"in {ref.url}); merged files must share the same {concat_dim!r} values."
                    )
                concat_values = values
        for name, var in ref.variables.items():
            shape = tuple(
                total if d == concat_dim else n for d, n in zip(var.dims, var.shape)
            )
            # the first file's byte order, as xarray's encoding["dtype"] of the first file
            merged = VariableSchema(name, var.dims, shape, var.dtype, var.attrs, var.source_chunks)
            if name in variables:
                prev = variables[name]
                if prev.dims != var.dims or prev.shape != shape or \
                        native_dtype(prev.dtype) != native_dtype(var.dtype):
                    raise SchemaError(
                        f"variable {name!r} is in more than one merge group with different "
                        f"layouts: {prev.dims} {prev.shape} {prev.dtype} vs {var.dims} {shape} "
                        f"{var.dtype} in {ref.url}."
                    )
                continue  # shared (e.g. coordinates): the first group provides it
            variables[name] = merged
            variable_group[name] = gkey
            for d, n in zip(var.dims, shape):
                if d in dims and dims[d] != n:
                    raise SchemaError(
                        f"dimension {d!r} has length {n} in {ref.url} but {dims[d]} in other files."
                    )
                dims[d] = n
    _check_names(variables, files[0].url)
    first = files[0]
    return TargetSchema(
        concat_dim=concat_dim,
        dims=dims,
        variables=variables,
        # a source's own arcoforge:* attributes (an arcoforge store read as an input) describe
        # that store, not the data: this build records its own
        attrs=strip_provenance(first.attrs),
        # one concat coordinate array (``concat_values``) instead of one per file
        files=[replace(f, concat_values=None) if f.concat_values is not None else f
               for f in files],
        variable_group=variable_group,
        group_files=group_files,
        concat_values=concat_values,
        group_attrs={g: strip_provenance(a) for g, a in first.group_attrs.items()},
    )
