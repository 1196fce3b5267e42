"""Feedstocks: a folder with ``meta.yaml`` + ``recipe.py`` that describes one or more datasets.

* :class:`FeedstockMeta` — the ``meta.yaml`` schema (pydantic): title, description, SPDX
  license, providers, maintainers, recipes (``id: "module:object"``), bakery profile, version.
* :class:`PangeoFeedstockMeta` — pangeo-forge's ``meta.yaml`` layout, accepted as it is:
  ``recipes`` as a list of ``{id, object}`` (or ``{dict_object}``), ``provenance: {providers,
  license}``, ``maintainers`` (name, orcid, github), ``bakery: {id}`` (the profile).  There a
  licence that is not an SPDX id is a warning, not an error.  Recipe modules that import
  ``pangeo_forge_recipes`` get :mod:`arcoforge.compat.pangeo_forge_recipes` when the real
  package is not installed.
* :func:`lint` — every problem of a feedstock, each with its file and line.
* :func:`test_feedstock` — lint, a pruned build (first ``nkeep`` files per concat dimension),
  verification against the sources and structural CF checks; a readable report + exit code.
* Bakery profiles (:class:`Profile`, :func:`load_profiles`) and :func:`bake_feedstock`, which
  builds every recipe to ``<target root>/<recipe id>.zarr`` and publishes it to a catalog.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from arcoforge.errors import ArcoforgeError, ConfigError

__all__ = [
    "SPDX_LICENSES",
    "Provider",
    "Maintainer",
    "FeedstockMeta",
    "PangeoFeedstockMeta",
    "Problem",
    "FeedstockError",
    "is_pangeo_layout",
    "is_recipe",
    "recipe_import_context",
    "unsupported_reason",
    "lint",
    "load_meta",
    "load_recipes",
    "prune_recipe",
    "cf_problems",
    "FeedstockTestReport",
    "test_feedstock",
    "Profile",
    "load_profiles",
    "bake_feedstock",
]

META_FILE = "meta.yaml"
PROFILES_ENV = "ARCOFORGE_PROFILES"

#: Common SPDX license identifiers accepted in ``meta.yaml`` (plus ``LicenseRef-*`` and ``other``).
SPDX_LICENSES = frozenset(
    {
        "0BSD", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-2.0", "BSD-2-Clause",
        "BSD-3-Clause", "BSL-1.0", "CC-BY-1.0", "CC-BY-2.0", "CC-BY-2.5", "CC-BY-3.0",
        "CC-BY-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0", "CC-BY-SA-3.0",
        "CC-BY-SA-4.0", "CC0-1.0", "CDLA-Permissive-1.0", "CDLA-Permissive-2.0",
        "CDLA-Sharing-1.0", "EPL-2.0", "EUPL-1.2", "GPL-2.0-only", "GPL-2.0-or-later",
        "GPL-3.0-only", "GPL-3.0-or-later", "ISC", "LGPL-2.1-only", "LGPL-2.1-or-later",
        "LGPL-3.0-only", "LGPL-3.0-or-later", "MIT", "MPL-2.0", "ODbL-1.0", "ODC-By-1.0",
        "OGL-UK-3.0", "PDDL-1.0", "Unlicense", "Zlib", "etalab-2.0", "NLOD-2.0",
        "DL-DE-BY-2.0", "DL-DE-ZERO-2.0",
    }
)

_ORCID = r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$"
_GITHUB = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?$"
_RECIPE_REF = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
_RECIPE_ID = r"^[a-z0-9][a-z0-9_.-]*$"
_PANGEO_RECIPE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: top-level keys that mark pangeo-forge's meta.yaml layout
_PANGEO_KEYS = frozenset({"provenance", "bakery", "pangeo_forge_version",
                          "pangeo_notebook_version"})


# -- meta.yaml schema ------------------------------------------------------------------------


class Provider(BaseModel):
    """An organization that made, processed or hosts the data (a STAC provider)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    roles: list[Literal["licensor", "producer", "processor", "host"]] = Field(min_length=1)
    url: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
    description: str | None = None


class Maintainer(BaseModel):
    """A person who looks after the feedstock."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    orcid: str | None = Field(default=None, pattern=_ORCID)
    github: str | None = Field(default=None, pattern=_GITHUB)


class FeedstockMeta(BaseModel):
    """The contents of a feedstock's ``meta.yaml``."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    license: str
    providers: list[Provider] = Field(min_length=1)
    maintainers: list[Maintainer] = Field(min_length=1)
    recipes: dict[str, str] = Field(min_length=1)
    profile: str | None = None
    version: str = Field(default="1.0", pattern=r"^\d+\.\d+$")
    keywords: list[str] = Field(default_factory=list)
    #: ``module:dict`` references whose dict values are recipes (pangeo-forge's dict_object)
    _dict_objects: list[str] = PrivateAttr(default_factory=list)

    @field_validator("license")
    @classmethod
    def _spdx(cls, value: str) -> str:
        problem = _license_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("recipes")
    @classmethod
    def _recipe_refs(cls, value: dict[str, str]) -> dict[str, str]:
        for rid, ref in value.items():
            if not re.match(_RECIPE_ID, str(rid)):
                raise ValueError(f"recipe id {rid!r} must be lower case letters, digits, '-', '_', '.'")
            if not isinstance(ref, str) or not re.match(_RECIPE_REF, ref):
                raise ValueError(f"recipe {rid!r}: {ref!r} is not of the form 'module:object'")
        return value


