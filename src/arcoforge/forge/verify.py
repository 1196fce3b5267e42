"""Check that a built store equals its sources, with a readable diff when it does not.

The reference is what xarray users would do by hand::

    xr.open_mfdataset(sources, combine="nested", concat_dim=DIM, data_vars="minimal",
                      coords="minimal", compat="override")

(merged over MergeDims).  The store is opened with :func:`arcoforge.open_dataset`.  Compared:
variables, dimensions, dtypes, values (NaN-aware, exact), attributes (ignoring ``arcoforge:*``)
and the CF encodings that decide decoding (dtype, scale_factor, add_offset, _FillValue,
missing_value, units, calendar).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.forge.io.fetch import fetch
from arcoforge.forge.recipes import ZarrRecipe
from arcoforge.open import open_dataset

__all__ = ["VerifyReport", "verify", "reference_dataset", "compare_datasets"]

ENCODING_KEYS = ("dtype", "scale_factor", "add_offset", "_FillValue", "missing_value", "units",
                 "calendar")


@dataclass
class VerifyReport:
    """Differences between a store and its sources; empty means equal."""

    target: str
    problems: list[str] = field(default_factory=list)
    checked_variables: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.target} equals its sources ({self.checked_variables} variables)"
        lines = [f"MISMATCH: {self.target} differs from its sources:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def reference_dataset(recipe: ZarrRecipe, workdir: str | None = None) -> xr.Dataset:
    """The sources of ``recipe`` combined by xarray alone (the oracle)."""
    pattern = recipe.pattern
    workdir = workdir or recipe.source_options.cache or tempfile.mkdtemp(prefix="arcoforge-")
    cdim = pattern.concat_dim
    groups: dict[tuple[Any, ...], list[str]] = {}
    for index, url in pattern.items():
        key = tuple((d, p) for d, p in index.positions if cdim is None or d != cdim.name)
        groups.setdefault(key, []).append(fetch(url, recipe.source_options, workdir).path)
    parts = []
    for paths in groups.values():
        if cdim is None:
            parts.append(xr.open_dataset(paths[0], **pattern.open_kwargs))
        else:
            parts.append(
                xr.open_mfdataset(paths, combine="nested", concat_dim=cdim.name,
                                  data_vars="minimal", coords="minimal", compat="override",
                                  **pattern.open_kwargs)
            )
    return parts[0] if len(parts) == 1 else xr.merge(parts, compat="override",
                                                    combine_attrs="override")


def _encoding_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)) and (
            np.asarray(a).dtype == np.asarray(b).dtype or not hasattr(a, "dtype")
        )
    except TypeError:
        return bool(a == b)


def compare_datasets(actual: xr.Dataset, expected: xr.Dataset,
                     encodings: Sequence[str] = ENCODING_KEYS) -> list[str]:
    """A list of human-readable differences (empty if equal)."""
    problems: list[str] = []
    missing = sorted(set(map(str, expected.variables)) - set(map(str, actual.variables)))
    extra = sorted(set(map(str, actual.variables)) - set(map(str, expected.variables)))
    if missing:
        problems.append(f"variables missing from the store: {missing}")
    if extra:
        problems.append(f"variables in the store but not in the sources: {extra}")
    if dict(actual.sizes) != dict(expected.sizes):
        problems.append(f"dimensions differ: store {dict(actual.sizes)} vs sources "
                        f"{dict(expected.sizes)}")
    ours = {k: v for k, v in actual.attrs.items() if not str(k).startswith("arcoforge:")}
    if not _attrs_equal(ours, expected.attrs):
        problems.append(_attr_diff("dataset", ours, expected.attrs))
    for name in expected.variables:
        if name not in actual.variables:
            continue
        a, e = actual[name].variable, expected[name].variable
        where = f"variable {name!r}"
        if a.dims != e.dims:
            problems.append(f"{where}: dims {a.dims} vs {e.dims}")
            continue
        if a.dtype != e.dtype:
            problems.append(f"{where}: dtype {a.dtype} in the store vs {e.dtype} in the sources")
        if a.shape == e.shape:
            av, ev = np.asarray(a.values), np.asarray(e.values)
            same = (np.array_equal(av, ev, equal_nan=True) if av.dtype.kind in "fc"
                    else np.array_equal(av, ev))
            if not same:
                bad = ~((av == ev) | ((av != av) & (ev != ev))) if av.dtype.kind in "fc" \
                    else av != ev
                n = int(np.count_nonzero(bad))
                first = tuple(int(i[0]) for i in np.nonzero(bad)) if n else ()
                problems.append(f"{where}: {n} of {av.size} values differ (first at index "
                                f"{first}: store {av[first]!r} vs sources {ev[first]!r})")
        if not _attrs_equal(a.attrs, e.attrs):
            problems.append(_attr_diff(where, a.attrs, e.attrs))
        for key in encodings:
            ae, ee = a.encoding.get(key), e.encoding.get(key)
            if key == "_FillValue" and ee is None:
                continue  # zarr may record an unused fill value where netCDF has none
            if key == "dtype" and ae is not None and ee is not None:
                if np.dtype(ae) != np.dtype(ee):
                    problems.append(f"{where}: encoded dtype {ae} vs {ee}")
                continue
            if not _encoding_equal(ae, ee):
                problems.append(f"{where}: encoding {key!r} is {ae!r} in the store vs {ee!r}")
    return problems


def _attrs_equal(a: Any, b: Any) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        try:
            if not np.array_equal(np.asarray(a[k]), np.asarray(b[k])):
                return False
        except (TypeError, ValueError):
            if a[k] != b[k]:
                return False
    return True


def _attr_diff(where: str, a: Any, b: Any) -> str:
    keys = sorted(set(a) ^ set(b))
    changed = sorted(k for k in set(a) & set(b) if not _attrs_equal({k: a[k]}, {k: b[k]}))
    return (f"{where}: attributes differ (only on one side: {keys}; changed: "
            f"{[(k, a[k], b[k]) for k in changed][:5]})")


def verify(target: Any, recipe: ZarrRecipe, version: str | None = None) -> VerifyReport:
    """Compare the store at ``target`` with the sources of ``recipe``."""
    report = VerifyReport(str(getattr(target, "url", target)))
    try:
        actual = open_dataset(target, version=version)
    except Exception as err:  # noqa: BLE001 - reported, not raised
        report.problems.append(f"cannot open the store: {err}")
        return report
    expected = reference_dataset(recipe)
    with expected:
        report.problems = compare_datasets(actual, expected)
        report.checked_variables = len(expected.variables)
    return report
