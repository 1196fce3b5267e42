"""pangeo-forge-recipes 0.10's ``transforms``: the Beam-style recipe, compiled to arcoforge.

A 0.10 recipe is a chain of Apache Beam transforms::

    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | beam.Map(my_preprocess)                 # any per-dataset step (Map, MapTuple, ...)
        | StoreToZarr(store_name="x.zarr", combine_dims=pattern.combine_dim_keys,
                      target_chunks={"time": 12})
        | ConsolidateDimensionCoordinates()
        | ConsolidateMetadata()
    )

These classes are real ``beam.PTransform`` subclasses (so the ``|`` chain builds as it does with
pangeo-forge-recipes), but they are not run by Beam: ``arcoforge bake recipe.py --target ...``
(or a feedstock's ``meta.yaml``) compiles the chain with :func:`compile_chain` into an
:class:`arcoforge.ZarrRecipe` -- the files of ``beam.Create``, the fetch options of
``OpenURLWithFSSpec``, the file type and ``xarray_open_kwargs`` of ``OpenWithXarray``, the steps
in between as transforms, and ``StoreToZarr``'s chunks, attributes and encoding -- and bakes it
on any arcoforge engine (local, Dask, Beam, Prefect).

Steps between ``OpenWithXarray`` and ``StoreToZarr`` may be ``beam.Map``, ``beam.MapTuple``,
``beam.FlatMap`` or ``beam.ParDo`` over ``(index, dataset)`` pairs, or a custom ``PTransform``
whose ``expand`` applies such steps; each must turn one pair into one pair.  What cannot be
compiled is refused with :class:`TransformNotSupportedError` saying why.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from arcoforge.errors import ConfigError

from .patterns import FileType
from .types import CombineOp, Dimension, Index, Indexed, T  # noqa: F401 - 0.10.8 re-exports them

try:  # the chain needs Beam's PTransform to build with `|`; recipe modules import beam too
    import apache_beam

    _beam: ModuleType | None = apache_beam
    _PTransform: Any = apache_beam.PTransform
except ImportError:  # pragma: no cover - beam is in the test extra
    _beam = None

    class _PTransform:  # type: ignore[no-redef]
        """Stand-in when Apache Beam is not installed (chains then cannot be built)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

__all__ = [
    "TransformNotSupportedError",
    "CombineReferences",
    "ConsolidateDimensionCoordinates",
    "ConsolidateMetadata",
    "DatasetToSchema",
    "DetermineSchema",
    "IndexItems",
    "MapWithConcurrencyLimit",
    "OpenURLWithFSSpec",
    "OpenWithKerchunk",
    "OpenWithXarray",
    "PrepareZarrTarget",
    "Rechunk",
    "RequiredAtRuntimeDefault",
    "StoreDatasetFragments",
    "StoreToZarr",
    "WriteCombinedReference",
    "WriteReference",
    "compile_chain",
    "is_chain",
]


class TransformNotSupportedError(ConfigError):
    """A pangeo-forge-recipes transform (or chain) that arcoforge's compat layer cannot run."""


class RequiredAtRuntimeDefault:
    """Placeholder for an option the runner fills in (``target_root``: ``--target``)."""

    def __repr__(self) -> str:
        return "RequiredAtRuntimeDefault()"


class _Compat(_PTransform):
    """Base of the compat transforms: built into chains, compiled by arcoforge, never expanded
    by a Beam pipeline."""

    def __post_init__(self) -> None:
        _PTransform.__init__(self)

    def expand(self, pcoll: Any) -> Any:
        raise TransformNotSupportedError(
            f"{type(self).__name__} is arcoforge's pangeo-forge compat transform: the chain is "
            "not run by a Beam pipeline directly. Bake it with `arcoforge bake recipe.py "
            "--target URL` (any engine, --engine beam included)")


