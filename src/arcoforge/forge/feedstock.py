"""Feedstocks: a folder with ``meta.yaml`` + ``recipe.py`` that describes one or more datasets.

* :class:`FeedstockMeta` — the ``meta.yaml`` schema (pydantic): title, description, SPDX
  license, providers, maintainers, recipes (``id: "module:object"``), bakery profile, version.
* :func:`lint` — every problem of a feedstock, each with its file and line.
* :func:`test_feedstock` — lint, a pruned build (first ``nkeep`` files per concat dimension),
  verification against the sources and structural CF checks; a readable report + exit code.
* Bakery profiles (:class:`Profile`, :func:`load_profiles`) and :func:`bake_feedstock`, which
  builds every recipe to ``<target root>/<recipe id>.zarr`` and publishes it to a catalog.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from arcoforge.errors import ArcoforgeError, ConfigError

__all__ = [
    "SPDX_LICENSES",
    "Provider",
    "Maintainer",
    "FeedstockMeta",
    "Problem",
    "FeedstockError",
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


# -- meta.yaml schema ------------------------------------------------------------------------


class Provider(BaseModel):
    """An organization that made, processed or hosts the data (a STAC provider)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    roles: list[Literal["licensor", "producer", "processor", "host"]] = Field(min_length=1)
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
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

    @field_validator("license")
    @classmethod
    def _spdx(cls, value: str) -> str:
        if value in SPDX_LICENSES or value == "other" or re.match(r"^LicenseRef-[\w.-]+$", value):
            return value
        close = [s for s in SPDX_LICENSES if s.lower() == value.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"{value!r} is not a known SPDX license id{hint}; use an SPDX id such as "
            "'CC-BY-4.0', 'CC0-1.0' or 'Apache-2.0', 'LicenseRef-<name>', or 'other'"
        )

    @field_validator("recipes")
    @classmethod
    def _recipe_refs(cls, value: dict[str, str]) -> dict[str, str]:
        for rid, ref in value.items():
            if not re.match(_RECIPE_ID, str(rid)):
                raise ValueError(f"recipe id {rid!r} must be lower case letters, digits, '-', '_', '.'")
            if not isinstance(ref, str) or not re.match(_RECIPE_REF, ref):
                raise ValueError(f"recipe {rid!r}: {ref!r} is not of the form 'module:object'")
        return value


# -- problems and line numbers ---------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One lint problem: where (file, 1-based line) and what."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


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
        return FeedstockMeta.model_validate(data)
    except ValidationError as err:
        raise FeedstockError(_validation_problems(path, root, err)) from None


# -- recipes ---------------------------------------------------------------------------------


def _import_module(feedstock_dir: str, module: str) -> Any:
    """Import ``<feedstock_dir>/<module>.py`` (dots → sub folders) under a private name."""
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


def _is_recipe(obj: Any) -> bool:
    from arcoforge.forge.recipes import ZarrRecipe

    return isinstance(obj, ZarrRecipe)