def _license_problem(value: str) -> str | None:
    """Why ``value`` is not an accepted licence id (None when it is)."""
    if value in SPDX_LICENSES or value == "other" or re.match(r"^LicenseRef-[\w.-]+$", value):
        return None
    close = [s for s in SPDX_LICENSES if s.lower() == value.lower()]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"{value!r} is not a known SPDX license id{hint}; use an SPDX id such as "
            "'CC-BY-4.0', 'CC0-1.0' or 'Apache-2.0', 'LicenseRef-<name>', or 'other'")


# -- pangeo-forge's meta.yaml layout ---------------------------------------------------------


class PangeoRecipeEntry(BaseModel):
    """One entry of pangeo-forge's ``recipes:`` list: ``{id, object}`` or ``{dict_object}``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=_PANGEO_RECIPE_ID)
    object: str | None = Field(default=None, pattern=_RECIPE_REF)
    dict_object: str | None = Field(default=None, pattern=_RECIPE_REF)

    @model_validator(mode="after")
    def _one_form(self) -> PangeoRecipeEntry:
        if self.dict_object is not None:
            if self.id is not None or self.object is not None:
                raise ValueError("give either 'id' and 'object', or 'dict_object' alone")
        elif self.id is None or self.object is None:
            raise ValueError("a recipe entry needs 'id' and 'object' ('module:name'), or "
                             "'dict_object' ('module:dict_of_recipes')")
        return self


class PangeoMaintainer(BaseModel):
    """A maintainer in pangeo-forge's layout (``name`` may be left out when ``github`` is given)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1)
    orcid: str | None = Field(default=None, pattern=_ORCID)
    github: str | None = Field(default=None, pattern=_GITHUB)

    @model_validator(mode="after")
    def _named(self) -> PangeoMaintainer:
        if not self.name and not self.github:
            raise ValueError("a maintainer needs a 'name' or a 'github' user name")
        return self


class PangeoProvenance(BaseModel):
    """``provenance:`` -- the data's providers and licence."""

    model_config = ConfigDict(extra="forbid")

    providers: list[Provider] = Field(default_factory=list)
    license: str | None = None


class PangeoBakery(BaseModel):
    """``bakery:`` -- its ``id`` names the bakery profile the feedstock bakes with."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)


class PangeoFeedstockMeta(BaseModel):
    """pangeo-forge's ``meta.yaml``: only ``recipes`` is required.  Unknown top-level fields are
    kept (lint warns about them); arcoforge's ``version``, ``keywords`` and ``profile`` may be
    added."""

    model_config = ConfigDict(extra="allow")

    title: str | None = None
    description: str | None = None
    pangeo_forge_version: str | None = None
    pangeo_notebook_version: str | None = None
    recipes: list[PangeoRecipeEntry] = Field(min_length=1)
    provenance: PangeoProvenance | None = None
    maintainers: list[PangeoMaintainer] = Field(default_factory=list)
    bakery: PangeoBakery | None = None
    version: str = Field(default="1.0", pattern=r"^\d+\.\d+$")
    keywords: list[str] = Field(default_factory=list)
    profile: str | None = None

    @field_validator("recipes")
    @classmethod
    def _unique_ids(cls, value: list[PangeoRecipeEntry]) -> list[PangeoRecipeEntry]:
        ids = [e.id for e in value if e.id is not None]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"recipe ids must be unique; repeated: {', '.join(dup)}")
        return value

    def to_feedstock_meta(self) -> FeedstockMeta:
        """The same feedstock as a :class:`FeedstockMeta` (what bake and publish read); a
        licence that is not an SPDX id becomes ``"other"``."""
        prov = self.provenance or PangeoProvenance()
        lic = prov.license if prov.license and _license_problem(prov.license) is None else "other"
        meta = FeedstockMeta.model_construct(
            title=self.title or "",
            description=self.description or "",
            license=lic,
            providers=list(prov.providers),
            maintainers=[Maintainer(name=m.name or str(m.github), orcid=m.orcid, github=m.github)
                         for m in self.maintainers],
            recipes={e.id: e.object for e in self.recipes if e.id and e.object},
            profile=self.profile or (self.bakery.id if self.bakery else None),
            version=self.version,
            keywords=list(self.keywords),
        )
        meta._dict_objects = [e.dict_object for e in self.recipes if e.dict_object]
        return meta


def is_pangeo_layout(data: Mapping[str, Any]) -> bool:
    """Whether a parsed ``meta.yaml`` is in pangeo-forge's layout (``recipes`` a list, or one of
    its top-level sections)."""
    return isinstance(data.get("recipes"), list) or bool(_PANGEO_KEYS & set(data))


# -- problems and line numbers ---------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One lint problem: where (file, 1-based line) and what; ``severity`` is ``"error"`` (the
    feedstock cannot be used) or ``"warning"`` (it can, but should be fixed)."""

    file: str
    line: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}: {prefix}{self.message}"


