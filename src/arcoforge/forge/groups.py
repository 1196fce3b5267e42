"""Several NetCDF4/HDF5 groups of each source as one store with Zarr groups.

A recipe with ``groups=["data_01", "data_01/ku"]`` builds every listed group of every file
into one store whose Zarr groups mirror the files' (``xr.open_datatree(store, engine="zarr")``
shows the same tree as the sources).  Inside the forge a grouped source is *one flat dataset*:
a variable of group ``data_01/ku`` is named ``"data_01/ku/<name>"`` (root variables keep their
name), so the scan, the plan, the store tasks and the targets work unchanged; a Zarr writer
puts such a name at that path.  Dimensions keep their own names: NetCDF4 lets a group use a
dimension of its parent (``data_01/ku`` uses ``data_01``'s ``time``), and the listed groups
must agree on the length of every dimension they share a name for (a group with another
``time`` is built by its own recipe, into its own store).

This module holds what is particular to groups: naming, the grouped scan
(:func:`scan_grouped`), the reader (:class:`GroupedFile`), and writing group attributes
(:func:`write_group_attrs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from arcoforge.errors import ConfigError, SchemaError
from arcoforge.forge.patterns import Index
from arcoforge.forge.schema import (
    FileSchema,
    VariableSchema,
    attrs_to_json,
    coordinate_of,
    group_path,
    is_concat_coordinate,
    qualify,
    split_name,
)
from arcoforge.provenance import ATTR_TYPES

__all__ = [
    "ALL_GROUPS",
    "normalize_groups",
    "qualify",
    "split_name",
    "file_groups",
    "scan_grouped",
    "read_root_attrs",
    "unlisted_parent_coordinates",
    "unlisted_root_attrs",
    "GroupedFile",
    "open_flat",
    "attr_types_by_group",
    "write_attr_types",
    "write_group_attrs",
    "is_concat_coordinate",
    "coordinate_of",
]

#: ``groups="*"``: the root and every group of the (first) file
ALL_GROUPS = "*"


def normalize_groups(groups: str | Sequence[str] | None) -> tuple[str, ...]:
    """The group paths of a recipe, without leading/trailing slashes (``""`` is the root).

    ``None`` or ``()``: no groups (the file's root, as before); ``"*"``: every group;
    ``"data_01"`` or ``["data_01", "data_01/ku"]``: those groups, in that order.
    """
    if groups is None:
        return ()
    if isinstance(groups, str):
        groups = [groups]
    out: list[str] = []
    for g in groups:
        if not isinstance(g, str):
            raise ConfigError(f"groups must be group paths such as 'data_01/ku', got {g!r}")
        path = group_path(g.strip())
        if path == ALL_GROUPS and len(groups) > 1:
            raise ConfigError("groups='*' (every group) cannot be combined with named groups")
        if path not in out:
            out.append(path)
    return tuple(out)


def file_groups(path: str, url: str) -> list[str]:
    """Every group path of the NetCDF4/HDF5 file ``path``, parents before children, the root
    (``""``) first."""
    from arcoforge.forge.io.formats import _OPEN_LOCK
    from arcoforge.forge.io.integrity import check_complete

    check_complete(path, url)  # a file cut short is named as such, not as unreadable
    names = [""]
    try:
        import netCDF4

        with _OPEN_LOCK, netCDF4.Dataset(path, "r") as root:
            todo = list(root.groups.values())
            while todo:
                g = todo.pop(0)
                names.append(str(g.path).strip("/"))
                todo.extend(g.groups.values())
    except OSError as err:
        raise ConfigError(f"groups='*' needs a NetCDF4/HDF5 file, but {url} cannot be opened "
                          f"as one ({err})") from err
    return names


def resolve_groups(groups: Sequence[str], path: str, url: str) -> tuple[str, ...]:
    """``groups`` with ``"*"`` expanded to the groups of ``path``."""
    if tuple(groups) == (ALL_GROUPS,):
        return tuple(file_groups(path, url))
    return tuple(groups)


def scan_grouped(scan_one: Callable[[str], FileSchema], groups: Sequence[str], index: Index,
                 url: str, path: str, size: int, sha256: str, concat_dim: str | None,
                 root_attrs: Mapping[str, Any] | None = None) -> FileSchema:
    """One flat :class:`FileSchema` of ``groups`` of a file: ``scan_one(group)`` scans one
    group (the root for ``""``).  The dataset's attributes are the root's: from its scan when
    the root is listed, else ``root_attrs`` (see :func:`unlisted_root_attrs`)."""
    dims: dict[str, int] = {}
    dim_group: dict[str, str] = {}
    variables: dict[str, VariableSchema] = {}
    digests: dict[str, str] = {}
    group_attrs: dict[str, dict[str, Any]] = {}
    values: np.ndarray | None = None
    attrs = dict(root_attrs or {})
    for g in groups:
        one = scan_one(g)
        if g:
            group_attrs[g] = dict(one.attrs)
        else:
            attrs = dict(one.attrs)
        used = {d for v in one.variables.values() for d in v.dims}
        for d, n in one.dims.items():
            if d not in used and d not in dims:
                continue  # a parent's dimension this group does not use
            if d in dims and dims[d] != n:
                raise SchemaError(
                    f"dimension {d!r} has length {n} in group {g or '/'!r} of {url} but {dims[d]} "
                    f"in group {dim_group[d] or '/'!r}; groups built into one store must agree "
                    "on the dimensions they share a name for. Build the groups with the other "
                    f"{d!r} with a recipe of their own (groups=[...]), into another store."
                )
            dims[d] = n
            dim_group.setdefault(d, g)
        for name, var in one.variables.items():
            q = qualify(g, name)
            variables[q] = VariableSchema(q, var.dims, var.shape, var.dtype, var.attrs,
                                          var.source_chunks)
        for name, digest in one.static_digests.items():
            digests[qualify(g, name)] = digest
        if values is None and one.concat_values is not None:
            values = one.concat_values
    return FileSchema(index=index, url=url, path=path, size=size, sha256=sha256, dims=dims,
                      variables=variables, attrs=attrs, concat_values=values,
                      static_digests=digests, group_attrs=group_attrs)


def unlisted_parent_coordinates(path: str, groups: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(group, dimension, parent)`` for each listed group that uses a dimension whose
    coordinate variable is in a parent group that is not listed: the store would hold the
    group without those coordinate values (e.g. ``groups=["data_01/ku"]`` and ``time``)."""
    import netCDF4

    from arcoforge.forge.io.formats import _OPEN_LOCK

    out: list[tuple[str, str, str]] = []
    listed = set(groups)
    try:
        with _OPEN_LOCK, netCDF4.Dataset(path, "r") as root:
            for g in groups:
                if not g or g == ALL_GROUPS:
                    continue
                node = root[g]
                used = {str(d) for v in node.variables.values() for d in v.dimensions}
                for dim in sorted(used - set(node.variables)):
                    parent = node.parent
                    while parent is not None:
                        ppath = str(parent.path).strip("/")
                        if dim in parent.variables:
                            if ppath not in listed:
                                out.append((g, dim, ppath))
                            break
                        if ppath in listed:
                            break  # a listed parent without it: nothing is left out
                        parent = parent.parent
    except (OSError, IndexError, KeyError):
        return []  # the scan reports unreadable files and unknown groups
    return out


def read_root_attrs(path: str, url: str) -> dict[str, Any]:
    """The root group's attributes of a NetCDF4/HDF5 file, as stored (its variables are not
    read, so an unlisted root's contents never fail a build)."""
    import netCDF4

    from arcoforge.forge.io.formats import _OPEN_LOCK
    from arcoforge.forge.io.integrity import check_complete

    check_complete(path, url)  # a file cut short is named as such, not as unreadable
    try:
        with _OPEN_LOCK, netCDF4.Dataset(path, "r") as nc:
            return {str(k): nc.getncattr(k) for k in nc.ncattrs()}
    except OSError as err:
        raise ConfigError(f"groups=... needs a NetCDF4/HDF5 file, but {url} cannot be opened "
                          f"as one ({err})") from err


def root_steps(transforms: Sequence[Any]) -> tuple[Any, ...]:
    """The transforms that apply to a root that is not one of the recipe's groups: those of
    ``OnGroup("", [...])`` (e.g. ``SetAttrs`` of the dataset's attributes)."""
    from arcoforge.forge.transforms import OnGroup

    return tuple(t for t in transforms if isinstance(t, OnGroup) and t.group == "")


def unlisted_root_attrs(attrs: Mapping[str, Any], transforms: Sequence[Any], index: Index,
                        url: str, decoded: bool = False) -> dict[str, Any]:
    """The dataset's attributes when the root is not one of the recipe's groups: the root's
    ``attrs`` through the ``OnGroup("", ...)`` steps only (the recipe's other transforms run
    on the listed groups); ``decoded``: as :func:`~arcoforge.forge.verify.verify` applies
    them."""
    steps = root_steps(transforms)
    if not steps:
        return dict(attrs)
    import xarray as xr

    from arcoforge.forge.transforms import apply_decoded, apply_transforms

    ds = xr.Dataset(attrs=dict(attrs))
    ds.encoding["group"] = ""
    out = apply_decoded(steps, index, ds, url) if decoded else \
        apply_transforms(steps, index, ds, url)
    return dict(out.attrs)


class GroupedFile:
    """A source's listed groups read as one flat dataset: ``read("data_01/ku/x", key)`` reads
    ``x`` of group ``data_01/ku``; the interface of
    :class:`~arcoforge.forge.io.readers.RawFile`."""

    def __init__(self, open_group: Callable[[str], Any], url: str) -> None:
        self.url = url
        self._open_group = open_group
        self._readers: dict[str, Any] = {}

    def read(self, name: str, key: tuple[slice, ...]) -> np.ndarray:
        group, leaf = split_name(name)
        reader = self._readers.get(group)
        if reader is None:
            reader = self._readers[group] = self._open_group(group)
        return np.asarray(reader.read(leaf, key))

    def close(self) -> None:
        readers, self._readers = list(self._readers.values()), {}
        for r in readers:
            r.close()


def attr_types_by_group(attr_types: Mapping[str, Mapping[str, str]],
                        ) -> dict[str, dict[str, dict[str, str]]]:
    """Split the store's attribute types (keyed by qualified variable name, ``""`` for the
    dataset and ``"<group>/"`` for a group's own attributes) into one mapping per group, keyed
    as :func:`arcoforge.open.restore_attr_types` reads them in that group."""
    out: dict[str, dict[str, dict[str, str]]] = {"": {}}
    for key, types in attr_types.items():
        if key.endswith("/"):
            out.setdefault(key[:-1], {})[""] = dict(types)
            continue
        group, leaf = split_name(key)
        out.setdefault(group, {})[leaf] = dict(types)  # "" (the dataset) stays ""
    return out


def group_attr_types(group_attrs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """The numpy types of each group's own attributes, keyed ``"<group>/"``."""
    out = {}
    for g, attrs in group_attrs.items():
        _, types = attrs_to_json(attrs)
        if types:
            out[g + "/"] = types
    return out


def open_flat(target: Any, groups: Sequence[str], version: str | None = None) -> Any:
    """The raw dataset of a grouped store as the forge sees its sources: the root's variables
    and every group's under qualified names (``"data_01/ku/sig0"``); the root's attributes."""
    import xarray as xr

    root = target.open(version=version)
    variables = dict(root.variables)
    for g in groups:
        if not g:
            continue
        ds = target.open(version=version, group=g)
        variables.update({qualify(g, str(n)): v for n, v in ds.variables.items()})
    return xr.Dataset(variables, attrs=dict(root.attrs))


def write_attr_types(root: Any, attr_types: Mapping[str, Mapping[str, str]],
                     ) -> dict[str, dict[str, str]]:
    """Write each group's share of ``attr_types`` (see :func:`attr_types_by_group`) into its
    ``arcoforge:attr_types`` attribute in the zarr group ``root``; returns the root's share,
    for the caller to write with the rest of the root's attributes."""
    by_group = attr_types_by_group(attr_types)
    for g, types in by_group.items():
        if g and types:
            root.require_group(g).attrs[ATTR_TYPES] = types
    return by_group[""]


def write_group_attrs(root: Any, group_attrs: Mapping[str, Mapping[str, Any]]) -> None:
    """Create every group of ``group_attrs`` in the zarr group ``root`` (also those without
    arrays) and write its attributes."""
    for g, attrs in group_attrs.items():
        node = root.require_group(g)
        json_attrs, _ = attrs_to_json(attrs)
        if json_attrs:
            node.attrs.update(json_attrs)
