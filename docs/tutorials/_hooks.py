"""MkDocs hooks (``hooks:`` in mkdocs.yml): execute the tutorials and add them to the site.

Every ``docs/tutorials/NN_*.py`` (a jupytext percent-format script) is run by
``_execute.py`` in its own Python process, at reduced size (``ARCOFORGE_TUTORIAL_SIZE=small``
unless set), two at a time; each becomes the page ``tutorials/NN_*.md`` -- its markdown cells,
its code, what the code printed and the figures it drew (PNG files under
``tutorials/NN_*_files/``) -- and the script itself is published next to it for download.

A tutorial that fails fails the build (its traceback is printed). Results are cached under
``build/docs-tutorials/`` keyed by the script, the executor, the arcoforge sources and the size;
``ARCOFORGE_DOCS_CACHE=0`` runs everything again (the test suite does);
``ARCOFORGE_DOCS_CACHE=scripts`` keys the cache by the scripts only (quick edits of the pages
while the library changes underneath).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.tutorials")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXECUTOR = HERE / "_execute.py"
#: pages another engineer may not have written yet; left out of the nav (with a note) if absent
OPTIONAL_PAGES = {"pangeo-forge.md", "engines.md", "regrid.md", "virtual.md", "transforms.md"}
MAX_OUTPUT_LINES = 60
#: tutorials that take longest (clusters, servers, training): started first, two at a time
SLOW_FIRST = {"06_scaling_out", "01_end_to_end"}


def _scripts() -> list[Path]:
    return sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))


def _sources_digest() -> str:
    h = hashlib.sha256()
    for path in sorted((ROOT / "src" / "arcoforge").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _key(script: Path, sources: str, size: str) -> str:
    h = hashlib.sha256()
    for part in (script.read_bytes(), EXECUTOR.read_bytes(), sources.encode(), size.encode()):
        h.update(part)
    return h.hexdigest()[:16]


def _run(script: Path, outdir: Path, env: dict[str, str]) -> tuple[Path, float, str]:
    if outdir.exists():
        shutil.rmtree(outdir)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(EXECUTOR), str(script), str(outdir)], env=env,
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        shutil.rmtree(outdir, ignore_errors=True)  # never taken from the cache
        raise PluginError(f"tutorial {script.name} failed (exit {proc.returncode}); run "
                          f"`python {script.relative_to(ROOT)}` to see it:\n"
                          f"{proc.stderr[-6000:]}")
    (outdir / "seconds").write_text(f"{seconds:.1f}")
    return outdir, seconds, proc.stderr


def execute_all() -> dict[str, Path]:
    """Execute (or take from the cache) every tutorial; map script name -> result folder."""
    size = os.environ.get("ARCOFORGE_TUTORIAL_SIZE", "small")
    mode = os.environ.get("ARCOFORGE_DOCS_CACHE", "1")
    use_cache = mode not in ("0", "false", "no")
    cache = ROOT / "build" / "docs-tutorials"
    sources = "" if mode == "scripts" else _sources_digest()
    env = {**os.environ, "ARCOFORGE_TUTORIAL_SIZE": size, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                       os.environ.get("PYTHONPATH")]))}
    todo, results = [], {}
    for script in _scripts():
        outdir = cache / f"{script.stem}-{_key(script, sources, size)}"
        if use_cache and (outdir / "seconds").exists():  # written only when it succeeded
            results[script.name] = outdir
        else:
            todo.append((script, outdir))
    todo.sort(key=lambda item: item[0].stem not in SLOW_FIRST)  # the longest start first
    workers = int(os.environ.get("ARCOFORGE_DOCS_JOBS", "2"))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_run, s, o, env): s for s, o in todo}
        for future, script in futures.items():
            outdir, seconds, _ = future.result()
            log.info("tutorial %s executed in %.1f s", script.name, seconds)
            results[script.name] = outdir
    for script in _scripts():  # results of earlier versions of a script are not needed again
        for old in cache.glob(f"{script.stem}-*"):
            if old != results[script.name]:
                shutil.rmtree(old, ignore_errors=True)
    return results


def _fence(text: str, lang: str) -> str:
    lines = text.rstrip("\n").splitlines()
    if len(lines) > MAX_OUTPUT_LINES:
        cut = len(lines) - MAX_OUTPUT_LINES
        lines = lines[: MAX_OUTPUT_LINES // 2] + [f"... ({cut} lines left out) ..."] + \
            lines[-MAX_OUTPUT_LINES // 2:]
    body = "\n".join(lines)
    ticks = "````" if "```" in body else "```"
    return f"{ticks}{lang}\n{body}\n{ticks}\n"


def render(script: Path, outdir: Path) -> str:
    """The markdown page of an executed tutorial."""
    record = json.loads((outdir / "cells.json").read_text())
    seconds = (outdir / "seconds").read_text() if (outdir / "seconds").exists() else "?"
    stem = script.stem
    parts: list[str] = []
    first = True
    for cell in record["cells"]:
        if cell["kind"] == "markdown":
            parts.append(cell["source"] + "\n")
            if first:  # under the title: where the page comes from
                parts.append(
                    f'!!! info "Executed tutorial"\n    This page is the script '
                    f"[`{script.name}`]({script.name}) (jupytext percent format: open it as a "
                    f"notebook, or run `python docs/tutorials/{script.name}`), executed when "
                    f"the site was built, at reduced size (`ARCOFORGE_TUTORIAL_SIZE=small`, "
                    f"{seconds} s on the build machine). Run it with "
                    f"`ARCOFORGE_TUTORIAL_SIZE=full` for the larger setting.\n")
                first = False
            continue
        parts.append(_fence(cell["source"], "python"))
        if not cell.get("ran"):
            parts.append("*(not run: the script stopped before this cell)*\n")
            continue
        text = cell.get("stdout", "")
        if text.strip():
            parts.append(_fence(text, "text"))
        for k, name in enumerate(cell.get("figures", []), start=1):
            parts.append(f"![{stem} figure {k}]({stem}_files/{name})\n")
    return "\n".join(parts)


_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|ref):`(~?)([^`]+)`")


def _rest_to_markdown(line: str) -> str:
    """The reST bits docstrings use, as markdown: ``:class:`~a.B``` -> ```B```, a paragraph's
    closing ``::`` (a literal block follows) -> ``:``."""
    line = _ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`",
                     line)
    if line.rstrip().endswith("::"):
        head = line.rstrip()[:-2]
        line = head + (":" if head.strip() else "")
    return line


class _DoctestFences(Preprocessor):
    """Fence interactive examples (``>>> ...`` lines, their ``...`` continuations and output)
    that docstrings hold outside an Examples section, so that markdown shows them as code
    instead of reading ``>>>`` as a quote and ``['a']`` as a link; turn reST roles and ``::``
    into markdown (:func:`_rest_to_markdown`)."""

    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        block: list[str] = []
        indent = ""

        def flush() -> None:
            if block:
                out.extend([f"{indent}```pycon", *block, f"{indent}```"])
                block.clear()

        fenced = False
        for line in lines:
            stripped = line.lstrip()
            if stripped.startswith("```"):
                flush()
                fenced = not fenced
                out.append(line)
                continue
            if fenced:
                out.append(line)
            elif stripped.startswith(">>>"):
                if not block:
                    indent = line[: len(line) - len(stripped)]
                block.append(line)
            elif block and stripped:  # a continuation or the example's output
                block.append(line)
            else:
                flush()
                out.append(_rest_to_markdown(line))
        flush()
        return out


class DoctestFences(Extension):
    """Markdown extension registering :class:`_DoctestFences` (used for docstrings and pages)."""

    def extendMarkdown(self, md: Any) -> None:  # noqa: N802 - Markdown's API
        md.preprocessors.register(_DoctestFences(md), "arcoforge_doctest_fences", 35)


@event_priority(100)  # before mkdocstrings reads the markdown extensions
def on_config(config: Any) -> Any:
    """Add the doctest-fencing extension; leave pages that are not written yet out of the nav
    instead of failing the build."""
    config["markdown_extensions"].append(DoctestFences())
    docs = Path(config["docs_dir"])

    def keep(item: Any) -> bool:
        if isinstance(item, str):
            target = item
        elif isinstance(item, dict):
            [(title, target)] = item.items()
            if isinstance(target, list):
                item[title] = [i for i in target if keep(i)]
                return True
        else:
            return True
        if isinstance(target, str) and target in OPTIONAL_PAGES and not (docs / target).exists():
            log.info("nav: %s is not written yet; left out", target)
            return False
        return True

    if config.get("nav"):
        config["nav"] = [i for i in config["nav"] if keep(i)]
    return config


def on_files(files: Files, config: Any) -> Files:
    """Execute the tutorials; add their pages, figures and scripts to the site's files."""
    for script_file in list(files):
        if script_file.src_uri.startswith("tutorials/_"):
            files.remove(script_file)  # the executor and these hooks are not published
    results = execute_all()
    for script in _scripts():
        outdir = results[script.name]
        stem = script.stem
        files.append(File.generated(config, f"tutorials/{stem}.md",
                                    content=render(script, outdir)))
        for png in sorted(outdir.glob("*.png")):
            files.append(File.generated(config, f"tutorials/{stem}_files/{png.name}",
                                        content=png.read_bytes()))
    return files