class FeedstockError(ArcoforgeError):
    """A feedstock that cannot be used; ``problems`` lists why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _node_for(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[yaml.Node | None, bool]:
    """The YAML node at ``loc`` (or the deepest existing parent, with found=False)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    node = value
                    break
            else:
                return node, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node, False
            node = node.value[part]
        else:
            return node, False
    return node, True


def _key_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the mapping *key* that ends ``loc`` (for dict-keyed errors)."""
    parent, found = _node_for(root, loc[:-1])
    if found and isinstance(parent, yaml.MappingNode):
        for key, _ in parent.value:
            if str(key.value) == str(loc[-1]):
                return int(key.start_mark.line) + 1
    return None


def _line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    node, _ = _node_for(root, loc)
    if node is None:
        return 1
    return int(node.start_mark.line) + 1


def _loc_str(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _validation_problems(path: str, root: yaml.Node | None, err: ValidationError) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p != "__root__")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            problems.append(Problem(path, _line(root, loc[:-1]) if loc[:-1] else 1,
                                    f"missing required field {_loc_str(loc)!r}"))
        elif e["type"] == "extra_forbidden":
            line = _key_line(root, loc) or _line(root, loc)
            problems.append(Problem(path, line, f"unknown field {_loc_str(loc)!r}"))
        else:
            problems.append(Problem(path, _line(root, loc), f"{_loc_str(loc)}: {msg}"))
    return problems


def _read_meta(feedstock_dir: str | os.PathLike[str]
               ) -> tuple[dict[str, Any] | None, yaml.Node | None, list[Problem]]:
    path = os.path.join(os.fspath(feedstock_dir), META_FILE)
    if not os.path.isfile(path):
        return None, None, [Problem(path, 1, f"no {META_FILE} in {os.fspath(feedstock_dir)}")]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(err, "problem", None) or str(err)
        return None, None, [Problem(path, line, f"YAML syntax error: {problem}")]
    if not isinstance(data, dict):
        return None, root, [Problem(path, 1, f"{META_FILE} must be a mapping of fields")]
    return data, root, []


def load_meta(feedstock_dir: str | os.PathLike[str]) -> FeedstockMeta:
    """Parse and validate ``meta.yaml``; raises :class:`FeedstockError` listing every problem."""
    path = os.path.join(os.fspath(feedstock_dir), META_FILE)
    data, root, problems = _read_meta(feedstock_dir)
    if problems or data is None:
        raise FeedstockError(problems)
    try:
        if is_pangeo_layout(data):
            return PangeoFeedstockMeta.model_validate(data).to_feedstock_meta()
        return FeedstockMeta.model_validate(data)
    except ValidationError as err:
        raise FeedstockError(_validation_problems(path, root, err)) from None


# -- recipes ---------------------------------------------------------------------------------


def _import_module(feedstock_dir: str, module: str) -> Any:
    """Import ``<feedstock_dir>/<module>.py`` (dots → sub folders) under a private name.

    A module that imports ``pangeo_forge_recipes`` gets arcoforge's compat package for it
    while it loads, unless the real package is installed (:func:`recipe_import_context`).
    """
    rel = module.replace(".", os.sep)
    path = os.path.join(feedstock_dir, rel + ".py")
    if not os.path.isfile(path):
        pkg = os.path.join(feedstock_dir, rel, "__init__.py")
        if not os.path.isfile(pkg):
            raise ConfigError(f"no {rel}.py in {feedstock_dir}")
        path = pkg
    name = f"_arcoforge_feedstock_{abs(hash(os.path.abspath(path)))}_{module.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, feedstock_dir)
    try:
        sys.modules[name] = mod
        with recipe_import_context(path):
            spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        try:
            sys.path.remove(feedstock_dir)
        except ValueError:
            pass
    return mod


@contextlib.contextmanager
def recipe_import_context(path: str | os.PathLike[str]) -> Iterator[None]:
    """While a recipe module at ``path`` is imported: when its source mentions
    ``pangeo_forge_recipes`` and the real package is not installed, that name (and its
    submodules) resolve to :mod:`arcoforge.compat.pangeo_forge_recipes`."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            wants_pangeo = "pangeo_forge_recipes" in f.read()
    except OSError:
        wants_pangeo = False
    if not wants_pangeo:
        yield
        return
    from arcoforge.compat.pangeo_forge_recipes import pangeo_alias

    with pangeo_alias():
        yield