class _Internal(_Compat):
    """A pangeo-forge building block used inside StoreToZarr (not in recipes themselves)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TransformNotSupportedError(
            f"pangeo_forge_recipes.transforms.{type(self).__name__} is an internal step of "
            "StoreToZarr; arcoforge compiles whole chains (beam.Create(pattern.items()) | "
            "OpenURLWithFSSpec() | OpenWithXarray(...) | StoreToZarr(...)), not this piece")


@dataclass
class OpenURLWithFSSpec(_Compat):
    """Fetch each URL (arcoforge: into its verified input cache)."""

    cache: str | Any | None = None
    secrets: dict[str, Any] | None = None
    open_kwargs: dict[str, Any] | None = None
    max_concurrency: int | None = None
    fsspec_sync_patch: bool = False


@dataclass
class OpenWithXarray(_Compat):
    """Open each fetched file with xarray (arcoforge: the recipe's file type and options)."""

    file_type: Any = None
    load: bool = False
    copy_to_local: bool = False
    xarray_open_kwargs: dict[str, Any] | None = field(default_factory=dict)


@dataclass
class OpenWithKerchunk(_Compat):
    """Open each file as kerchunk references (arcoforge: a virtual recipe)."""

    file_type: Any = None
    inline_threshold: int | None = 300
    storage_options: dict[str, Any] | None = field(default_factory=dict)
    remote_protocol: str | None = None
    kerchunk_open_kwargs: dict[str, Any] | None = field(default_factory=dict)


@dataclass
class StoreToZarr(_Compat):
    """Write the datasets to one Zarr store (arcoforge: the recipe's target options)."""

    combine_dims: list[Dimension] = field(default_factory=list)
    store_name: str = ""
    target_root: Any = field(default_factory=RequiredAtRuntimeDefault)
    target_chunks: dict[str, int] = field(default_factory=dict)
    dynamic_chunking_fn: Callable[..., Any] | None = None
    dynamic_chunking_fn_kwargs: dict[str, Any] | None = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)
    encoding: dict[str, Any] | None = field(default_factory=dict)
    append_dim: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_chunks and self.dynamic_chunking_fn:
            raise ValueError("Passing both `target_chunks` and `dynamic_chunking_fn` not allowed.")


@dataclass
class WriteCombinedReference(_Compat):
    """Combine kerchunk references into one store (arcoforge: a virtual recipe)."""

    store_name: str = ""
    concat_dims: list[str] = field(default_factory=list)
    identical_dims: list[str] = field(default_factory=list)
    target_options: dict[str, Any] | None = field(default_factory=dict)
    remote_options: dict[str, Any] | None = field(default_factory=dict)
    remote_protocol: str | None = None
    target_root: Any = field(default_factory=RequiredAtRuntimeDefault)
    output_file_name: str = "reference.json"
    mzz_kwargs: dict[str, Any] = field(default_factory=dict)


class ConsolidateDimensionCoordinates(_Compat):
    """Accepted after StoreToZarr: arcoforge always writes dimension coordinates whole."""

    def __init__(self) -> None:
        _PTransform.__init__(self)


@dataclass
class ConsolidateMetadata(_Compat):
    """Accepted after StoreToZarr: arcoforge always consolidates metadata."""


class MapWithConcurrencyLimit(_Internal):
    """Internal to pangeo-forge (refused; see :class:`_Internal`)."""


class DatasetToSchema(_Internal):
    """Internal to StoreToZarr (refused)."""


class DetermineSchema(_Internal):
    """Internal to StoreToZarr (refused)."""


class IndexItems(_Internal):
    """Internal to StoreToZarr (refused)."""


class PrepareZarrTarget(_Internal):
    """Internal to StoreToZarr (refused)."""


class StoreDatasetFragments(_Internal):
    """Internal to StoreToZarr (refused)."""


class Rechunk(_Internal):
    """Internal to StoreToZarr (refused)."""


class CombineReferences(_Internal):
    """Internal to WriteCombinedReference (refused)."""


class WriteReference(_Internal):
    """Internal to WriteCombinedReference (refused)."""


# -- compiling a chain -------------------------------------------------------------------------


def _parts(t: Any) -> Iterator[Any]:
    """The transforms of a ``|`` chain in order (labels ``"x" >> t`` unwrapped)."""
    inner = getattr(t, "_parts", None)
    if inner is not None and _beam is not None and \
            type(t).__name__ == "_ChainedPTransform":
        for p in inner:
            yield from _parts(p)
    elif type(t).__name__ == "_NamedPTransform" and hasattr(t, "transform"):
        yield from _parts(t.transform)
    else:
        yield t


def is_chain(obj: Any) -> bool:
    """Whether ``obj`` is a Beam chain that uses this package's transforms (a 0.10 recipe)."""
    if _beam is None or not isinstance(obj, _beam.PTransform):
        return False
    return any(isinstance(p, (StoreToZarr, WriteCombinedReference)) for p in _parts(obj))


class _Recorder:
    """A stand-in PCollection for a custom PTransform's ``expand``: records its steps."""

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def __or__(self, other: Any) -> _Recorder:
        for p in _parts(other):
            _add_step(self, p)
        return self

    def apply(self, transform: Any, *args: Any, **kwargs: Any) -> _Recorder:
        return self | transform


