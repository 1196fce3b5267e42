"""``arcoforge lint | test | feedstock bake`` for feedstock folders."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from arcoforge.cli import friendly_errors

__all__ = ["register", "bake_feedstock_command"]


def _cmd_lint(args: argparse.Namespace) -> int:
    from arcoforge.forge.feedstock import lint

    found = lint(args.feedstock, profiles=args.profiles, include_warnings=True)
    for p in found:
        print(p)
    problems = [p for p in found if p.severity == "error"]
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.feedstock}: ok")
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    from arcoforge.forge.feedstock import test_feedstock

    report = test_feedstock(args.feedstock, nkeep=args.nkeep)
    print(report)
    return report.exit_code


def bake_feedstock_command(args: argparse.Namespace) -> int:
    """``arcoforge bake FEEDSTOCK_DIR --profile NAME`` (also ``arcoforge feedstock bake``)."""
    from arcoforge.forge.feedstock import FeedstockError, bake_feedstock

    try:
        results = bake_feedstock(args.feedstock, args.profile, profiles=args.profiles,
                                 catalog=args.catalog, progress=not args.no_progress)
    except FeedstockError as err:
        for p in err.problems:
            print(p, file=sys.stderr)
        return 1
    for rid, result in results.items():
        print(f"{rid}: {result}")
    if args.catalog:
        print(f"published {', '.join(results)} to {args.catalog}")
    return 0


def register(sub: Any) -> None:
    """Add the feedstock sub-commands to ``sub`` (an argparse sub-parsers object)."""
    p = sub.add_parser("lint", help="check a feedstock's meta.yaml and recipes")
    p.add_argument("feedstock", metavar="FEEDSTOCK_DIR")
    p.add_argument("--profiles", metavar="FILE", help="bakery profiles (or $ARCOFORGE_PROFILES)")
    p.set_defaults(func=friendly_errors(_cmd_lint))

    p = sub.add_parser("test", help="lint + pruned test build + verify + CF checks")
    p.add_argument("feedstock", metavar="FEEDSTOCK_DIR")
    p.add_argument("--nkeep", type=int, default=2, metavar="N",
                   help="files kept per concat dimension (default 2)")
    p.set_defaults(func=friendly_errors(_cmd_test))

    p = sub.add_parser("feedstock", help="feedstock actions (bake)")
    fsub = p.add_subparsers(dest="feedstock_command", metavar="ACTION", required=True)
    q = fsub.add_parser("bake", help="bake every recipe of a feedstock with a bakery profile")
    q.add_argument("feedstock", metavar="FEEDSTOCK_DIR")
    q.add_argument("--profile", metavar="NAME", help="bakery profile (default: meta.yaml's)")
    q.add_argument("--profiles", metavar="FILE", help="profiles YAML (or $ARCOFORGE_PROFILES)")
    q.add_argument("--catalog", metavar="URL", help="publish each dataset to this STAC catalog")
    q.add_argument("--no-progress", action="store_true")
    q.add_argument("--debug", action="store_true")
    q.set_defaults(func=friendly_errors(bake_feedstock_command))