def unsupported_reason(obj: Any) -> str | None:
    """Why arcoforge cannot bake ``obj``, when it is a recipe it recognises but refuses (a
    compat recipe whose class sets ``arcoforge_unsupported``, a pangeo-forge 0.10 Beam chain
    that cannot be compiled); None otherwise."""
    if _is_chain(obj):
        from arcoforge.compat.pangeo_forge_recipes.transforms import compile_chain

        try:
            compile_chain(obj)
        except ConfigError as err:
            return str(err)
        return None
    reason = obj.arcoforge_unsupported if isinstance(obj, RefusedChain) else \
        getattr(type(obj), "arcoforge_unsupported", None)
    return reason if isinstance(reason, str) and reason else None


class RefusedChain:
    """A pangeo-forge 0.10 chain that arcoforge cannot compile: listed by the loaders, and
    refused with the reason wherever it would be used."""

    def __init__(self, chain: Any, reason: str) -> None:
        self.chain = chain
        self.arcoforge_unsupported = reason

    def __getattr__(self, name: str) -> Any:
        raise ConfigError(f"this pangeo-forge recipe cannot be baked: "
                          f"{self.arcoforge_unsupported}")


def _is_chain(obj: Any) -> bool:
    """A pangeo-forge 0.10 Beam chain built from the compat transforms."""
    module = sys.modules.get("arcoforge.compat.pangeo_forge_recipes.transforms")
    return module is not None and bool(module.is_chain(obj))


def is_recipe(obj: Any) -> bool:
    """A ZarrRecipe (compat XarrayZarrRecipe included), a VirtualRecipe (compat
    HDFReferenceRecipe included), a pangeo-forge 0.10 Beam chain (compiled to a ZarrRecipe), or
    a recognised recipe that arcoforge refuses with a reason."""
    from arcoforge.forge.recipes import ZarrRecipe

    return isinstance(obj, (ZarrRecipe, RefusedChain)) or _is_chain(obj) or \
        bool(getattr(type(obj), "is_virtual", False)) or unsupported_reason(obj) is not None


def as_recipe(obj: Any) -> Any:
    """``obj`` as a bakeable recipe: a pangeo-forge 0.10 Beam chain compiled to a ZarrRecipe,
    anything else unchanged."""
    if _is_chain(obj):
        from arcoforge.compat.pangeo_forge_recipes.transforms import compile_chain

        try:
            return compile_chain(obj)
        except ConfigError as err:
            return RefusedChain(obj, str(err))  # refused with the reason where it is used
    return obj


def _resolve_recipe(feedstock_dir: str, ref: str) -> Any:
    module, _, attr = ref.partition(":")
    obj: Any = _import_module(feedstock_dir, module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class _Modules:
    """The feedstock's modules imported so far (an import error is kept as the value)."""

    def __init__(self, feedstock_dir: str) -> None:
        self.dir = feedstock_dir
        self.loaded: dict[str, Any] = {}

    def resolve(self, ref: str) -> tuple[Any, str | None]:
        """``(object, None)`` or ``(None, why it cannot be resolved)``."""
        module, _, attr = ref.partition(":")
        if module not in self.loaded:
            try:
                self.loaded[module] = _import_module(self.dir, module)
            except Exception as err:  # noqa: BLE001 - any import failure is a lint problem
                self.loaded[module] = err
        obj: Any = self.loaded[module]
        if isinstance(obj, BaseException):
            where = _traceback_line(obj, self.dir)
            return None, f"cannot import {module!r}: {type(obj).__name__}: {obj}{where}"
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            return None, f"module {module!r} has no object {attr!r}"
        return obj, None


def _object_problem(rid: str, ref: str, obj: Any) -> str | None:
    if not is_recipe(obj):
        return f"recipe {rid!r}: {ref} is a {type(obj).__name__}, not an arcoforge recipe " \
               "(af.ZarrRecipe, or pangeo_forge_recipes.recipes.XarrayZarrRecipe)"
    reason = unsupported_reason(obj)
    if reason:
        return f"recipe {rid!r}: {ref} cannot be baked: {reason}"
    return None


def _recipe_problems(modules: _Modules, meta_path: str,
                     entries: list[tuple[str, Any, int]]) -> list[Problem]:
    """Problems of ``(recipe id, "module:object", line)`` entries."""
    problems = []
    for rid, ref, line in entries:
        if not isinstance(ref, str) or not re.match(_RECIPE_REF, ref):
            continue  # reported by the schema
        obj, why = modules.resolve(ref)
        if why:
            problems.append(Problem(meta_path, line, f"recipe {rid!r}: {why}"))
            continue
        problem = _object_problem(rid, ref, obj)
        if problem:
            problems.append(Problem(meta_path, line, problem))
    return problems


def _dict_object_problems(modules: _Modules, meta_path: str, ref: Any,
                          line: int) -> list[Problem]:
    """Problems of a pangeo ``dict_object`` entry: a dict of recipe id -> recipe."""
    if not isinstance(ref, str) or not re.match(_RECIPE_REF, ref):
        return []  # reported by the schema
    obj, why = modules.resolve(ref)
    if why:
        return [Problem(meta_path, line, f"dict_object {ref}: {why}")]
    if not isinstance(obj, Mapping) or not obj:
        return [Problem(meta_path, line, f"dict_object {ref} is a {type(obj).__name__}, not a "
                                         "non-empty dict of recipe id -> recipe")]
    problems = []
    for rid, value in obj.items():
        if not re.match(_PANGEO_RECIPE_ID, str(rid)):
            problems.append(Problem(meta_path, line, f"dict_object {ref}: recipe id {rid!r} must "
                                                     "be letters, digits, '-', '_', '.'"))
        problem = _object_problem(str(rid), f"{ref}[{rid!r}]", value)
        if problem:
            problems.append(Problem(meta_path, line, problem))
    return problems


def _traceback_line(err: BaseException, feedstock_dir: str) -> str:
    if isinstance(err, SyntaxError) and err.filename:
        return f" ({err.filename}:{err.lineno})"
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if os.path.abspath(f.filename).startswith(os.path.abspath(feedstock_dir))]
    if frames:
        return f" ({frames[-1].filename}:{frames[-1].lineno})"
    return ""