def _add_step(rec: _Recorder, p: Any) -> None:
    if isinstance(p, _Compat):
        raise TransformNotSupportedError(
            f"{type(p).__name__} inside a custom step cannot be compiled; put it in the main "
            "chain")
    if _beam is not None and isinstance(p, _beam.ParDo):
        rec.steps.append(p)
        return
    if _beam is not None and isinstance(p, _beam.Reshuffle):
        return  # redistributes elements between workers: nothing to do per dataset
    if _beam is not None and isinstance(p, _beam.GroupByKey | _beam.CombinePerKey
                                        | _beam.CombineGlobally | _beam.Flatten):
        raise TransformNotSupportedError(
            f"{type(p).__name__} combines datasets of several inputs; arcoforge compiles "
            "steps that map each (index, dataset) to one: combine in a step after the build")
    expand = getattr(p, "expand", None)
    if expand is None:
        raise TransformNotSupportedError(f"cannot compile the step {p!r} of the chain")
    out = expand(rec)
    if out is not rec:
        raise TransformNotSupportedError(
            f"the custom step {type(p).__name__}.expand must apply per-dataset steps to its "
            "input and return the result (e.g. `return pcoll | beam.Map(fn)`); arcoforge "
            "cannot compile steps that combine datasets")


def _set_up(fn: Any) -> None:
    """Call a DoFn's ``setup()`` once per process and object, as a Beam worker does before its
    first element (it loads models, opens clients...)."""
    if getattr(fn, "_arcoforge_set_up", None) == os.getpid():
        return
    setup = getattr(fn, "setup", None)
    if callable(setup):
        setup()
    fn._arcoforge_set_up = os.getpid()


def _label(step: Any) -> str:
    return str(getattr(step, "label", None) or type(step).__name__)


def _steps_transform(steps: Sequence[Any], to_pangeo: Mapping[Any, Index]) -> Any:
    from arcoforge.forge.transforms import Function

    labels = [_label(s) for s in steps]

    def beam_steps(index: Any, ds: Any) -> Any:
        element = (to_pangeo.get(index, Index()), ds)
        for step, label in zip(steps, labels):
            _set_up(step.fn)
            out = list(step.fn.process(element, *step.args, **step.kwargs))
            if len(out) != 1:
                raise TransformNotSupportedError(
                    f"the step {label} turned one (index, dataset) pair into {len(out)} "
                    "outputs; arcoforge compiles steps that map each dataset to one dataset")
            if not isinstance(out[0], tuple) or len(out[0]) != 2:
                raise TransformNotSupportedError(
                    f"the step {label} returned a {type(out[0]).__name__}, not an (index, "
                    "dataset) pair; a step of a pangeo-forge chain receives and returns "
                    "(index, dataset): return (index, ds)")
            element = out[0]
        return element[1]

    beam_steps.__qualname__ = "beam[" + " | ".join(labels) + "]"
    # the hash covers the steps' code: each DoFn's function source where it has one
    fn = Function(beam_steps)
    fn.describe = lambda: _describe_steps(steps, labels)  # type: ignore[method-assign]
    return fn


def _describe_steps(steps: Sequence[Any], labels: Sequence[str]) -> dict[str, Any]:
    import hashlib
    import inspect

    h = hashlib.sha256()
    for step in steps:
        target = getattr(step.fn, "_fn", step.fn)
        for cell in getattr(target, "__closure__", None) or ():
            try:
                h.update(inspect.getsource(cell.cell_contents).encode())
            except (TypeError, OSError, ValueError):
                h.update(repr(cell.cell_contents).encode())
        try:
            h.update(inspect.getsource(type(step.fn)).encode())
        except (TypeError, OSError):
            pass
        h.update(repr((step.args, step.kwargs)).encode())
    return {"transform": "BeamSteps", "steps": list(labels), "source_sha256": h.hexdigest()[:16]}


