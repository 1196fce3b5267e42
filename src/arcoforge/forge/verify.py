"""Check that a built store equals its sources: an independent oracle that can fail.

:func:`verify` never goes through arcoforge's own readers, plan or schema code.  It fetches each
source file of the recipe's pattern and opens it **on its own** with :func:`xarray.open_dataset`
(the recipe's ``open_kwargs`` and ``file_type``), derives each file's position along the concat
dimension from the file's own length (pattern order, per merge group), and compares, variable by
variable and file by file:

* every variable with the concat dimension: the store's slice at the file's position equals the
  file's values (exact, NaN-aware) and dtype;
* every variable without it: equal in the store and in every file that has it;
* attributes (``arcoforge:*`` ignored; numbers with their numpy type) and the CF encodings
  that decide decoding (dtype, scale_factor, add_offset, _FillValue, missing_value, units,
  calendar) equal those of the first file that has the variable (what ``xarray.concat``/
  ``merge`` keep);
* a variable in several merge groups must hold the same values in each (otherwise the store
  could keep only one of them: a clash naming both files);
* variables only in the store or only in the sources, and the concat length of every merge group.

Before its values are compared each source is checked for integrity: a NetCDF3 file shorter than
its header says fails verification, naming the file.  Values are compared a block of one file's
variable at a time, never whole datasets in memory.  Times that cannot be decoded (an invalid
calendar) are compared as raw numbers, and the report says so.

The store is opened with :func:`arcoforge.open_dataset`, as users open it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.errors import ArcoforgeError, SourceReadError
from arcoforge.forge.io.fetch import LocalSource, fetch
from arcoforge.forge.io.formats import (
    FILE_TYPE_ENGINE,
    dap_source,
    detect_engine,
    grib_open_kwargs,
    remote_engine,
    xarray_engine,
)
from arcoforge.forge.io.redact import redact
from arcoforge.forge.io.remote import remote_open_kwargs
from arcoforge.forge.patterns import Index
from arcoforge.forge.recipes import ZarrRecipe
from arcoforge.forge.targets.zarr import live_reads
from arcoforge.forge.transforms import apply_decoded, as_stored
from arcoforge.open import open_dataset
from arcoforge.provenance import GROUPS, INLINE_VARIABLES, SOURCES, strip_provenance

__all__ = ["VerifyReport", "verify", "reference_dataset", "ENCODING_KEYS"]

#: the encodings that decide how stored numbers decode
ENCODING_KEYS = ("dtype", "scale_factor", "add_offset", "_FillValue", "missing_value", "units",
                 "calendar")

# open options that say how to decode (applied to the store and the sources alike); every other
# open option (group, engine, backend_kwargs, ...) is for the sources only.
_DECODE_KEYS = ("decode_cf", "mask_and_scale", "decode_times", "decode_timedelta", "use_cftime",
                "concat_characters", "decode_coords")

#: the reader xarray opens a source with, per ``file_type`` (``"auto"``: xarray guesses)
_ENGINES: dict[str, str | None] = {**FILE_TYPE_ENGINE, "zarr": "zarr", "auto": None}

#: at most about this many bytes of one variable of one file are compared at a time
_BLOCK_BYTES = 64 * 2**20


@dataclass
class VerifyReport:
    """The result of :func:`verify`: ``ok`` when the store equals its sources.

    ``problems`` are the differences (each readable on its own: variable, file, first differing
    index with both values, count of differing values); ``notes`` say how the comparison was made
    when that matters (e.g. times compared as raw numbers).
    """

    target: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked_variables: int = 0
    checked_files: int = 0

    @property
    def ok(self) -> bool:
        """True when no difference was found."""
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            lines = [f"OK: {self.target} equals its sources ({self.checked_variables} variables, "
                     f"{self.checked_files} files)"]
        else:
            lines = [f"MISMATCH: {self.target} differs from its sources:"]
            lines += [f"  - {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def verify(target: Any, recipe: ZarrRecipe, version: str | None = None, *,
           decode_times: bool | None = None,
           open_kwargs: Mapping[str, Any] | None = None) -> VerifyReport:
    """Compare the store at ``target`` (a published ``version``, default the latest) with the
    sources of ``recipe``, each source file read independently.

    Parameters
    ----------
    target:
        The store (path, URL or Icechunk repository), as given to :func:`arcoforge.open_dataset`.
    recipe:
        The recipe the store was built from; its pattern lists the sources.
    version:
        A published version such as ``"1.2"``.
    decode_times:
        ``None`` (default): decode times, and compare raw numbers if they cannot be decoded
        (the report says so); ``True``/``False``: as given, for the store and every source.
    open_kwargs:
        Extra :func:`xarray.open_dataset` options on top of the recipe's ``open_kwargs``.
        Decoding options (``decode_cf``, ``mask_and_scale``, ``decode_times``, ...) apply to the
        store and the sources alike; the others (``group``, ``engine``, ...) to the sources.
    """
    from arcoforge.forge.io.fetch import forget_checked_copies

    forget_checked_copies()  # cached copies are checked against their servers again
    opts = {**recipe.pattern.open_kwargs, **dict(open_kwargs or {})}
    if decode_times is not None:
        opts["decode_times"] = decode_times
    decode = {k: opts.pop(k) for k in _DECODE_KEYS if k in opts}
    if decode.pop("decode_cf", True) is False:
        decode.update(mask_and_scale=False, decode_times=False, decode_timedelta=False,
                      concat_characters=False, decode_coords=False)
    auto_times = "decode_times" not in decode
    groups = tuple(getattr(recipe, "groups", ()) or ())
    if groups:
        return _verify_groups(target, recipe, version, opts, decode, auto_times, groups)
    return _verify_times(target, recipe, version, opts, decode, auto_times)


def _verify_times(target: Any, recipe: ZarrRecipe, version: str | None,
                  src_opts: dict[str, Any], decode: dict[str, Any], auto_times: bool,
                  group: str | None = None, grouped: bool = False) -> VerifyReport:
    """:func:`_verify`, again with raw times when they cannot be decoded (and say so)."""
    try:
        return _verify(target, recipe, version, src_opts, decode, auto_times, group, grouped)
    except _UndecodableTimes as why:
        report = _verify(target, recipe, version, src_opts, {**decode, "decode_times": False},
                         False, group, grouped)
        report.notes.append(f"times could not be decoded ({why}); the raw time numbers were "
                            "compared (decode_times=False)")
        return report


def _verify_groups(target: Any, recipe: ZarrRecipe, version: str | None,
                   src_opts: dict[str, Any], decode: dict[str, Any], auto_times: bool,
                   groups: tuple[str, ...]) -> VerifyReport:
    """Verify a grouped build (``recipe.groups``) group by group: each Zarr group of the store
    against that group of every source; the store's root attributes against the first
    source's root (its variables too, when the root is one of the groups).  Each source is
    downloaded once for all groups (into a temporary cache when the recipe has none)."""
    if recipe.source_options.cache is None:
        with tempfile.TemporaryDirectory(prefix="arcoforge-verify-cache-") as cache:
            shared = dataclasses.replace(
                recipe, source_options=dataclasses.replace(recipe.source_options, cache=cache))
            return _verify_groups(target, shared, version, src_opts, decode, auto_times,
                                  groups)
    from arcoforge.forge.groups import ALL_GROUPS, file_groups
    from arcoforge.forge.targets.base import resolve_target
    from arcoforge.open import store_groups

    report = VerifyReport(resolve_target(target).url)
    try:
        with live_reads():
            stored = store_groups(target, version=version)
    except Exception as err:  # noqa: BLE001 - reported, not raised
        report.problems.append(f"cannot open the store: {err}")
        return report
    first_url = next(iter(recipe.pattern.items()))[1]
    if groups == (ALL_GROUPS,):
        with tempfile.TemporaryDirectory(prefix="arcoforge-verify-") as workdir:
            src = fetch(first_url, recipe.source_options, workdir)
            groups = tuple(file_groups(src.path, src.url))
    expected = [g for g in groups if g]
    tree = _zarr_groups(target) if version is None else None  # what readers find, not attrs
    present = list(tree) if tree is not None else stored
    parents = {"/".join(g.split("/")[:i]) for g in expected for i in range(1, g.count("/") + 1)}
    missing = [g for g in expected if g not in present]
    extra = [g for g in present if g not in expected
             and not (g in parents and tree is not None and not tree[g])]
    if missing:
        report.problems.append(f"groups missing from the store: {missing}")
    if extra:
        report.problems.append(f"groups in the store but not in the recipe: {extra}")
    if tree is not None and sorted(stored) != sorted(expected):
        report.problems.append(f"the store's {GROUPS!r} attribute lists {stored}, but the "
                               f"recipe builds {expected}")
    for g in ([""] if "" not in groups else []) + list(groups):
        if g and g not in present:
            continue
        part = None
        if g == "":  # the dataset's attributes; its variables when the recipe lists the root
            part = _verify_root_attrs(target, recipe, version, src_opts, first_url,
                                      listed="" in groups)
        if part is None:
            part = _verify_times(target, recipe, version, {**src_opts, "group": g} if g
                                 else src_opts, decode, auto_times, g or None, grouped=True)
        where = f"group {g!r}: " if g else "root group: "
        report.problems += [where + p for p in part.problems]
        report.notes += [where + n for n in part.notes]
        report.checked_files = max(report.checked_files, part.checked_files)
        report.checked_variables += part.checked_variables
    return report


def _zarr_groups(target: Any) -> dict[str, int] | None:
    """Every Zarr group of the latest version of ``target`` (but the root), with its number
    of arrays, listed from the store itself (not its consolidated metadata); None when the
    store cannot be listed."""
    import zarr

    from arcoforge.forge.targets.base import resolve_target

    try:
        with live_reads():
            store = resolve_target(target).zarr_store()
            out: dict[str, int] = {}
            todo = [""]
            while todo:
                path = todo.pop()
                # each group opened on its own: a group's zarr.json may hold consolidated
                # metadata of its children too, which would hide a group added since
                group = zarr.open_group(store, path=path, mode="r", use_consolidated=False)
                if path:
                    out[path] = len(list(group.array_keys()))
                todo += [f"{path}/{name}" if path else name for name in group.group_keys()]
            return out
    except Exception:  # noqa: BLE001 - then the recorded list is all there is
        return None


def _verify_root_attrs(target: Any, recipe: ZarrRecipe, version: str | None,
                       src_opts: dict[str, Any], url: str, listed: bool) -> VerifyReport | None:
    """The root group of a grouped store: the dataset's attributes (from the first source)
    when the root holds no variables to compare -- it is not ``listed`` in the recipe's
    groups, or the sources' root has none; None when its variables need the full comparison."""
    from arcoforge.forge.groups import unlisted_root_attrs
    from arcoforge.forge.targets.base import resolve_target

    report = VerifyReport(resolve_target(target).url)
    with live_reads(), open_dataset(target, version=version, decode_times=False) as store, \
            tempfile.TemporaryDirectory(prefix="arcoforge-verify-") as workdir:
        src = fetch(url, recipe.source_options, workdir)
        kwargs = {k: v for k, v in src_opts.items() if k not in ("group",)}
        with xr.open_dataset(src.path, decode_times=False, **kwargs) as opened:
            if listed and opened.variables:
                return None
            transforms = _bound_transforms(recipe, workdir)
            index = next(iter(recipe.pattern.items()))[0]
            if listed:  # a listed root goes through every transform (e.g. SetAttrs)
                opened.encoding["group"] = ""
                theirs = dict(apply_decoded(transforms, index, opened, src.url).attrs) \
                    if transforms else dict(opened.attrs)
            else:  # only through OnGroup("", ...) steps
                theirs = unlisted_root_attrs(opened.attrs, transforms, index, src.url,
                                             decoded=True)
            ours, theirs = strip_provenance(store.attrs), strip_provenance(theirs)
            if not _attrs_equal(ours, theirs):
                report.problems.append(_attr_diff(f"dataset attributes (vs {src.url})", ours,
                                                  theirs))
        if store.variables:
            report.problems.append("variables at the root that no source root holds: "
                                   f"{sorted(map(str, store.variables))}")
    return report