def load_recipes(feedstock_dir: str | os.PathLike[str],
                 meta: FeedstockMeta | None = None) -> dict[str, Any]:
    """``{recipe id: recipe object}`` of a feedstock (imports its recipe modules); a pangeo
    ``dict_object`` contributes one recipe per key of its dict."""
    d = os.path.abspath(os.fspath(feedstock_dir))
    meta = meta or load_meta(d)
    meta_path = os.path.join(d, META_FILE)
    out = {}
    for rid, ref in meta.recipes.items():
        obj = _resolve_recipe(d, ref)
        if not is_recipe(obj):
            raise FeedstockError([Problem(meta_path, 1,
                                          f"recipe {rid!r}: {ref} is not an arcoforge recipe")])
        out[rid] = as_recipe(obj)
    for ref in meta._dict_objects:
        objs = _resolve_recipe(d, ref)
        if not isinstance(objs, Mapping):
            raise FeedstockError([Problem(meta_path, 1, f"dict_object {ref} is not a dict")])
        for rid, obj in objs.items():
            if not is_recipe(obj):
                raise FeedstockError([Problem(meta_path, 1, f"recipe {rid!r} of dict_object "
                                                            f"{ref} is not an arcoforge recipe")])
            if str(rid) in out:
                raise FeedstockError([Problem(meta_path, 1, f"recipe id {rid!r} is defined "
                                                            "twice")])
            out[str(rid)] = as_recipe(obj)
    return out


def prune_recipe(recipe: Any, nkeep: int = 2) -> Any:
    """A copy of ``recipe`` whose pattern keeps the first ``nkeep`` files per concat dim (a
    pangeo-forge recipe's own ``copy_pruned``, which keeps its 0.9 arguments)."""
    copy_pruned = getattr(recipe, "copy_pruned", None)
    if callable(copy_pruned):
        return copy_pruned(nkeep)
    return dataclasses.replace(recipe, pattern=recipe.pattern.prune(nkeep))


# -- lint ------------------------------------------------------------------------------------


