"""Forge sub-commands: ``bake``, ``verify``, ``inspect``, ``abandon``, ``demo``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

from arcoforge.cli import friendly_errors
from arcoforge.errors import ConfigError
from arcoforge.provenance import GROUPS, SOURCES, is_provenance_key

__all__ = ["register", "load_recipe", "load_recipes"]


def load_recipes(path: str) -> dict[str, Any]:
    """All recipes defined at module level in ``path`` (a ``recipe.py``), by variable name.

    A recipe is a :class:`~arcoforge.forge.recipes.ZarrRecipe` (pangeo-forge's
    ``XarrayZarrRecipe`` from :mod:`arcoforge.compat.pangeo_forge_recipes` is one), or a
    recognised recipe that arcoforge refuses with a reason when baked (``HDFReferenceRecipe``).
    A module that imports ``pangeo_forge_recipes`` gets the compat package for it when the
    real one is not installed.
    """
    from arcoforge.forge.feedstock import as_recipe, is_recipe, recipe_import_context

    file = Path(path)
    if not file.exists():
        raise ConfigError(f"recipe module {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"arcoforge_recipe_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent.resolve()))
    try:
        with recipe_import_context(file):
            spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    found = {k: as_recipe(v) for k, v in vars(module).items() if is_recipe(v)}
    extra = getattr(module, "recipes", None)
    if isinstance(extra, dict):
        found.update({str(k): as_recipe(v) for k, v in extra.items() if is_recipe(v)})
    return found


def load_recipe(spec: str) -> Any:
    """``recipe.py`` (exactly one recipe) or ``recipe.py:name``."""
    path, _, name = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    recipes = load_recipes(path)
    if not recipes:
        raise ConfigError(f"{path} defines no ZarrRecipe")
    if name:
        if name not in recipes:
            raise ConfigError(f"{path} has no recipe {name!r}; it defines {sorted(recipes)}")
        return recipes[name]
    if len(recipes) > 1:
        raise ConfigError(f"{path} defines several recipes {sorted(recipes)}; pick one with "
                         f"{path}:NAME")
    return next(iter(recipes.values()))


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if args.engine == "local":
        if args.workers:
            opts["workers"] = args.workers
        if args.processes:
            opts["processes"] = True
    elif args.engine == "dask":
        if args.scheduler:
            opts["scheduler"] = args.scheduler
        if args.workers:
            opts["workers"] = args.workers
    elif args.engine == "beam":
        if args.beam_option:
            opts["pipeline_options"] = list(args.beam_option)
    elif args.engine == "prefect":
        if args.workers:
            opts["workers"] = args.workers
    return opts


def _cmd_bake(args: argparse.Namespace) -> int:
    import arcoforge as af

    if Path(args.recipe).is_dir():  # a feedstock: meta.yaml + recipe.py, baked by its profile
        from arcoforge.cli.feedstock import bake_feedstock_command

        args.feedstock = args.recipe
        return bake_feedstock_command(args)
    if not args.target:
        raise ConfigError("--target is required when baking a recipe module (not a feedstock)")
    recipe = load_recipe(args.recipe)
    if args.prune:
        recipe.pattern = recipe.pattern.prune(args.prune)
    if args.append:
        from arcoforge.forge.append import append

        print(append(recipe, args.target, wait_lock=args.wait_lock, engine=args.engine,
                     progress=not args.no_progress, **_engine_options(args)))
        return 0
    result = af.bake(recipe, args.target, engine=args.engine, progress=not args.no_progress,
                     version_bump=args.version_bump, wait_lock=args.wait_lock,
                     **_engine_options(args))
    print(result)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from arcoforge.forge.verify import verify

    report = verify(args.target, load_recipe(args.against), version=args.version,
                    decode_times=False if args.no_decode_times else None)
    print(report)
    return 0 if report.ok else 1


def _cmd_inspect(args: argparse.Namespace) -> int:
    if args.thing.endswith(".py") or ".py:" in args.thing:
        from arcoforge.forge.bake import compile_plan

        recipe = load_recipe(args.thing)
        plan = compile_plan(recipe, args.target or "inspect.zarr")
        s = plan.schema
        print(recipe.pattern)
        print(f"dimensions: {s.dims}")
        print(f"chunks:     {plan.chunks}")
        print(f"variables:  {', '.join(f'{n}{v.dims} {v.dtype}' for n, v in s.variables.items())}")
        print(f"store tasks: {len(plan.tasks)}; raw size {s.nbytes() / 1e6:.1f} MB")
        return 0
    import arcoforge as af

    ds = af.open_dataset(args.thing)
    print(af.open_datatree(args.thing) if ds.attrs.get(GROUPS) else ds)  # a grouped store
    prov = {k: v for k, v in ds.attrs.items() if is_provenance_key(k)}
    if prov:
        sources = prov.pop(SOURCES, [])
        print(json.dumps(prov, indent=2, default=str))
        print(f"{len(sources)} sources, first: {sources[:1]}")
    return 0


def _cmd_abandon(args: argparse.Namespace) -> int:
    from arcoforge.forge.bake import abandon

    where = abandon(args.target, wait_lock=args.wait_lock)
    if where is None:
        print(f"{args.target}: no unfinished build to abandon")
    else:
        print(f"abandoned the unfinished build of {args.target} (removed {where}); the "
              "published versions are unchanged")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from arcoforge.demo import run_demo

    return run_demo(args.out, progress=not args.no_progress)


def register(sub: Any) -> None:
    """Add the forge sub-commands to ``sub`` (an argparse sub-parsers object)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    p = sub.add_parser("bake", help="build a recipe (or a feedstock) into a store")
    p.add_argument("recipe", help="recipe.py, recipe.py:NAME, or a feedstock folder")
    p.add_argument("--target", help="store URL or path (or icechunk://PATH); not for feedstocks")
    p.add_argument("--profile", help="feedstock: bakery profile (default: meta.yaml's)")
    p.add_argument("--profiles", help="feedstock: profiles YAML (default: $ARCOFORGE_PROFILES)")
    p.add_argument("--catalog", help="feedstock: publish to this STAC catalog")
    p.add_argument("--engine", default="local", choices=["local", "dask", "beam", "prefect"])
    p.add_argument("--workers", type=int, help="local/dask: number of workers")
    p.add_argument("--processes", action="store_true", help="local: use processes, not threads")
    p.add_argument("--scheduler", help="dask: scheduler address (default: a LocalCluster)")
    p.add_argument("--beam-option", action="append", metavar="KEY=VALUE",
                   help="beam: pipeline option, repeatable (e.g. --beam-option runner=FlinkRunner)")
    p.add_argument("--append", action="store_true", help="append new sources to the store")
    p.add_argument("--version-bump", choices=["minor", "major"], default="minor",
                   help="the new version is a compatible (minor) or breaking (major) change")
    p.add_argument("--wait-lock", action="store_true",
                   help="wait for another build of the same target instead of failing")
    p.add_argument("--prune", type=int, metavar="N", help="only the first N files (test build)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=friendly_errors(_cmd_bake))

    p = sub.add_parser("verify", help="check a store equals its sources")
    p.add_argument("target")
    p.add_argument("--against", required=True, metavar="RECIPE", help="recipe.py[:NAME]")
    p.add_argument("--version", help="a published version, e.g. 1.2")
    p.add_argument("--no-decode-times", action="store_true",
                   help="compare times as raw numbers (store and sources alike)")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=friendly_errors(_cmd_verify))

    p = sub.add_parser("inspect", help="describe a store, or a recipe's plan")
    p.add_argument("thing", help="store path/URL, or recipe.py[:NAME]")
    p.add_argument("--target", help="with a recipe: the target to plan for")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=friendly_errors(_cmd_inspect))

    p = sub.add_parser("abandon", help="give up the unfinished build of a target (removes its "
                       "resumable state; published versions stay)")
    p.add_argument("target", help="store URL or path, or icechunk://PATH")
    p.add_argument("--wait-lock", action="store_true",
                   help="wait for a running build of the target instead of failing")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=friendly_errors(_cmd_abandon))

    p = sub.add_parser("demo", help="bake the bundled NOAA files from a loopback HTTP server")
    p.add_argument("--out", help="folder for the stores (default: a temp folder)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=friendly_errors(_cmd_demo))