def _resolve_recipe(feedstock_dir: str, ref: str) -> Any:
    module, _, attr = ref.partition(":")
    obj: Any = _import_module(feedstock_dir, module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _recipe_problems(feedstock_dir: str, meta_path: str, root: yaml.Node | None,
                     recipes: Mapping[str, Any]) -> list[Problem]:
    problems = []
    modules: dict[str, Any] = {}
    for rid, ref in recipes.items():
        line = _line(root, ("recipes", rid))
        if not isinstance(ref, str) or not re.match(_RECIPE_REF, ref):
            continue  # reported by the schema
        module, _, attr = ref.partition(":")
        if module not in modules:
            try:
                modules[module] = _import_module(feedstock_dir, module)
            except Exception as err:  # noqa: BLE001 - any import failure is a lint problem
                modules[module] = err
        mod = modules[module]
        if isinstance(mod, BaseException):
            where = _traceback_line(mod, feedstock_dir)
            problems.append(Problem(meta_path, line,
                                    f"recipe {rid!r}: cannot import {module!r}: "
                                    f"{type(mod).__name__}: {mod}{where}"))
            continue
        obj: Any = mod
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            problems.append(Problem(meta_path, line,
                                    f"recipe {rid!r}: module {module!r} has no object {attr!r}"))
            continue
        if not _is_recipe(obj):
            problems.append(Problem(meta_path, line,
                                    f"recipe {rid!r}: {ref} is a {type(obj).__name__}, "
                                    "not an arcoforge recipe (af.ZarrRecipe)"))
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
    """``{recipe id: recipe object}`` of a feedstock (imports its ``recipe.py``)."""
    d = os.path.abspath(os.fspath(feedstock_dir))
    meta = meta or load_meta(d)
    out = {}
    for rid, ref in meta.recipes.items():
        obj = _resolve_recipe(d, ref)
        if not _is_recipe(obj):
            raise FeedstockError([Problem(os.path.join(d, META_FILE), 1,
                                          f"recipe {rid!r}: {ref} is not an arcoforge recipe")])
        out[rid] = obj
    return out


def prune_recipe(recipe: Any, nkeep: int = 2) -> Any:
    """A copy of ``recipe`` whose pattern keeps the first ``nkeep`` files per concat dim."""
    return dataclasses.replace(recipe, pattern=recipe.pattern.prune(nkeep))


# -- lint ------------------------------------------------------------------------------------


def lint(feedstock_dir: str | os.PathLike[str], *,
         profiles: str | os.PathLike[str] | None = None) -> list[Problem]:
    """Every problem of a feedstock, each with file and 1-based line; ``[]`` when clean.

    Checks the ``meta.yaml`` schema (required fields, SPDX license, roles, ORCID, version),
    that each recipe imports from the feedstock's modules and is an arcoforge recipe, and — when
    a profiles file is given or ``$ARCOFORGE_PROFILES`` is set — that the profile exists.
    """
    d = os.path.abspath(os.fspath(feedstock_dir))
    path = os.path.join(d, META_FILE)
    data, root, problems = _read_meta(d)
    if data is None:
        return problems
    try:
        FeedstockMeta.model_validate(data)
    except ValidationError as err:
        problems.extend(_validation_problems(path, root, err))
    recipes = data.get("recipes")
    if isinstance(recipes, Mapping):
        problems.extend(_recipe_problems(d, path, root, recipes))
    prof = data.get("profile")
    prof_path = profiles or os.environ.get(PROFILES_ENV)
    if isinstance(prof, str) and prof_path:
        try:
            known = load_profiles(prof_path)
        except (OSError, ValueError) as err:
            problems.append(Problem(os.fspath(prof_path), 1, f"cannot read profiles: {err}"))
        else:
            if prof not in known:
                problems.append(Problem(path, _line(root, ("profile",)),
                                        f"profile {prof!r} is not in {os.fspath(prof_path)} "
                                        f"(known: {', '.join(sorted(known)) or 'none'})"))
    return sorted(problems, key=lambda p: (p.file, p.line))


# -- CF checks -------------------------------------------------------------------------------


def cf_problems(ds: Any) -> tuple[list[str], list[str]]:
    """Structural CF checks with cf-xarray: ``(errors, warnings)``.

    Errors: a data variable without ``units``; no identifiable X, Y or T axis (when the data
    has more than one dimension); a time coordinate without units/calendar.  Warnings: a data
    variable without ``standard_name``; a time without an explicit ``calendar`` attribute.
    """
    import cf_xarray  # noqa: F401 - registers the .cf accessor

    errors: list[str] = []
    warnings: list[str] = []
    axes = ds.cf.axes
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
    report.lint_problems = lint(d)
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

    def target_for(self, recipe_id: str) -> str:
        return f"{self.target_root.rstrip('/')}/{recipe_id}.zarr"


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
        target = prof.target_for(rid)
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

