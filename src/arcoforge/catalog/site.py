"""A static HTML site for a catalog: ``arcoforge catalog site CATALOG --out DIR``.

``index.html`` lists every dataset with a client-side filter (a few lines of inline JS that only
show/hide elements); ``<id>.html`` per dataset has a quick-look map of the first time step, a
time series of the spatial mean, dimension and variable tables, versions, provenance and a
snippet to open it.  Every text taken from metadata is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.catalog.stac import PROVENANCE_FILE, _axes, _read_json, read_collections

__all__ = ["build_site", "quicklook_png", "timeseries_png"]

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


def _slug(dataset_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dataset_id)


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
        cb.set_label(str(var.attrs.get("units", "")))
        when = ""
        if "T" in inv and inv["T"] in var.dims:
            when = f" at {str(ds[inv['T']].values[0])[:19]}"
        ax.set_title(f"{var.attrs.get('long_name', name)}{when}", fontsize=10)
        ax.set_xlabel(inv["X"])
        ax.set_ylabel(inv["Y"])
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
        ax.set_title(f"spatial mean of {var.attrs.get('long_name', name)}", fontsize=10)
        ax.set_ylabel(str(var.attrs.get("units", "")))
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
                  provenance: Mapping[str, Any] | None) -> str:
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
                 (v.get("recipe_hash") or "")[:16]]
                for v in reversed(col.get("arcoforge:versions") or [])]
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
        f"<div class='imgs'>{imgs or '<p>(no gridded variable to plot)</p>'}</div>"
        f"<h2>Open it</h2><pre id='snippet'><code>{_e(snippet)}</code></pre>"
        f"<h2>Dimensions</h2>{_table(['name', 'type', 'axis', 'extent', 'step', 'unit'], dim_rows)}"
        f"<h2>Variables</h2>"
        f"{_table(['name', 'type', 'dimensions', 'unit', 'data type', 'description'], var_rows)}"
        f"<h2>Versions</h2>{_table(['version', 'created', 'store', 'recipe hash'], ver_rows)}"
        f"<h2>Providers</h2><ul>{providers}</ul>"
        f"<h2>Provenance</h2>{prov or '<p>(none recorded)</p>'}"
        "</main>"
    )
    return _page(f"{title} — arcoforge", body)


def _index_page(cols: Sequence[Mapping[str, Any]], pages: dict[str, str]) -> str:
    cards = []
    for col in cols:
        cid = str(col["id"])
        title = str(col.get("title") or cid)
        variables = list((col.get("cube:variables") or {}).keys())
        t0, t1 = (col.get("extent", {}).get("temporal", {}).get("interval") or [[None, None]])[0]
        search_text = " ".join([cid, title, str(col.get("description", "")), *variables,
                                *[str(k) for k in col.get("keywords") or []]])
        desc = str(col.get("description", ""))
        if len(desc) > 300:
            desc = desc[:300] + "…"
        cards.append(
            f"<div class='card' data-id='{_e(cid)}' data-search='{_e(search_text)}'>"
            f"<h2><a href='{_e(pages[cid])}'>{_e(title)}</a></h2>"
            f"<div class='meta'><code>{_e(cid)}</code> · v{_e(col.get('version'))} · "
            f"{_e(col.get('license'))} · {_e((t0 or '')[:10])} … {_e((t1 or '')[:10])} · "
            f"variables: {_e(', '.join(variables))}</div><p>{_e(desc)}</p></div>"
        )
    body = (
        "<header><h1>arcoforge datasets</h1><div>Analysis-ready, cloud-optimized datasets"
        "</div></header><main>"
        "<p><input id='q' type='search' placeholder='filter by id, title, variable, keyword…' "
        "aria-label='filter datasets'> <span id='count' class='meta'></span></p>"
        f"<div id='datasets'>{''.join(cards)}</div></main>"
    )
    return _page("arcoforge datasets", body, _FILTER_JS)


def build_site(catalog: Any, out: str | os.PathLike[str], *,
               storage_options: Mapping[str, Any] | None = None,
               plots: bool = True) -> list[str]:
    """Write the static site for ``catalog`` into folder ``out``; returns the written paths."""
    from arcoforge.open import open_dataset

    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    catalog_url = catalog if isinstance(catalog, str) else os.fspath(catalog)
    cols = read_collections(catalog, storage_options)
    written: list[str] = []
    pages: dict[str, str] = {}
    for col in cols:
        cid = str(col["id"])
        slug = _slug(cid)
        pages[cid] = f"{slug}.html"
        images: dict[str, str] = {}
        href = (col.get("assets") or {}).get("zarr", {}).get("href")
        if plots and href:
            ds = open_dataset(href)
            for kind, fn in (("quicklook", quicklook_png), ("timeseries", timeseries_png)):
                png = os.path.join(out, f"{slug}-{kind}.png")
                if fn(ds, png):
                    images[kind] = os.path.basename(png)
                    written.append(png)
        provenance = None
        col_href = str(col.get("arcoforge:href", ""))
        if col_href:
            prov_url = col_href.rsplit("/", 1)[0] + "/" + PROVENANCE_FILE
            try:
                provenance = _read_json(prov_url, storage_options)
            except (OSError, ValueError):
                provenance = None
        page = os.path.join(out, pages[cid])
        with open(page, "w", encoding="utf-8") as f:
            f.write(_dataset_page(col, catalog_url, images, provenance))
        written.append(page)
    index = os.path.join(out, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(_index_page(cols, pages))
    written.append(index)
    return written
