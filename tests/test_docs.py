"""The documentation site: ``mkdocs build --strict`` (warnings are errors) with the tutorials
executed afresh, then the built site checked as a reader gets it.

The site is built once for the module (about two minutes on 2 cores: the six tutorials run at
reduced size). Then

* every internal link and resource of every page resolves to a built file, and every
  ``#fragment`` to an element id of its page (parsed from the HTML);
* headless Chromium opens every page from a loopback HTTP server: each loads, has its article,
  and every tutorial shows its figures (``img`` elements whose image decoded with a nonzero
  size);
* each tutorial page holds what its script printed, and the scripts are published with it.
"""

from __future__ import annotations

import html.parser
import json
import os
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.test_catalog import CHROMIUM, _chromium

pytestmark = pytest.mark.timeout(1200)  # the build executes six tutorials (~2 min on 2 idle cores)

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("mkdocstrings", reason="pip install -e '.[docs]'")
pytest.importorskip("material", reason="pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted(p.stem for p in (ROOT / "docs" / "tutorials").glob("[0-9][0-9]_*.py"))


def _shared_data() -> Path | None:
    env = os.environ.get("ARCOFORGE_SHARED_DATA")
    for c in ([Path(env)] if env else []) + [ROOT / "shared" / "data",
                                              ROOT.parent / "shared" / "data"]:
        if (c / "ersst-v5").is_dir():
            return c
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with ``--strict`` and every tutorial executed (no cache)."""
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "ARCOFORGE_DOCS_CACHE": "0", "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-8000:]}"
    print(f"docs built in {seconds:.0f} s")
    return out


# -- links, parsed from the built HTML -----------------------------------------------------------


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []  # (attribute, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)
            elif (name == "href" and tag in ("a", "link")) or \
                    (name == "src" and tag in ("img", "script", "iframe")):
                self.refs.append((f"{tag}[{name}]", value))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_no_internal_link_is_broken(site: Path) -> None:
    pages = {p: _parse(p) for p in _pages(site)}
    assert len(pages) >= 20, sorted(str(p) for p in pages)
    ids = {p.resolve(): page.ids for p, page in pages.items()}
    broken, checked = [], 0
    for path, page in pages.items():
        if path.name == "404.html":  # served for any missing URL: its links are site-absolute
            continue
        for attr, ref in page.refs:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith("//"):
                continue  # external (https:, mailto:, data:)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else \
                path.resolve()
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            where = f"{path.relative_to(site)}: {attr}={ref!r}"
            if not target.is_file():
                broken.append(f"{where} (no file {target})")
            elif parts.fragment and target.suffix == ".html" and \
                    unquote(parts.fragment) not in ids.get(target, set()):
                broken.append(f"{where} (no element id {parts.fragment!r} in {target.name})")
    assert not broken, "broken internal links:\n" + "\n".join(broken)
    assert checked > 500  # the nav alone links every page from every page


def test_tutorial_pages_hold_their_executed_output(site: Path) -> None:
    assert len(TUTORIALS) == 6, TUTORIALS
    for stem in TUTORIALS:
        page = site / "tutorials" / f"{stem}.html"
        text = page.read_text(encoding="utf-8")
        assert "Executed tutorial" in text and "ARCOFORGE_TUTORIAL_SIZE=small" in text
        assert (site / "tutorials" / f"{stem}.py").read_bytes() == \
            (ROOT / "docs" / "tutorials" / f"{stem}.py").read_bytes()  # the script, for download
        if _shared_data() is None:
            assert "shared data folder was not found" in text
    if _shared_data() is None:
        pytest.skip("the shared data folder is absent: the tutorials only said so")
    checks = {  # what each script printed, as its page shows it
        "01_end_to_end": ["verify: OK", "RMSE CNN", "RMSE neighbour mean"],
        "02_from_pangeo_forge": ["bake exit status 0", "verify exit status 0",
                                 "same sst in both stores: True"],
        "03_from_xbatcher": ["every 7th batch identical: True", "speed-up:"],
        "04_swath_regridding": ["cells with data:", "built ", "patches of 16 x 16"],
        "05_intake": ["by id, after the append: 7 months, version 1.1",
                      "has no version '1.0'"],
        "06_scaling_out": [f"{engine:10s} same data as threads: True"
                           for engine in ("threads", "processes", "dask", "beam")],
    }
    for stem, needles in checks.items():
        text = (site / "tutorials" / f"{stem}.html").read_text(encoding="utf-8")
        for needle in needles:
            assert needle in text, f"{stem}: {needle!r} not on the page"
    # nothing was left unrun
    assert not any("not run: the script stopped" in (site / "tutorials" / f"{s}.html")
                   .read_text(encoding="utf-8") for s in TUTORIALS)


# -- in headless Chromium ------------------------------------------------------------------------

#: every page in an iframe of one check page: the check page's load event waits for every frame
#: and every image in them, then its handler records what each frame shows
_HARNESS = """<!doctype html><html><head><meta charset="utf-8"></head><body>
<pre id="result">pending</pre>
%s
<script>
window.addEventListener("load", () => {
  const out = [];
  for (const frame of document.querySelectorAll("iframe")) {
    const doc = frame.contentDocument;
    const article = doc && doc.querySelector("article");
    const imgs = article ? Array.from(article.querySelectorAll("img")) : [];
    out.push({url: frame.dataset.page, loaded: doc !== null && doc.readyState === "complete",
              title: doc ? doc.title : "", article: article !== null,
              text: article ? article.innerText.length : 0,
              images: imgs.map((i) => ({src: i.getAttribute("src"), complete: i.complete,
                                         w: i.naturalWidth, h: i.naturalHeight,
                                         shown: i.getBoundingClientRect().width}))});
  }
  document.getElementById("result").textContent = JSON.stringify(out);
});
</script></body></html>
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/services.sh "
                    "installs it with apt-get); the site is not rendered")
def test_every_page_loads_in_chromium_with_its_figures(site: Path, tmp_path: Path) -> None:
    pages = [p.relative_to(site).as_posix() for p in _pages(site) if p.name != "404.html"]
    frames = "\n".join(f'<iframe width="1200" height="900" data-page="{p}" src="{p}"></iframe>'
                       for p in pages)
    (site / "_check.html").write_text(_HARNESS % frames, encoding="utf-8")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/_check.html"
        dom = _chromium(tmp_path, "--dump-dom", url).stdout
    finally:
        server.shutdown()
        server.server_close()
        (site / "_check.html").unlink()
    start = dom.index('<pre id="result">') + len('<pre id="result">')
    raw = html.unescape(dom[start:dom.index("</pre>", start)])
    assert raw != "pending", "the check page did not finish in Chromium"
    results = {r["url"]: r for r in json.loads(raw)}
    assert set(results) == set(pages)
    for url, r in results.items():
        assert r["loaded"] and r["article"] and r["title"], f"{url} did not load: {r}"
        assert r["text"] > 100, f"{url}: an empty article ({r})"
        for img in r["images"]:
            assert img["w"] > 0 and img["h"] > 0 and img["shown"] > 0, f"{url}: {img}"
    if _shared_data() is None:
        return
    for stem in TUTORIALS:
        r = results[f"tutorials/{stem}.html"]
        figures = [i for i in r["images"] if i["src"].startswith(f"{stem}_files/")]
        assert figures, f"{stem}: no figure on the page ({r['images']})"