def _pattern_from_items(items: Sequence[Any], file_type: str,
                        open_kwargs: Mapping[str, Any]) -> tuple[Any, dict[Any, Index]]:
    """An arcoforge FilePattern for ``beam.Create(pattern.items())``'s ``(Index, url)`` pairs,
    and the map from arcoforge indexes back to pangeo ones (what the steps receive)."""
    from arcoforge.forge.patterns import ConcatDim, FilePattern, MergeDim

    if not items:
        raise TransformNotSupportedError("beam.Create(...) holds no (index, url) items")
    dims: list[Dimension] = []
    for index, url in items:
        if not isinstance(index, Index) or not isinstance(url, str):
            raise TransformNotSupportedError(
                "the chain must start with beam.Create(pattern.items()) of a pangeo_forge_recipes "
                f"FilePattern; got an item {(index, url)!r}")
        for d in index:
            if d not in dims:
                dims.append(d)
    concat = [d for d in dims if d.operation == CombineOp.CONCAT]
    if len(concat) > 1:
        raise TransformNotSupportedError(
            f"the pattern concatenates along {[d.name for d in concat]}; arcoforge builds one "
            "concat dimension per recipe")
    sizes = {d.name: 1 + max(index[d].value for index, _ in items) for d in dims}
    urls = {tuple(index[d].value for d in dims): url for index, url in items}
    if len(urls) != len(items):
        raise TransformNotSupportedError("beam.Create(...) lists the same index twice")
    names = [d.name for d in dims]
    import itertools

    missing = [dict(zip(names, key)) for key in itertools.product(
        *(range(sizes[n]) for n in names)) if key not in urls]
    if missing:
        raise TransformNotSupportedError(
            f"beam.Create(...) holds {len(items)} items but not the index positions "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}: arcoforge builds a pattern's "
            "positions 0..N-1 along each dimension. Pass every item (pattern.items()), or "
            "pattern.prune(n) for the first n")

    def format_function(**pos: int) -> str:
        return urls[tuple(pos[n] for n in names)]

    af_dims = [ConcatDim(d.name, list(range(sizes[d.name]))) if d.operation == CombineOp.CONCAT
               else MergeDim(d.name, list(range(sizes[d.name]))) for d in dims]
    pattern = FilePattern(format_function, *af_dims, file_type=file_type,  # type: ignore[arg-type]
                          open_kwargs=dict(open_kwargs) or None)
    by_key = {tuple(ix[d].value for d in dims): ix for ix, _ in items}
    to_pangeo = {af_index: by_key[tuple(p for _, p in af_index.positions)]
                 for af_index in pattern}
    return pattern, to_pangeo


#: StoreToZarr ``encoding`` keys that say how values are stored (the others are Zarr layout,
#: which arcoforge decides)
_VALUE_ENCODING = ("dtype", "_FillValue", "missing_value", "scale_factor", "add_offset",
                   "units", "calendar")


def compile_chain(chain: Any) -> Any:
    """The :class:`arcoforge.ZarrRecipe` (or virtual recipe) that a pangeo-forge 0.10 chain
    describes; :class:`TransformNotSupportedError` naming what cannot be compiled."""
    from arcoforge.forge.io.options import SourceOptions
    from arcoforge.forge.recipes import ZarrRecipe
    from arcoforge.forge.transforms import SetAttrs, SetEncoding

    parts = list(_parts(chain))
    if not parts or type(parts[0]).__name__ != "Create":
        raise TransformNotSupportedError("a pangeo-forge chain starts with "
                                         "beam.Create(pattern.items())")
    items = list(getattr(parts[0], "values", ()))
    if any(isinstance(p, (OpenWithKerchunk, WriteCombinedReference)) for p in parts):
        return _compile_reference_chain(parts, items)
    fetch: OpenURLWithFSSpec | None = None
    opener: OpenWithXarray | None = None
    store: StoreToZarr | None = None
    steps = _Recorder()
    after = _Recorder()
    for p in parts[1:]:
        if store is not None:
            if isinstance(p, (ConsolidateDimensionCoordinates, ConsolidateMetadata)):
                continue  # what arcoforge always does
            if isinstance(p, _Compat):
                raise TransformNotSupportedError(
                    f"{type(p).__name__} after StoreToZarr cannot be compiled")
            _add_step(after, p)  # e.g. beam.Map(test_ds): a check of the written store
            continue
        if isinstance(p, OpenURLWithFSSpec):
            fetch = p
        elif isinstance(p, OpenWithXarray):
            opener = p
        elif isinstance(p, StoreToZarr):
            store = p
        elif isinstance(p, _Compat):
            raise TransformNotSupportedError(f"{type(p).__name__} cannot be compiled here")
        else:
            if opener is None:
                raise TransformNotSupportedError(
                    f"the step {_label(p)} comes before OpenWithXarray; arcoforge compiles "
                    "steps over opened datasets only")
            _add_step(steps, p)
    if opener is None or store is None:
        missing = "OpenWithXarray" if opener is None else "StoreToZarr"
        raise TransformNotSupportedError(f"the chain has no {missing}(...)")
    if store.dynamic_chunking_fn is not None:
        raise TransformNotSupportedError(
            "StoreToZarr(dynamic_chunking_fn=...) cannot be compiled: give target_chunks "
            "(arcoforge picks ~32 MB chunks along the concat dimension by default)")
    if store.append_dim:
        warnings.warn("StoreToZarr(append_dim=...): arcoforge appends with `arcoforge append "
                      "recipe.py --target URL` (only the new files are read); `bake` builds "
                      "the whole store", UserWarning, stacklevel=2)
    af_type = _arcoforge_file_type(opener)
    pattern, to_pangeo = _pattern_from_items(items, af_type, opener.xarray_open_kwargs or {})
    options = SourceOptions()
    if fetch is not None:
        if fetch.secrets:
            raise TransformNotSupportedError(
                "OpenURLWithFSSpec(secrets=...): arcoforge reads credentials from environment "
                "variables named in SourceOptions.auth, never from the recipe")
        kwargs: dict[str, Any] = {}
        if isinstance(fetch.cache, str):
            kwargs["cache"] = fetch.cache
        if fetch.open_kwargs:
            kwargs["storage_options"] = dict(fetch.open_kwargs)
        if fetch.max_concurrency:
            kwargs["max_concurrency_per_host"] = int(fetch.max_concurrency)
        options = SourceOptions(**kwargs)
    transforms: list[Any] = []
    if steps.steps:
        transforms.append(_steps_transform(steps.steps, to_pangeo))
    encoding = {name: {k: v for k, v in enc.items() if k in _VALUE_ENCODING}
                for name, enc in (store.encoding or {}).items()}
    encoding = {k: v for k, v in encoding.items() if v}
    if encoding:
        transforms.append(SetEncoding(encoding))
    if store.attrs:
        transforms.append(SetAttrs({None: dict(store.attrs)}))
    checks = [_StoreCheck(tuple(after.steps))] if after.steps else []
    return ZarrRecipe(pattern, target_chunks=dict(store.target_chunks) or None,
                      source_options=options, transforms=transforms, checks=checks)