def reference_dataset(recipe: ZarrRecipe, workdir: str | None = None) -> xr.Dataset:
    """The sources of ``recipe`` combined by ``xr.open_mfdataset`` alone, as users would by hand.

    A convenience for tests and exploration; :func:`verify` does not use it (``compat="override"``
    would hide clashes between merged files).
    """
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


# ---------------------------------------------------------------------------------------------
# the comparison


class _UndecodableTimes(Exception):
    """Times that decode_times=True cannot decode (restart with raw times)."""


@dataclass
class _Provider:
    """Where the sources of one variable were, per merge group."""

    first_url: str
    first_group: str
    has_cdim: bool
    # merge group -> [(url, start, stop)] along the concat dim (or [(url, 0, 0)])
    segments: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    # merge group -> (url, store index along the concat dim or 0) of its first mismatch
    bad: dict[str, tuple[str, int]] = field(default_factory=dict)


class _Problems:
    """Problems, one line per (variable, kind): later files with the same kind of problem are
    counted on the first file's line instead of repeating it."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str], str] = {}
        self._files: dict[tuple[str, str], int] = {}
        self._values: dict[tuple[str, str], int] = {}

    def add(self, key: tuple[str, str], message: str, ndiff: int = 0) -> None:
        if key not in self._first:
            self._first[key] = message
            self._files[key] = 0
            self._values[key] = ndiff
        else:
            self._files[key] += 1
            self._values[key] += ndiff

    def lines(self) -> list[str]:
        out = []
        for key, message in self._first.items():
            if self._files[key]:
                message += f" (and {self._files[key]} more files"
                message += f"; {self._values[key]} differing values in all)" \
                    if self._values[key] else ")"
            out.append(message)
        return out


def _verify(target: Any, recipe: ZarrRecipe, version: str | None, src_opts: dict[str, Any],
            decode: dict[str, Any], auto_times: bool, group: str | None = None,
            grouped: bool = False) -> VerifyReport:
    from arcoforge.forge.targets.base import resolve_target

    report = VerifyReport(resolve_target(target).url)
    try:
        with live_reads():  # the store at the URL, as every reader of it sees it
            store = _open_checked(lambda **kw: open_dataset(target, version=version,
                                                            group=group, **kw),
                                  decode, auto_times, "the store")
    except _UndecodableTimes:
        raise
    except Exception as err:  # noqa: BLE001 - reported, not raised
        report.problems.append(f"cannot open the store: {err}")
        return report
    # downloads go to the recipe's local cache if it has one, else here (removed file by file)
    with store, tempfile.TemporaryDirectory(prefix="arcoforge-verify-") as workdir:
        _Comparison(store, recipe, src_opts, decode, auto_times, report, workdir,
                    grouped).run()
    return report


def _bound_transforms(recipe: ZarrRecipe, workdir: str) -> tuple[Any, ...]:
    """The recipe's transforms; those that need every file (DropDuplicateSteps, ...) bound
    to the sources by the forge's own scan (what they bind is small: steps to drop, units)."""
    transforms = tuple(getattr(recipe, "transforms", ()) or ())
    if any(t.needs_all_files for t in transforms):
        from arcoforge.forge.bake import scan_sources

        _, transforms = scan_sources(recipe, workdir)
    return transforms


