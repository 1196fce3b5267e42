"""Command line: ``arcoforge bake | verify | inspect | demo | ...``.

Each subsystem owns its sub-commands: a module listed in :data:`SUBCOMMAND_MODULES` exposes
``register(subparsers)``, which adds its parsers and sets ``func`` (a callable taking the parsed
``argparse.Namespace`` and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

SUBCOMMAND_MODULES = (
    "arcoforge.cli.forge",
    "arcoforge.cli.catalog",
    "arcoforge.cli.feedstock",
    "arcoforge.cli.versions",
)


def friendly_errors(func: Callable[[argparse.Namespace], int]
                    ) -> Callable[[argparse.Namespace], int]:
    """Wrap a sub-command so that an :class:`~arcoforge.errors.ArcoforgeError` (bad input,
    unreachable sources, schema problems, unknown ids ...) or a path the user typed that does not
    exist prints one ``error: ...`` line and returns 1.  Anything else is a bug and shows its
    traceback; ``--debug`` (where the sub-command has it) shows the traceback of every error."""

    def wrapper(args: argparse.Namespace) -> int:
        from arcoforge.errors import ArcoforgeError

        try:
            return int(func(args) or 0)
        except (ArcoforgeError, FileNotFoundError) as err:
            if getattr(args, "debug", False):
                raise
            print(f"error: {err}", file=sys.stderr)
            for note in getattr(err, "__notes__", ()):  # e.g. where a failed build's state is
                print(note, file=sys.stderr)
            return 1

    return wrapper


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arcoforge",
        description="Archival Earth-science files to ARCO stores and ML batches.",
    )
    from arcoforge import __version__

    parser.add_argument("--version", action="version", version=f"arcoforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):  # subsystem not in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