def _pangeo_problems(d: str, path: str, root: yaml.Node | None,
                     data: dict[str, Any]) -> list[Problem]:
    """Errors and warnings of a meta.yaml in pangeo-forge's layout."""
    problems: list[Problem] = []
    try:
        PangeoFeedstockMeta.model_validate(data)
    except ValidationError as err:
        problems.extend(_validation_problems(path, root, err))

    def warn(loc: tuple[Any, ...], message: str) -> None:
        problems.append(Problem(path, _line(root, loc), message, severity="warning"))

    prov = data.get("provenance")
    lic = prov.get("license") if isinstance(prov, Mapping) else None
    if isinstance(lic, str):
        why = _license_problem(lic)
        if why:
            warn(("provenance", "license"), f"provenance.license: {why} (the catalog will say "
                 "'other')")
    elif lic is None:
        warn(("provenance",) if isinstance(prov, Mapping) else (),
             "no provenance.license: say under which licence the data may be used "
             "(an SPDX id such as 'CC-BY-4.0')")
    if not (isinstance(prov, Mapping) and prov.get("providers")):
        warn(("provenance",) if isinstance(prov, Mapping) else (),
             "no provenance.providers: name who produces and hosts the data")
    for key in ("title", "description", "maintainers"):
        if not data.get(key):
            warn((), f"no {key!r}: recommended (the catalog shows it)")
    known = set(PangeoFeedstockMeta.model_fields)
    for key in data:
        if key not in known:
            line = _key_line(root, (key,)) or 1
            problems.append(Problem(path, line, f"unknown field {key!r} (ignored)",
                                    severity="warning"))
    entries = data.get("recipes")
    if isinstance(entries, list) and not any("recipe ids must be unique" in p.message
                                             for p in problems):
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            rid = entry.get("id") if isinstance(entry, Mapping) else None
            if isinstance(rid, str) and rid in seen:
                problems.append(Problem(path, _line(root, ("recipes", i, "id")),
                                        f"recipes[{i}].id: recipe ids must be unique; "
                                        f"repeated: {rid}"))
            if isinstance(rid, str):
                seen.add(rid)
    if isinstance(entries, list):
        modules = _Modules(d)
        refs = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                continue  # reported by the schema
            if "dict_object" in entry:
                problems.extend(_dict_object_problems(modules, path, entry["dict_object"],
                                                      _line(root, ("recipes", i))))
            elif "id" in entry and "object" in entry:
                refs.append((str(entry["id"]), entry["object"],
                             _line(root, ("recipes", i, "object"))))
        problems.extend(_recipe_problems(modules, path, refs))
    return problems


def lint(feedstock_dir: str | os.PathLike[str], *,
         profiles: str | os.PathLike[str] | None = None,
         include_warnings: bool = False) -> list[Problem]:
    """Every problem of a feedstock, each with file and 1-based line; ``[]`` when clean.

    Checks the ``meta.yaml`` schema (required fields, SPDX license, roles, ORCID, version),
    that each recipe imports from the feedstock's modules and is an arcoforge recipe, and — when
    a profiles file is given or ``$ARCOFORGE_PROFILES`` is set — that the profile exists.
    pangeo-forge's layout is accepted too (see :class:`PangeoFeedstockMeta`).  Only errors are
    returned unless ``include_warnings`` (then warnings too: ``Problem.severity``).
    """
    d = os.path.abspath(os.fspath(feedstock_dir))
    path = os.path.join(d, META_FILE)
    data, root, problems = _read_meta(d)
    if data is None:
        return problems
    if is_pangeo_layout(data):
        problems.extend(_pangeo_problems(d, path, root, data))
        bakery = data.get("bakery")
        prof = data.get("profile") or (bakery.get("id") if isinstance(bakery, Mapping) else None)
        prof_loc: tuple[Any, ...] = ("profile",) if data.get("profile") else ("bakery", "id")
    else:
        try:
            FeedstockMeta.model_validate(data)
        except ValidationError as err:
            problems.extend(_validation_problems(path, root, err))
        recipes = data.get("recipes")
        if isinstance(recipes, Mapping):
            problems.extend(_recipe_problems(
                _Modules(d), path,
                [(str(rid), ref, _line(root, ("recipes", rid))) for rid, ref in recipes.items()]))
        prof = data.get("profile")
        prof_loc = ("profile",)
    prof_path = profiles or os.environ.get(PROFILES_ENV)
    if isinstance(prof, str) and prof_path:
        try:
            known = load_profiles(prof_path)
        except (OSError, ValueError) as err:
            problems.append(Problem(os.fspath(prof_path), 1, f"cannot read profiles: {err}"))
        else:
            if prof not in known:
                problems.append(Problem(path, _line(root, prof_loc),
                                        f"profile {prof!r} is not in {os.fspath(prof_path)} "
                                        f"(known: {', '.join(sorted(known)) or 'none'})"))
    if not include_warnings:
        problems = [p for p in problems if p.severity == "error"]
    return sorted(problems, key=lambda p: (p.file, p.line))


# -- CF checks -------------------------------------------------------------------------------


def _cf_axes(ds: Any) -> dict[str, list[str]]:
    """X/Y/T as CF identifies them: an ``axis`` attribute or cf-xarray's axis criteria, else
    longitude/latitude by their units (CF 4.1, 4.2) and time by datetime values or
    ``<unit> since <date>`` units (CF 4.4)."""
    axes = {k: list(v) for k, v in ds.cf.axes.items() if v}
    coords = ds.cf.coordinates
    for ax, kind in (("X", "longitude"), ("Y", "latitude")):
        if not axes.get(ax) and coords.get(kind):
            axes[ax] = list(coords[kind])
    if not axes.get("T"):
        found = [str(n) for n, c in ds.coords.items()
                 if c.dtype.kind == "M" or (c.dtype == object and c.size and
                                           hasattr(c.values.flat[0], "calendar"))
                 or " since " in str(c.attrs.get("units", c.encoding.get("units", "")))]
        if found:
            axes["T"] = found
    return axes