def _open_checked(opener: Any, decode: dict[str, Any], auto_times: bool, what: str) -> Any:
    """``opener(**decode)``; when times are left to the default and only decode_times=False
    opens it, raise :class:`_UndecodableTimes`."""
    try:
        return opener(**decode)
    except Exception as err:
        if not auto_times:
            raise
        try:
            opener(**{**decode, "decode_times": False}).close()
        except Exception:  # noqa: BLE001 - the first error is the one to report
            raise err from None
        raise _UndecodableTimes(f"{what}: {err}") from err


def _group_label(pattern: Any, index: Any, cdim: str | None) -> str:
    parts = [f"{d}={pattern.combine_dims[i].keys[p]!r}"
             for i, (d, p) in enumerate(index.positions) if d != cdim]
    return ", ".join(parts) or "all files"


class _Comparison:
    """One pass over the sources, file by file, variable by variable."""

    def __init__(self, store: xr.Dataset, recipe: ZarrRecipe, src_opts: dict[str, Any],
                 decode: dict[str, Any], auto_times: bool, report: VerifyReport,
                 workdir: str, grouped: bool = False) -> None:
        self.store = store
        self.recipe = recipe
        self.pattern = recipe.pattern
        #: sha256 of each source when the store was built (its provenance), by redacted URL
        self.built = {str(s.get("url")): str(s.get("sha256") or "")
                      for s in store.attrs.get(SOURCES) or [] if isinstance(s, Mapping)}
        #: a store of references into the sources (they are read at every open)
        self.virtual = INLINE_VARIABLES in store.attrs or type(recipe).__name__ == "VirtualRecipe"
        self.cdim = self.pattern.concat_dim.name if self.pattern.concat_dim else None
        self.src_opts = dict(src_opts)
        self.engine = self.src_opts.pop("engine", None) or _ENGINES.get(self.pattern.file_type)
        self.src_opts.setdefault("cache", False)
        self.decode = decode
        self.auto_times = auto_times
        self.report = report
        self.workdir = workdir
        self.problems = _Problems()
        self.providers: dict[str, _Provider] = {}
        self.missing: dict[str, str] = {}  # variable -> first file that has it
        self.unchecked: set[str] = set()  # variables of files that failed the integrity check
        #: units/calendar that bounds variables inherit, in the store and in the current file
        self._store_inherit = _inherited_time_attrs(store)
        self._file_inherit: dict[str, dict[str, Any]] = {}
        #: the recipe's transforms, applied to each source as xarray opened it (decoded)
        self.transforms = _bound_transforms(recipe, workdir)
        #: value-changing steps: the sources are compared as a store written from them reads
        #: back (packed values rounded to the packing's steps, fill values in its dtype)
        self.as_stored = any(not t.metadata_only for t in self.transforms) and \
            decode.get("mask_and_scale", True) is not False  # (decode_cf=False sets it False)
        self.index_of = {url: index for index, url in self.pattern.items()}
        #: a group of a grouped build: it may hold only variables without the concat dim
        self.grouped = grouped

    # -- the walk ----------------------------------------------------------------------------
    def run(self) -> None:
        groups: dict[str, list[str]] = {}
        for index, url in self.pattern.items():
            groups.setdefault(_group_label(self.pattern, index, self.cdim), []).append(url)
        first = True
        for label, urls in groups.items():
            length = self._group(label, urls, first)
            first = False
            if length is not None and self.cdim is not None and self.cdim in self.store.dims \
                    and length != self.store.sizes[self.cdim]:
                self.report.problems.append(
                    f"dimension {self.cdim!r}: the store has {self.store.sizes[self.cdim]} steps "
                    f"but the {len(urls)} file{'s' if len(urls) > 1 else ''} of merge group "
                    f"{label} ({urls[0]}"
                    f"{', ...' if len(urls) > 1 else ''}) have {length}")
        self._clashes()
        self.report.problems += self.problems.lines()
        if self.missing:
            self.report.problems.append(
                "variables missing from the store: "
                + ", ".join(f"{n!r} (in {u})" for n, u in self.missing.items()))
        extra = sorted(set(map(str, self.store.variables)) - set(self.providers)
                       - set(self.missing) - self.unchecked)
        if extra:
            self.report.problems.append(f"variables in the store but in no source: {extra}")
        self.report.checked_variables = len(self.providers)

    def _same_as_built(self, src: LocalSource) -> None:
        """Compare a source's sha256 with the one recorded when the store was built.  A store
        of virtual references reads the sources themselves: one that changed changes the
        published version, whatever its values now are (a problem).  A copy holds what the file
        was; the values tell whether it still equals it (a note)."""
        built = self.built.get(src.url)
        if not built or not src.sha256 or built == src.sha256:
            return
        if self.virtual:
            self.report.problems.append(
                f"{src.url} changed since the store was built (sha256 {built[:12]}... then, "
                f"{src.sha256[:12]}... now): the store's references read the new bytes, so its "
                "published version no longer holds what was built; build it again")
        else:
            self.report.notes.append(
                f"{src.url} changed since the store was built (sha256 {built[:12]}... then, "
                f"{src.sha256[:12]}... now); the store was compared with the file as it is now")

    def _group(self, label: str, urls: Sequence[str], first: bool) -> int | None:
        """Compare the files of one merge group; their total length along the concat dim."""
        offset = 0
        for url in urls:
            remote = remote_engine(url, self.pattern.file_type)
            try:
                src = LocalSource(redact(url), url, 0, "") if remote else \
                    fetch(url, self.recipe.source_options, self.workdir)
            except ArcoforgeError as err:
                self.report.problems.append(f"cannot fetch a source, so later files of merge "
                                            f"group {label} cannot be placed: {err}")
                return None
            intact = True if remote else self._intact(src)
            if not remote:
                self._same_as_built(src)
            try:
                ds = _open_checked(self._opener(src.path, remote), self.decode, self.auto_times,
                                   src.url)
            except _UndecodableTimes:
                raise
            except Exception as err:  # noqa: BLE001 - reported, not raised
                self.report.problems.append(f"cannot open {src.url} on its own: {err}; later "
                                            f"files of merge group {label} cannot be placed")
                return None
            opened = ds
            if self.transforms:
                ds.encoding["group"] = str(self.src_opts.get("group") or "")
                ds = apply_decoded(self.transforms, self.index_of.get(url, Index()), ds, src.url)
                if self.as_stored:
                    ds = as_stored(ds, **self.decode)
            with opened:
                if self.cdim is not None and self.cdim not in ds.dims and not self.grouped:
                    self.report.problems.append(
                        f"{src.url} has no dimension {self.cdim!r} to concatenate along")
                    return None
                n = int(ds.sizes.get(self.cdim, 0)) if self.cdim is not None else 0
                if first:
                    self._dataset_attrs(ds, src.url)
                    first = False
                self._file_inherit = _inherited_time_attrs(ds)
                for name in map(str, ds.variables):
                    if not intact:  # its values cannot be trusted: only note what it holds
                        if name in self.store.variables:
                            self.unchecked.add(name)
                        else:
                            self.missing.setdefault(name, src.url)
                        continue
                    self._variable(name, ds[name].variable, src.url, label, offset, n)
                self.report.checked_files += intact
            if os.path.dirname(os.path.abspath(src.path)) == os.path.abspath(self.workdir):
                os.remove(src.path)  # a download of ours, not a cache: free the disk now
            offset += n
        return offset if self.cdim is not None else None

    def _opener(self, path: str, remote: str | None = None) -> Any:
        def opener(**decode: Any) -> xr.Dataset:
            kwargs = {**self.src_opts, **decode}
            if remote == "opendap":
                engine, target = dap_source(path)
                return xr.open_dataset(target, engine=engine, **kwargs)
            if remote == "zarr":
                kwargs = remote_open_kwargs(path, "zarr", kwargs, self.recipe.source_options)
                kwargs.pop("cache", None)
                return xr.open_dataset(path, engine="zarr", **kwargs)
            file_engine = self.engine
            if file_engine is None:  # xarray guesses, but not GRIB's side files or HDF4
                detected = detect_engine(path, "auto", path)
                file_engine = detected if detected in ("cfgrib", FILE_TYPE_ENGINE["hdf4"]) \
                    else None
            if file_engine == "cfgrib":  # its index in our work folder, never beside the source
                kwargs = grib_open_kwargs(kwargs, path, self.workdir)
            if file_engine is not None:
                kwargs["engine"] = xarray_engine(file_engine)
            return xr.open_dataset(path, **kwargs)
        return opener

    def _intact(self, src: LocalSource) -> bool:
        """Whether ``src`` is complete; a problem naming it when not."""
        try:
            _check_complete(src.path, src.url)
        except SourceReadError as err:  # TruncatedFileError, or unreadable
            self.report.problems.append(f"{err} (its values were not compared)")
            return False
        return True

    # -- what is compared --------------------------------------------------------------------
    def _dataset_attrs(self, ds: xr.Dataset, url: str) -> None:
        # arcoforge:* attributes of a source (an arcoforge store as input) are not copied
        ours, theirs = strip_provenance(self.store.attrs), strip_provenance(ds.attrs)
        if not _attrs_equal(ours, theirs):
            self.report.problems.append(_attr_diff(f"dataset attributes (vs {url})", ours,
                                                   theirs))

    def _variable(self, name: str, fv: xr.Variable, url: str, label: str, offset: int,
                  n: int) -> None:
        has_cdim = self.cdim is not None and self.cdim in fv.dims
        prov = self.providers.get(name)
        if prov is None:
            if name not in self.store.variables:
                self.missing.setdefault(name, url)
                return
            prov = self.providers[name] = _Provider(url, label, has_cdim)
        elif prov.has_cdim != has_cdim:
            self.problems.add((name, "cdim"), f"variable {name!r}: has dimension {self.cdim!r} "
                              f"in {prov.first_url} but not in {url}")
            return
        start, stop = (offset, offset + n) if has_cdim else (0, 0)
        prov.segments.setdefault(label, []).append((url, start, stop))
        sv = self.store[name].variable
        if url == prov.first_url:
            self._metadata(name, sv, fv, url)
        if sv.dims != fv.dims:
            self.problems.add((name, "dims"), f"variable {name!r}: dims {sv.dims} in the store "
                              f"vs {fv.dims} in {url}")
            prov.bad.setdefault(label, (url, start))
            return
        if sv.dtype != fv.dtype and {sv.dtype.kind, fv.dtype.kind} not in ({"M", "O"},
                                                                           {"T", "O"}):
            # (datetime64 vs cftime objects: the same dates, decoded differently by xarray
            # where a range crosses the end of datetime64[ns]; variable-length strings: Zarr
            # v3 reads them as numpy StringDType, netCDF as objects; values are compared)
            self.problems.add((name, "dtype"), f"variable {name!r}: dtype {sv.dtype} in the "
                              f"store vs {fv.dtype} in {url}")
        axis = fv.dims.index(self.cdim) if has_cdim else None
        expected = tuple(stop if i == axis else s for i, s in enumerate(fv.shape))
        if any(s < e if i == axis else s != e for i, (s, e) in enumerate(zip(sv.shape,
                                                                           expected))):
            where = (f" (the file is at {self.cdim}[{start}:{stop}] of the store)"
                     if has_cdim else "")
            self.problems.add((name, "shape"), f"variable {name!r}: shape {sv.shape} in the "
                              f"store cannot hold {fv.shape} of {url}{where}")
            prov.bad.setdefault(label, (url, start))
            return
        first_bad = self._values(name, sv, fv, url, axis, start)
        if first_bad is not None:
            prov.bad.setdefault(label, (url, first_bad))

    def _metadata(self, name: str, sv: xr.Variable, fv: xr.Variable, url: str) -> None:
        ours = strip_provenance(sv.attrs)
        if not _attrs_equal(ours, fv.attrs):
            self.problems.add((name, "attrs"), _attr_diff(f"variable {name!r} (vs {url})", ours,
                                                          fv.attrs))
        for key in ENCODING_KEYS:
            ae, ee = sv.encoding.get(key), fv.encoding.get(key)
            if key == "_FillValue" and ee is None:
                continue  # zarr may record an unused fill value where netCDF has none
            if self.transforms and key not in fv.encoding:
                continue  # a transform made this variable: it has no source encoding
            if key == "dtype" and ae is not None and ee is not None:
                # byte order is how bytes are laid out, not what they hold
                if np.dtype(ae).newbyteorder("=") != np.dtype(ee).newbyteorder("="):
                    self.problems.add((name, "enc:dtype"), f"variable {name!r}: encoded dtype "
                                      f"{ae} in the store vs {ee} in {url}")
                continue
            if not _encoding_equal(ae, ee):
                self.problems.add((name, f"enc:{key}"), f"variable {name!r}: encoding {key!r} "
                                  f"is {ae!r} in the store vs {ee!r} in {url}")

    def _values(self, name: str, sv: xr.Variable, fv: xr.Variable, url: str,
                axis: int | None, offset: int) -> int | None:
        """Compare block by block; the store index along the concat dim (0 without one) of
        the first difference, or None when equal."""
        ndiff = 0
        first: tuple[int, ...] | None = None
        pair: tuple[Any, Any] = (None, None)
        for key in _blocks(fv.shape, fv.dtype.itemsize, axis if axis is not None else 0):
            skey = tuple(slice(k.start + offset, k.stop + offset) if i == axis else k
                         for i, k in enumerate(key))
            a = np.asarray(sv[skey].values)
            b = _in_units_of(np.asarray(fv[key].values),
                             {**self._file_inherit.get(name, {}), **fv.attrs},
                             {**self._store_inherit.get(name, {}), **sv.attrs})
            bad = _differ(a, b)
            count = int(np.count_nonzero(bad))
            if count and first is None:
                local = tuple(int(i[0]) for i in np.nonzero(bad)) if bad.ndim else ()
                first = tuple(li + sk.start for li, sk in zip(local, skey))
                pair = (a[local], b[local])
            ndiff += count
        if first is None:
            return None
        self.problems.add((name, "values"),
                          f"variable {name!r}: {ndiff} of {fv.size} values differ from {url} "
                          f"(first at store index {first}: store {_show(pair[0])} vs source "
                          f"{_show(pair[1])})",
                          ndiff)
        return first[axis] if axis is not None else 0

    def _clashes(self) -> None:
        """A variable in two merge groups that do not agree: name a file of each."""
        for name, prov in self.providers.items():
            if len(prov.segments) < 2:
                continue
            labels = list(prov.segments)
            lengths = {lb: max(s[2] for s in prov.segments[lb]) for lb in labels}
            ref = next((lb for lb in labels if lb not in prov.bad), labels[0])
            for label in labels:
                if label == ref:
                    continue
                if prov.has_cdim and lengths[label] != lengths[ref]:
                    detail = f"{lengths[ref]} vs {lengths[label]} steps along {self.cdim!r}"
                    a, b = prov.segments[ref][0][0], prov.segments[label][0][0]
                elif label in prov.bad and ref not in prov.bad:
                    b, pos = prov.bad[label]
                    a = next((u for u, s, e in prov.segments[ref] if s <= pos < e),
                             prov.segments[ref][0][0])
                    detail = "different values"
                else:
                    continue
                self.report.problems.append(
                    f"variable {name!r} is in merge groups {ref} and {label} with {detail}: "
                    f"{a} and {b} (the store can hold only one of them)")


