"""``arcoforge catalog list | search | show | site | publish``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from arcoforge.cli import friendly_errors
from arcoforge.provenance import HREF

__all__ = ["register"]


def _cmd_list(args: argparse.Namespace) -> int:
    from arcoforge.catalog.search import summaries

    found = summaries(args.catalog)
    if args.json:
        print(json.dumps([s.__dict__ for s in found], indent=2))
    else:
        for s in found:
            print(s)
        if not found:
            print("(no datasets)")
    return 0


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected W,S,E,N numbers") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 4 numbers W,S,E,N")
    return values


def _cmd_search(args: argparse.Namespace) -> int:
    from arcoforge.catalog.search import search

    found = search(args.catalog, bbox=args.bbox, time=args.time, variables=args.variable,
                   text=args.text)
    if args.json:
        print(json.dumps([s.__dict__ for s in found], indent=2))
    else:
        for s in found:
            print(s)
        print(f"{len(found)} dataset(s)", file=sys.stderr)
    return 0 if found else 1


def _cmd_show(args: argparse.Namespace) -> int:
    from arcoforge.catalog.search import get_collection

    col = get_collection(args.catalog, args.dataset_id)
    col.pop(HREF, None)
    print(json.dumps(col, indent=2, ensure_ascii=False))
    return 0


def _cmd_site(args: argparse.Namespace) -> int:
    from arcoforge.catalog.site import write_site

    report = write_site(args.catalog, args.out, plots=not args.no_plots)
    print(f"wrote {len(report.written)} files to {args.out} (open {args.out}/index.html)")
    if not report.problems:
        return 0
    for cid, problem in report.problems.items():
        print(f"error: dataset {cid!r}: {problem}", file=sys.stderr)
    print(f"the site was written without what failed for {len(report.problems)} dataset(s); "
          "their pages and the index's 'Problems' section say what went wrong.",
          file=sys.stderr)
    return 1


def _cmd_publish(args: argparse.Namespace) -> int:
    from arcoforge.catalog.stac import publish

    meta: Any = None
    if args.feedstock:
        from arcoforge.forge.feedstock import load_meta

        meta = load_meta(args.feedstock)
    col = publish(args.catalog, args.target, dataset_id=args.id, meta=meta,
                  version=args.version, feedstock=args.feedstock,
                  lock_timeout=args.lock_timeout)
    print(f"published {col['id']} version {col['version']} to {args.catalog}")
    return 0


def register(sub: Any) -> None:
    """Add ``arcoforge catalog ...`` to ``sub`` (an argparse sub-parsers object)."""
    p = sub.add_parser("catalog", help="STAC catalog: list, search, show, site, publish")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)

    q = csub.add_parser("list", help="list the datasets of a catalog")
    q.add_argument("catalog", help="catalog folder or URL")
    q.add_argument("--json", action="store_true")
    q.add_argument("--debug", action="store_true")
    q.set_defaults(func=friendly_errors(_cmd_list))

    q = csub.add_parser("search", help="find datasets by bbox, time, variables, text")
    q.add_argument("catalog")
    q.add_argument("--bbox", type=_floats, metavar="W,S,E,N",
                   help="overlapping box (write --bbox=-80,-40,-60,-20 for negative W)")
    q.add_argument("--time", metavar="START/END", help="e.g. 2020, 2019-06/2020-01, ../2020")
    q.add_argument("--variable", action="append", metavar="NAME",
                   help="variable or CF standard name (repeatable; all must be present)")
    q.add_argument("--text", help="words to find in id/title/description/keywords/variables")
    q.add_argument("--json", action="store_true")
    q.add_argument("--debug", action="store_true")
    q.set_defaults(func=friendly_errors(_cmd_search))

    q = csub.add_parser("show", help="print a dataset's STAC Collection")
    q.add_argument("catalog")
    q.add_argument("dataset_id")
    q.add_argument("--debug", action="store_true")
    q.set_defaults(func=friendly_errors(_cmd_show))

    q = csub.add_parser("site", help="write a static HTML site for the catalog")
    q.add_argument("catalog")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--no-plots", action="store_true", help="skip the PNG quick-looks")
    q.add_argument("--debug", action="store_true")
    q.set_defaults(func=friendly_errors(_cmd_site))

    q = csub.add_parser("publish", help="add or update a built store in the catalog")
    q.add_argument("catalog")
    q.add_argument("target", help="the built store")
    q.add_argument("--id", help="dataset id: letters, digits, '.', '_', '-' (default: the "
                   "store's name)")
    q.add_argument("--feedstock", help="feedstock folder (title, license, providers...)")
    q.add_argument("--version", help="MAJOR.MINOR (default: meta.yaml's)")
    q.add_argument("--lock-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="wait this long for another publish to the same catalog (default 300)")
    q.add_argument("--debug", action="store_true")
    q.set_defaults(func=friendly_errors(_cmd_publish))