class _StoreCheck:
    """Steps after ``StoreToZarr`` (``| beam.Map(test_ds)``), called with the published store
    as pangeo-forge calls them with the store it wrote."""

    def __init__(self, steps: tuple[Any, ...]) -> None:
        self.steps = steps
        self.__qualname__ = " | ".join(_label(s) for s in steps)

    def __call__(self, store: Any) -> None:
        element = store
        for step in self.steps:
            out = list(step.fn.process(element, *step.args, **step.kwargs))
            element = out[0] if out else element


def _arcoforge_file_type(opener: Any) -> str:
    """arcoforge's ``file_type`` for an ``OpenWithXarray``/``OpenWithKerchunk`` step."""
    from .patterns import _ARCOFORGE_FILE_TYPE, _REFUSED_FILE_TYPE

    file_type = opener.file_type if opener.file_type is not None else FileType.unknown
    if not isinstance(file_type, FileType):
        file_type = FileType(file_type)
    af_type = _ARCOFORGE_FILE_TYPE.get(file_type)
    if af_type is None:
        reason = _REFUSED_FILE_TYPE.get(file_type, "arcoforge has no reader for it")
        raise TransformNotSupportedError(
            f"{type(opener).__name__}(file_type={file_type.value!r}) is not supported by "
            f"arcoforge's compat layer: {reason}")
    return af_type


def _compile_reference_chain(parts: Sequence[Any], items: Sequence[Any]) -> Any:
    """``beam.Create(...) | OpenWithKerchunk(...) | WriteCombinedReference(...)``: a
    :class:`~arcoforge.forge.virtual.recipe.VirtualRecipe` writing kerchunk references."""
    from arcoforge.forge.io.options import SourceOptions
    from arcoforge.forge.virtual.recipe import VirtualRecipe

    opener = next((p for p in parts if isinstance(p, OpenWithKerchunk)), None)
    writer = next((p for p in parts if isinstance(p, WriteCombinedReference)), None)
    if opener is None or writer is None:
        raise TransformNotSupportedError(
            "a reference chain needs OpenWithKerchunk(...) and WriteCombinedReference(...)")
    for p in parts[1:]:
        if not isinstance(p, (OpenURLWithFSSpec, OpenWithKerchunk, WriteCombinedReference,
                              ConsolidateMetadata)):
            raise TransformNotSupportedError(
                f"{_label(p)} in a reference chain cannot be compiled: virtual references map "
                "the sources' bytes as they are (no per-dataset steps)")
    af_type = _arcoforge_file_type(opener)
    pattern, _ = _pattern_from_items(items, af_type, {})
    storage = dict(opener.storage_options or {})
    return VirtualRecipe(pattern, source_options=SourceOptions(storage_options=storage),
                         output="kerchunk")
