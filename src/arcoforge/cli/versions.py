"""``arcoforge versions TARGET``: list a dataset's published versions."""

from __future__ import annotations

import argparse
import json
from typing import Any

from arcoforge.cli import friendly_errors

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "versions",
        help="list the published versions of a target (Zarr URL or icechunk://path)",
        description="List the published versions (MAJOR.MINOR) of an arcoforge target, oldest "
        "first; the last one is the latest.",
    )
    p.add_argument("target", help="Zarr store URL/path or icechunk://<path>")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=friendly_errors(_cmd_versions))


def _cmd_versions(args: argparse.Namespace) -> int:
    from arcoforge.forge.versions import list_versions

    infos = list_versions(args.target)
    if args.json:
        print(json.dumps([{"version": i.version, "location": i.location, "created": i.created,
                           "latest": i.latest} for i in infos], indent=2))
        return 0
    if not infos:
        print(f"{args.target}: no published version")
        return 1
    print(f"{'version':>8}  {'created':20}  location")
    for info in infos:
        print(info)
    return 0