def cf_problems(ds: Any) -> tuple[list[str], list[str]]:
    """Structural CF checks with cf-xarray: ``(errors, warnings)``.

    Errors: a data variable without ``units``; no identifiable X, Y or T axis (when the data
    has more than one dimension); a time coordinate without units/calendar.  Warnings: a data
    variable without ``standard_name``; a time without an explicit ``calendar`` attribute.
    """
    import cf_xarray  # noqa: F401 - registers the .cf accessor

    errors: list[str] = []
    warnings: list[str] = []
    axes = _cf_axes(ds)
    for ax in ("X", "Y", "T"):
        if not axes.get(ax):
            errors.append(f"no {ax} axis found (set axis={ax!r} or a standard_name/units that "
                          "cf-xarray recognizes on a coordinate)")
    for name, var in ds.data_vars.items():
        units = var.attrs.get("units", var.encoding.get("units"))
        if not units:
            errors.append(f"variable {name!r} has no units")
        if not var.attrs.get("standard_name"):
            warnings.append(f"variable {name!r} has no standard_name")
    for tname in axes.get("T", []):
        t = ds[tname]
        if t.dtype.kind in "Mm" or t.dtype == object:
            enc = t.encoding
            if not enc.get("units"):
                errors.append(f"time {tname!r} has no units in the store")
            if not enc.get("calendar") and "calendar" not in t.attrs:
                warnings.append(f"time {tname!r} has no calendar attribute (CF default 'standard')")
        elif "since" not in str(t.attrs.get("units", "")):
            errors.append(f"time {tname!r} is not CF-decodable (units {t.attrs.get('units')!r})")
        elif "calendar" not in t.attrs:
            warnings.append(f"time {tname!r} has no calendar attribute (CF default 'standard')")
    return errors, warnings


# -- pruned test build -----------------------------------------------------------------------


@dataclass
class FeedstockTestReport:
    """What ``arcoforge test`` found; ``str(report)`` is the readable form."""

    feedstock: str
    lint_problems: list[Problem] = field(default_factory=list)
    builds: dict[str, str] = field(default_factory=dict)
    verify: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.lint_problems and not self.errors

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def __str__(self) -> str:
        lines = [f"feedstock {self.feedstock}"]
        if self.lint_problems:
            lines.append(f"  lint: {len(self.lint_problems)} problem(s)")
            lines += [f"    {p}" for p in self.lint_problems]
        else:
            lines.append("  lint: ok")
        for rid, text in self.builds.items():
            lines.append(f"  build {rid}: {text}")
        for rid, text in self.verify.items():
            lines.append(f"  verify {rid}: {text}")
        lines += [f"  ERROR {e}" for e in self.errors]
        lines += [f"  warning {w}" for w in self.warnings]
        lines.append("PASSED" if self.ok else "FAILED")
        return "\n".join(lines)


def _verify(target: str, recipe: Any) -> tuple[bool, str]:
    from arcoforge.forge.verify import verify

    report = verify(target, recipe)
    return bool(report.ok), str(report)


def test_feedstock(feedstock_dir: str | os.PathLike[str], nkeep: int = 2, *,
                   workdir: str | os.PathLike[str] | None = None) -> FeedstockTestReport:
    """Lint, build each recipe pruned to ``nkeep`` files per concat dim into a temporary
    target, verify it against its sources and run structural CF checks."""
    from arcoforge.forge.bake import bake
    from arcoforge.open import open_dataset

    d = os.path.abspath(os.fspath(feedstock_dir))
    report = FeedstockTestReport(d)
    found = lint(d, include_warnings=True)
    report.lint_problems = [p for p in found if p.severity == "error"]
    report.warnings += [f"lint: {p}" for p in found if p.severity == "warning"]
    if report.lint_problems:
        return report
    meta = load_meta(d)
    recipes = load_recipes(d, meta)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="arcoforge-test-")
        workdir = tmp.name
    try:
        for rid, recipe in recipes.items():
            pruned = prune_recipe(recipe, nkeep)
            target = os.path.join(os.fspath(workdir), f"{rid}.zarr")
            if getattr(recipe, "is_virtual", False):  # references live in Icechunk
                target = "icechunk://" + os.path.join(os.fspath(workdir), f"{rid}.icechunk")
            report.targets[rid] = target
            try:
                result = bake(pruned, target, progress=False,
                              workdir=os.path.join(os.fspath(workdir), f"{rid}-work"))
            except Exception as err:  # noqa: BLE001 - report, don't crash
                report.builds[rid] = "FAILED"
                report.errors.append(f"{rid}: pruned build failed: {type(err).__name__}: {err}")
                continue
            report.builds[rid] = str(result)
            try:
                ok, text = _verify(target, pruned)
            except Exception as err:  # noqa: BLE001
                ok, text = False, f"verification crashed: {type(err).__name__}: {err}"
            report.verify[rid] = ("ok: " if ok else "FAILED: ") + text
            if not ok:
                report.errors.append(f"{rid}: the store differs from its sources")
            errs, warns = cf_problems(open_dataset(target))
            report.errors += [f"{rid}: CF: {e}" for e in errs]
            report.warnings += [f"{rid}: CF: {w}" for w in warns]
    finally:
        if tmp is not None:
            tmp.cleanup()
    return report


