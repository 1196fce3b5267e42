"""A static HTML site for a catalog: ``arcoforge catalog site CATALOG --out DIR``.

``index.html`` lists every dataset with a client-side filter (a few lines of inline JS that only
show/hide elements); ``<id>.html`` per dataset has a quick-look map of the first time step, a
time series of the spatial mean, dimension and variable tables, versions, provenance and a
snippet to open it.  Every text taken from metadata is HTML-escaped, and plot labels are drawn
as plain text (a ``$`` in a title or ``long_name`` is not matplotlib mathtext).

Page names never collide: a dataset whose id is a safe name (:data:`~arcoforge.catalog.stac.
ID_PATTERN`) gets ``<id>.html``; any other id (``team/sst`` in an old catalog), an id equal to
another but for case, or ``index``, gets a name with a short hash of the id.  One bad dataset
(its store gone, its Collection unreadable, a plot that fails) never blocks the site: its page
says what went wrong, the index lists it under "problems", and :func:`write_site` reports it.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.catalog.stac import (
    ID_PATTERN,
    PROVENANCE_FILE,
    REMOVED,
    _axes,
    _read_json,
    _root,
    read_collections,
)
from arcoforge.provenance import HREF, VERSIONS

__all__ = ["SiteReport", "build_site", "page_names", "quicklook_png", "timeseries_png",
           "write_site"]

log = logging.getLogger("arcoforge.catalog.site")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2733;
background:#f6f8fa}
header{background:#0b3d5c;color:#fff;padding:1rem 2rem}header a{color:#cfe8ff}
main{padding:1rem 2rem;max-width:1100px}
h1{margin:.2rem 0;font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.6rem}
.card{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:.8rem 1rem;
margin:.7rem 0}
.card h2{margin:.1rem 0 .3rem}.meta{color:#57606a;font-size:.9rem}
table{border-collapse:collapse;background:#fff;margin:.4rem 0}
td,th{border:1px solid #d8dee4;padding:.25rem .55rem;text-align:left;font-size:.9rem;
vertical-align:top}
th{background:#eef2f6}
pre{background:#0f1720;color:#e6edf3;padding:.8rem;border-radius:6px;overflow:auto}
input[type=search]{font-size:1rem;padding:.4rem .6rem;width:min(520px,90%);
border:1px solid #8c959f;border-radius:6px}
.imgs img{max-width:100%;border:1px solid #d8dee4;background:#fff;margin:.3rem 0}
.tag{display:inline-block;background:#ddf4ff;border-radius:10px;padding:0 .5rem;margin:0 .2rem
.2rem 0;font-size:.8rem}
code{font-family:ui-monospace,Menlo,monospace}
"""

_FILTER_JS = """
(function(){
  var box=document.getElementById('q');
  var count=document.getElementById('count');
  function apply(){
    var words=box.value.toLowerCase().split(/\\s+/).filter(function(w){return w;});
    var cards=document.querySelectorAll('.card');var shown=0;
    for(var i=0;i<cards.length;i++){
      var hay=(cards[i].getAttribute('data-search')||'').toLowerCase();
      var ok=words.every(function(w){return hay.indexOf(w)>=0;});
      cards[i].style.display=ok?'':'none';if(ok){shown++;}
    }
    count.textContent=shown+' of '+cards.length+' datasets';
  }
  box.addEventListener('input',apply);apply();
})();
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_SAFE = re.compile(ID_PATTERN)
_RESERVED = {"index"}


def page_names(dataset_ids: Sequence[str]) -> dict[str, str]:
    """``{id: page file name}``, distinct even on a case-insensitive disk and never
    ``index.html``; the same ids always get the same names."""
    names: dict[str, str] = {}
    used: set[str] = set(_RESERVED)
    later = []
    for cid in dataset_ids:  # safe ids keep their own name
        if cid in names:
            continue
        if _SAFE.fullmatch(cid) and cid.lower() not in used:
            names[cid] = cid
            used.add(cid.lower())
        else:
            later.append(cid)
    for cid in later:
        if cid in names:
            continue
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", cid)[:60].lstrip(".-") or "dataset"
        name = f"{base}-{hashlib.sha256(cid.encode()).hexdigest()[:8]}"
        n = 1
        while name.lower() in used:
            n += 1
            name = f"{base}-{hashlib.sha256(cid.encode()).hexdigest()[:8]}-{n}"
        names[cid] = name
        used.add(name.lower())
    return {cid: f"{slug}.html" for cid, slug in names.items()}


def _page(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}{js}</body></html>\n"
    )


# -- plots -----------------------------------------------------------------------------------


def _first_data_var(ds: xr.Dataset) -> tuple[str, xr.DataArray, dict[str, str]] | None:
    axes = _axes(ds)
    inv = {ax: name for name, ax in axes.items()}
    for name, var in ds.data_vars.items():
        if "X" in inv and "Y" in inv and inv["X"] in var.dims and inv["Y"] in var.dims \
                and var.dtype.kind in "iuf":
            return str(name), var, inv
    return None


def quicklook_png(ds: xr.Dataset, path: str) -> str | None:
    """A map of the first time step of the first gridded variable; returns its name or None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = _first_data_var(ds)
    if found is None:
        return None
    name, var, inv = found
    sel = {d: 0 for d in var.dims if d not in (inv["X"], inv["Y"])}
    field = var.isel(sel).transpose(inv["Y"], inv["X"]).load()
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=90)
    try:
        x, y = ds[inv["X"]].values, ds[inv["Y"]].values
        mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(field.values), shading="auto",
                             cmap="viridis")
        cb = fig.colorbar(mesh, ax=ax, shrink=0.85)
        cb.set_label(str(var.attrs.get("units", "")), parse_math=False)
        when = ""
        if "T" in inv and inv["T"] in var.dims:
            when = f" at {str(ds[inv['T']].values[0])[:19]}"
        ax.set_title(f"{var.attrs.get('long_name', name)}{when}", fontsize=10,
                     parse_math=False)
        ax.set_xlabel(inv["X"], parse_math=False)
        ax.set_ylabel(inv["Y"], parse_math=False)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return name