def _blocks(shape: tuple[int, ...], itemsize: int, axis: int) -> Iterator[tuple[slice, ...]]:
    """Keys covering ``shape`` in blocks of about :data:`_BLOCK_BYTES` along ``axis``."""
    if not shape:
        yield ()
        return
    row = itemsize * math.prod(s for i, s in enumerate(shape) if i != axis)
    step = max(1, _BLOCK_BYTES // max(1, row))
    full = [slice(0, s) for s in shape]
    for start in range(0, max(shape[axis], 1), step):
        key = list(full)
        key[axis] = slice(start, min(start + step, shape[axis]))
        yield tuple(key)


def _inherited_time_attrs(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """CF bounds (and climatology) variables inherit their parent's ``units`` and ``calendar``:
    ``{bounds name: {"units": ..., "calendar": ...}}`` for the raw time numbers of ``ds``."""
    out: dict[str, dict[str, Any]] = {}
    for var in ds.variables.values():
        for key in ("bounds", "climatology"):
            child = var.attrs.get(key)
            if isinstance(child, str) and child in ds.variables:
                out[child] = {k: var.attrs[k] for k in ("units", "calendar") if k in var.attrs}
    return out


def _in_units_of(values: np.ndarray, attrs: Mapping[str, Any],
                 store_attrs: Mapping[str, Any]) -> np.ndarray:
    """Raw CF time numbers of a source re-expressed in the store's time units (when times are
    compared undecoded and a file counts from its own epoch or in other units): what the dates
    are, not how a file happened to count them.  Other values are returned unchanged."""
    units, target = attrs.get("units"), store_attrs.get("units")
    if (units == target or not isinstance(units, str) or not isinstance(target, str)
            or " since " not in units or " since " not in target or values.dtype.kind not in "iuf"
            or values.size == 0):
        return values
    import cftime

    calendar = str(attrs.get("calendar", "standard"))
    fill = [attrs.get(k) for k in ("_FillValue", "missing_value") if attrs.get(k) is not None]
    valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    for f in fill:
        valid &= values != f
    out = values.astype(np.float64, copy=True)
    try:
        dates = cftime.num2date(values[valid], units, calendar)
        out[valid] = np.asarray(cftime.date2num(dates, target, calendar), dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return values  # not decodable even by cftime: compare as they are
    if values.dtype.kind in "iu" and np.all(out[valid] == np.round(out[valid])):
        return out.astype(values.dtype)
    return out


def _differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where ``a`` and ``b`` differ (NaN equals NaN, NaT equals NaT; a datetime64 and a cftime
    date are equal when they name the same instant)."""
    if {a.dtype.kind, b.dtype.kind} == {"M", "O"}:
        a, b = _as_iso(a), _as_iso(b)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return ~((a == b) | (np.isnan(a) & np.isnan(b)))
    if a.dtype.kind in "mM" and b.dtype.kind in "mM":
        return ~((a == b) | (np.isnat(a) & np.isnat(b)))
    try:
        return np.asarray(a != b, dtype=bool).reshape(a.shape)
    except (TypeError, ValueError):  # objects that refuse to compare (cftime of two calendars)
        return np.array([_ne(x, y) for x, y in zip(a.ravel(), b.ravel())],
                        dtype=bool).reshape(a.shape)


def _as_iso(values: np.ndarray) -> np.ndarray:
    """Dates as ISO strings to the second (datetime64 or cftime objects alike; NaT -> "")."""
    if values.dtype.kind == "M":
        out = np.datetime_as_string(values.astype("datetime64[s]"), unit="s")
        return np.where(np.isnat(values), "", out)
    return np.array(["" if v is None else v.isoformat(sep="T", timespec="seconds")
                     if hasattr(v, "isoformat") else str(v) for v in values.ravel()],
                    dtype=object).reshape(values.shape)


def _ne(x: Any, y: Any) -> bool:
    try:
        return bool(x != y)
    except (TypeError, ValueError):
        return True


def _show(value: Any) -> str:
    """A value for a diff line: numbers plainly, objects (cftime dates) with their type."""
    return str(value) if isinstance(value, np.generic | int | float | str | bytes) \
        else repr(value)


def _encoding_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)) and (
            np.asarray(a).dtype == np.asarray(b).dtype or not hasattr(a, "dtype")
        )
    except TypeError:
        return bool(a == b)


def _attrs_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        try:
            try:  # NaN equals NaN (valid_max = NaN, actual_range of an all-missing file)
                same = np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=True)
            except TypeError:  # equal_nan of text
                same = np.array_equal(np.asarray(a[k]), np.asarray(b[k]))
            if not same or _numeric_type(a[k]) != _numeric_type(b[k]):
                return False
        except (TypeError, ValueError):
            if a[k] != b[k]:
                return False
    return True


def _numeric_type(value: Any) -> np.dtype | None:
    """The numpy type of a numeric attribute (a float32 ``scale_factor`` that came back as a
    float64 decodes packed data to another dtype); None for text and other objects."""
    try:
        dtype = np.asarray(value).dtype
    except (TypeError, ValueError):
        return None
    return dtype if dtype.kind in "biufc" else None


def _attr_diff(where: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = sorted(set(a) ^ set(b))
    changed = sorted(k for k in set(a) & set(b) if not _attrs_equal({k: a[k]}, {k: b[k]}))
    return (f"{where}: attributes differ (only on one side: {keys}; changed (store, source): "
            f"{[(k, _typed(a[k]), _typed(b[k])) for k in changed][:5]})")


def _typed(value: Any) -> Any:
    """An attribute for a diff: numbers with their numpy type (``float32(0.01)``), so that a
    change of type alone is visible; other values as they are."""
    dtype = _numeric_type(value)
    if dtype is None or np.ndim(value):
        return value
    return f"{dtype.name}({np.asarray(value).item()!r})"


# ---------------------------------------------------------------------------------------------
# source integrity


def _check_complete(path: str, url: str) -> None:
    """Raise :class:`TruncatedFileError` when the file at ``path`` is shorter than its own
    header says (NetCDF3 record counts, HDF5 end-of-file address)."""
    from arcoforge.forge.io.integrity import check_complete

    check_complete(path, url)