test_feedstock.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# -- bakery profiles -------------------------------------------------------------------------


class Profile(BaseModel):
    """A named bakery: which engine runs builds, with what options, writing where."""

    model_config = ConfigDict(extra="forbid")

    name: str
    engine: str = "local"
    engine_options: dict[str, Any] = Field(default_factory=dict)
    target_root: str
    cache_root: str | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict)

    def target_for(self, recipe_id: str, recipe: Any = None) -> str:
        """Where recipe ``recipe_id`` is baked: ``<root>/<id>.zarr``, or an Icechunk repository
        ``icechunk://<root>/<id>.icechunk`` for a virtual recipe (references live there)."""
        root = self.target_root.rstrip("/")
        if getattr(recipe, "is_virtual", False):
            return f"icechunk://{root}/{recipe_id}.icechunk"
        return f"{root}/{recipe_id}.zarr"


def load_profiles(path: str | os.PathLike[str] | None = None) -> dict[str, Profile]:
    """Read a profiles YAML file (``path``, else ``$ARCOFORGE_PROFILES``).

    Format::

        profiles:
          local:
            engine: local
            engine_options: {max_workers: 4}
            target_root: /data/arco
            cache_root: /data/cache
    """
    path = path or os.environ.get(PROFILES_ENV)
    if not path:
        raise ConfigError(f"no bakery profiles: pass --profiles FILE or set ${PROFILES_ENV}")
    import fsspec

    with fsspec.open(os.fspath(path), "r", encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: profiles must be a mapping")
    entries = data.get("profiles", data)
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: 'profiles' must be a mapping of name -> profile")
    out = {}
    for name, body in entries.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: profile {name!r} must be a mapping")
        try:
            out[str(name)] = Profile.model_validate({"name": str(name), **body})
        except ValidationError as err:
            raise ConfigError(f"{path}: profile {name!r}: {err}") from None
    return out


def _check_engine_options(prof: Profile) -> None:
    """A clear error for engine options the profile's engine does not take."""
    import inspect

    from arcoforge.forge.engines import get_engine

    params = inspect.signature(get_engine(prof.engine)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(prof.engine_options) - set(params) - {"plan", "progress"})
    if unknown:
        known = sorted(set(params) - {"plan", "progress"})
        raise ConfigError(f"bakery profile {prof.name!r}: engine {prof.engine!r} does not take "
                         f"{', '.join(unknown)} (it takes: {', '.join(known)})")


def bake_feedstock(feedstock_dir: str | os.PathLike[str], profile: str | None = None, *,
                   profiles: str | os.PathLike[str] | None = None,
                   catalog: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Bake every recipe of a feedstock with a bakery profile; returns ``{id: BuildResult}``.

    ``profile`` defaults to ``meta.yaml``'s.  Each recipe goes to ``<target root>/<id>.zarr``;
    with ``catalog`` each built store is published there (STAC Collection ``<id>``).
    """
    from arcoforge.forge.bake import bake
    from arcoforge.forge.io.fetch import SourceOptions

    d = os.path.abspath(os.fspath(feedstock_dir))
    problems = lint(d, profiles=profiles)
    if problems:
        raise FeedstockError(problems)
    meta = load_meta(d)
    name = profile or meta.profile
    if not name:
        raise ConfigError("no bakery profile: pass --profile NAME or set 'profile' in meta.yaml")
    known = load_profiles(profiles)
    if name not in known:
        raise ConfigError(f"unknown bakery profile {name!r} (known: {', '.join(sorted(known))})")
    prof = known[name]
    results: dict[str, Any] = {}
    for rid, recipe in load_recipes(d, meta).items():
        if prof.cache_root and isinstance(recipe.source_options, SourceOptions):
            opts = dataclasses.replace(recipe.source_options,
                                       cache=recipe.source_options.cache or prof.cache_root)
            recipe = dataclasses.replace(recipe, source_options=opts)
        target = prof.target_for(rid, recipe)
        workdir = (f"{prof.cache_root.rstrip('/')}/work-{rid}"
                   if prof.cache_root and "://" not in prof.cache_root else None)
        _check_engine_options(prof)
        results[rid] = bake(recipe, target, prof.engine,
                            storage_options=prof.storage_options or None, workdir=workdir,
                            progress=progress, version=meta.version, **prof.engine_options)
        if catalog is not None:
            from arcoforge.catalog import publish

            publish(catalog, target, dataset_id=rid, meta=meta, feedstock=d,
                    storage_options=prof.storage_options or None)
    return results