def timeseries_png(ds: xr.Dataset, path: str) -> str | None:
    """The area-weighted (cos latitude) spatial mean of the first gridded variable over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = _first_data_var(ds)
    if found is None:
        return None
    name, var, inv = found
    if "T" not in inv or inv["T"] not in var.dims:
        return None
    others = {d: 0 for d in var.dims if d not in (inv["X"], inv["Y"], inv["T"])}
    v = var.isel(others)
    lat = ds[inv["Y"]]
    if lat.ndim == 1 and "degree" in str(lat.attrs.get("units", "degrees_north")):
        coslat = np.cos(np.deg2rad(np.asarray(lat.values, dtype=float)))
        weights = lat.copy(data=coslat).fillna(0)
        series = v.weighted(weights).mean((inv["X"], inv["Y"]))
    else:
        series = v.mean((inv["X"], inv["Y"]))
    series = series.load()
    fig, ax = plt.subplots(figsize=(7.5, 3), dpi=90)
    try:
        ax.plot(ds[inv["T"]].values, series.values, marker=".", color="#0b3d5c")
        ax.set_title(f"spatial mean of {var.attrs.get('long_name', name)}", fontsize=10,
                     parse_math=False)
        ax.set_ylabel(str(var.attrs.get("units", "")), parse_math=False)
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return name


# -- pages -----------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt_extent(d: Mapping[str, Any]) -> str:
    if "extent" in d:
        return " … ".join("open" if v is None else str(v) for v in d["extent"])
    if "values" in d:
        vals = list(d["values"])
        return ", ".join(map(str, vals[:5])) + (" …" if len(vals) > 5 else "")
    return ""


def _dataset_page(col: Mapping[str, Any], catalog: str, images: dict[str, str],
                  provenance: Mapping[str, Any] | None, problem: str | None = None) -> str:
    cid = str(col["id"])
    title = str(col.get("title") or cid)
    dims = col.get("cube:dimensions") or {}
    variables = col.get("cube:variables") or {}
    dim_rows = [[n, d.get("type", ""), d.get("axis", ""), _fmt_extent(d),
                 "" if d.get("step") is None else d.get("step"), d.get("unit", "")]
                for n, d in dims.items()]
    var_rows = [[n, v.get("type", ""), ", ".join(v.get("dimensions", [])), v.get("unit", ""),
                 v.get("data_type", ""), v.get("description", "")]
                for n, v in variables.items()]
    ver_rows = [[v.get("version"), v.get("created", ""), v.get("href", ""),
                 (v.get("recipe_hash") or "")[:16],
                 "removed from the store by retention (cannot be opened)" if v.get(REMOVED)
                 else "opens"]
                for v in reversed(col.get(VERSIONS) or [])]
    providers = "".join(
        f"<li>{_e(p.get('name'))} <span class='meta'>({_e(', '.join(p.get('roles', [])))})"
        "</span>" + (f" <a href='{_e(p['url'])}' rel='noopener'>{_e(p['url'])}</a>"
                     if str(p.get("url", "")).startswith(("http://", "https://")) else "")
        + "</li>" for p in col.get("providers") or [])
    snippet = (f"import arcoforge as af\n\nds = af.open_dataset({json.dumps(catalog)}, "
               f"{json.dumps(cid)})\nprint(ds)")
    imgs = ""
    if images.get("quicklook"):
        imgs += (f"<img id='quicklook' src='{_e(images['quicklook'])}' "
                 f"alt='quick-look map of the first time step of {_e(cid)}'>")
    if images.get("timeseries"):
        imgs += (f"<img id='timeseries' src='{_e(images['timeseries'])}' "
                 f"alt='time series of the spatial mean of {_e(cid)}'>")
    prov = ""
    if provenance:
        sources = provenance.get("sources") or []
        src_rows = [[s.get("url"), s.get("size"), s.get("sha256")] for s in sources]
        pkg = provenance.get("package_versions") or {}
        prov = (
            f"<p>Recipe hash <code>{_e(provenance.get('recipe_hash'))}</code>, built "
            f"{_e(provenance.get('created'))}"
            + (f" from feedstock <code>{_e(provenance.get('feedstock'))}</code>"
               if provenance.get("feedstock") else "") + ".</p>"
            + f"<p class='meta'>{_e(', '.join(f'{k} {v}' for k, v in pkg.items()))}</p>"
            + f"<details><summary>{len(sources)} source files (sha256)</summary>"
            + _table(["url", "bytes", "sha256"], src_rows) + "</details>"
        )
    t0, t1 = (col.get("extent", {}).get("temporal", {}).get("interval") or [[None, None]])[0]
    bbox = (col.get("extent", {}).get("spatial", {}).get("bbox") or [[]])[0]
    keywords = "".join(f"<span class='tag'>{_e(k)}</span>" for k in col.get("keywords") or [])
    body = (
        f"<header><a href='index.html'>← all datasets</a><h1 id='title'>{_e(title)}</h1>"
        f"<div><code>{_e(cid)}</code> · version {_e(col.get('version'))} · license "
        f"{_e(col.get('license'))}</div></header><main>"
        f"<p id='description'>{_e(col.get('description'))}</p><div>{keywords}</div>"
        f"<p class='meta'>bbox {_e(bbox)} · time {_e(t0)} … {_e(t1)}</p>"
        + (f"<p id='problem' class='meta'>{_e(problem)}</p>" if problem else "")
        + f"<div class='imgs'>{imgs or '<p>(no gridded variable to plot)</p>'}</div>"
        f"<h2>Open it</h2><pre id='snippet'><code>{_e(snippet)}</code></pre>"
        f"<h2>Dimensions</h2>{_table(['name', 'type', 'axis', 'extent', 'step', 'unit'], dim_rows)}"
        f"<h2>Variables</h2>"
        f"{_table(['name', 'type', 'dimensions', 'unit', 'data type', 'description'], var_rows)}"
        f"<h2>Versions</h2>{_table(['version', 'created', 'store', 'recipe hash', 'status'], ver_rows)}"
        f"<h2>Providers</h2><ul>{providers}</ul>"
        f"<h2>Provenance</h2>{prov or '<p>(none recorded)</p>'}"
        "</main>"
    )
    return _page(f"{title} — arcoforge", body)


def _card(col: Mapping[str, Any], page: str | None) -> str:
    cid = str(col["id"])
    title = str(col.get("title") or cid)
    cube = col.get("cube:variables") or {}
    variables = [n for n, v in cube.items() if v.get("type", "data") == "data"]
    t0, t1 = (col.get("extent", {}).get("temporal", {}).get("interval") or [[None, None]])[0]
    search_text = " ".join([cid, title, str(col.get("description", "")), *cube,
                            *[str(k) for k in col.get("keywords") or []]])
    desc = str(col.get("description", ""))
    if len(desc) > 300:
        desc = desc[:300] + "…"
    heading = f"<a href='{_e(page)}'>{_e(title)}</a>" if page else _e(title)
    return (
        f"<div class='card' data-id='{_e(cid)}' data-search='{_e(search_text)}'>"
        f"<h2>{heading}</h2>"
        f"<div class='meta'><code>{_e(cid)}</code> · v{_e(col.get('version'))} · "
        f"{_e(col.get('license'))} · {_e((t0 or '')[:10])} … {_e((t1 or '')[:10])} · "
        f"variables: {_e(', '.join(variables))}</div><p>{_e(desc)}</p></div>"
    )


def _index_page(cards: Sequence[str], problems: Mapping[str, str]) -> str:
    trouble = ""
    if problems:
        items = "".join(f"<li><code>{_e(name)}</code>: {_e(text)}</li>"
                        for name, text in problems.items())
        trouble = f"<section id='problems'><h2>Problems</h2><ul>{items}</ul></section>"
    body = (
        "<header><h1>arcoforge datasets</h1><div>Analysis-ready, cloud-optimized datasets"
        "</div></header><main>"
        "<p><input id='q' type='search' placeholder='filter by id, title, variable, keyword…' "
        "aria-label='filter datasets'> <span id='count' class='meta'></span></p>"
        f"<div id='datasets'>{''.join(cards)}</div>{trouble}</main>"
    )
    return _page("arcoforge datasets", body, _FILTER_JS)


@dataclass
class SiteReport:
    """What :func:`write_site` did: the files it wrote, each dataset's page name, and a
    ``{dataset: problem}`` for every dataset it could not fully render (empty when all went
    well)."""

    written: list[str] = field(default_factory=list)
    pages: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


def _provenance_of(col: Mapping[str, Any], storage_options: Mapping[str, Any] | None
                   ) -> Mapping[str, Any] | None:
    col_href = str(col.get(HREF, ""))
    if not col_href:
        return None
    folder = col_href.rsplit("/", 1)[0]
    href = ((col.get("assets") or {}).get("provenance") or {}).get("href")
    if href:
        url = href if "://" in href or href.startswith("/") else \
            f"{folder}/{str(href).removeprefix('./')}"
        return dict(_read_json(url, storage_options))
    try:  # a catalog written before provenance files were versioned
        return dict(_read_json(f"{folder}/{PROVENANCE_FILE}", storage_options))
    except (OSError, ValueError):
        return None


def write_site(catalog: Any, out: str | os.PathLike[str], *,
               storage_options: Mapping[str, Any] | None = None,
               plots: bool = True) -> SiteReport:
    """Write the static site for ``catalog`` into folder ``out``.

    A dataset that cannot be fully rendered (store unreadable, Collection unreadable, a plot
    or provenance that fails) is recorded in the report's ``problems`` under its id; its page
    is still written when its Collection could be read, and every other dataset is rendered."""
    from arcoforge.open import open_dataset

    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    # the snippet must work from anywhere: a local catalog by its absolute path
    catalog_url = _root(catalog)
    report = SiteReport()
    cols = read_collections(catalog, storage_options, problems=report.problems)
    seen: set[str] = set()
    unique = []
    for col in cols:
        cid = str(col.get("id"))
        if cid in seen:
            report.problems[cid] = "listed twice in catalog.json (only the first is shown)"
            continue
        seen.add(cid)
        unique.append(col)
    report.pages = page_names([str(c["id"]) for c in unique])
    cards = []
    for col in unique:
        cid = str(col["id"])
        page_name = report.pages[cid]
        slug = page_name.removesuffix(".html")
        images: dict[str, str] = {}
        notes = []
        href = (col.get("assets") or {}).get("zarr", {}).get("href")
        if plots and href:
            try:
                ds = open_dataset(href)
                for kind, fn in (("quicklook", quicklook_png), ("timeseries", timeseries_png)):
                    png = os.path.join(out, f"{slug}-{kind}.png")
                    if fn(ds, png):
                        images[kind] = os.path.basename(png)
                        report.written.append(png)
            except Exception as err:  # one bad dataset never blocks the site
                notes.append(f"the quick-look could not be drawn from {href}: {err}")
        try:
            provenance = _provenance_of(col, storage_options)
        except Exception as err:
            provenance = None
            notes.append(f"its provenance could not be read: {err}")
        problem = "; ".join(notes) or None
        try:
            text = _dataset_page(col, catalog_url, images, provenance, problem)
            page = os.path.join(out, page_name)
            with open(page, "w", encoding="utf-8") as f:
                f.write(text)
            report.written.append(page)
        except Exception as err:
            notes.append(f"its page could not be written: {err}")
            page_name = ""
        if notes:
            report.problems[cid] = "; ".join(notes)
        try:
            cards.append(_card(col, page_name or None))
        except Exception as err:
            report.problems[cid] = "; ".join([*notes, f"its index entry failed: {err}"])
    index = os.path.join(out, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(_index_page(cards, report.problems))
    report.written.append(index)
    for cid, text in report.problems.items():
        log.warning("catalog site: dataset %r: %s", cid, text)
    return report


def build_site(catalog: Any, out: str | os.PathLike[str], *,
               storage_options: Mapping[str, Any] | None = None,
               plots: bool = True) -> list[str]:
    """Write the static site for ``catalog`` into folder ``out``; returns the written paths.
    Datasets that could not be fully rendered are logged as warnings (see :func:`write_site`
    for a report of them)."""
    return write_site(catalog, out, storage_options=storage_options, plots=plots).written
