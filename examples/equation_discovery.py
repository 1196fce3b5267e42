# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Equation discovery: a pedotransfer function from soil attributes
#
# Land models turn soil attributes (sand, clay, organic matter, bulk density) into hydraulic
# parameters through *transfer functions*. Two ways of learning one from data:
#
# * **sparse regression (STLSQ)** -- the form is unknown: regress the target on a library of
#   candidate terms (here every polynomial of degree ≤ 2 in the four attributes, 15 terms) and
#   keep the few that matter by sequentially thresholded least squares (Brunton et al., 2016);
# * **an inverse method** -- the form is known, its parameters are not: fit them by gradient
#   descent, streaming the same data through arcoforge's PyTorch loader.
#
# The known answer is the wilting-point water content of Saxton & Rawls (2006, eq. 1),
# `θ1500t = −0.024 S + 0.487 C + 0.006 OM + 0.005 S·OM − 0.013 C·OM + 0.068 S·C + 0.031`
# (S, C sand and clay fractions, OM organic matter in %), seven of the 15 candidate terms;
# bulk density is a distractor that enters no term.
#
# The data are synthetic but shaped like a soil database: smooth random maps of the
# attributes on a 1 km-like grid for six SoilGrids depth layers, one NetCDF file per layer,
# baked into an ARCO Zarr store with `af.bake`. Observed targets carry measurement noise at
# five levels (a `noise` dimension of the store). Both methods read the store; STLSQ streams
# it as `(sample, feature)` blocks from `ds.arcoforge.to_table` and accumulates the normal
# equations block by block, so it never holds the table in memory.
#
# `python examples/equation_discovery.py --quick` runs the reduced size (CI); without it, the
# documented one (a 4× larger grid, more gradient steps).

# %%
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from itertools import combinations_with_replacement
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # small shared machines: see ssh_reconstruction.py

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

import arcoforge as af  # noqa: E402
from arcoforge.batch import iter_table  # noqa: E402

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
ROOT = HERE.parent
parser = argparse.ArgumentParser(description="Equation discovery: STLSQ vs an inverse method")
parser.add_argument("--quick", action="store_true", help="reduced size (CI): under a minute")
parser.add_argument("--out", type=Path, default=None,
                    help="folder for figures and metrics.json (default: docs/science, or "
                         "build/examples/equations with --quick)")
parser.add_argument("--threads", type=int, default=1, help="torch threads")
ARGS, _ = parser.parse_known_args()
QUICK = ARGS.quick or os.environ.get("ARCOFORGE_TUTORIAL_SIZE") == "small"
OUT = ARGS.out or (ROOT / "build" / "examples" / "equations" if QUICK
                   else ROOT / "docs" / "science")
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(ARGS.threads)
torch.manual_seed(0)
SETTING = dict(grid=48 if QUICK else 192, epochs=12 if QUICK else 3, batch_size=32)
NOISE = [0.0, 0.005, 0.01, 0.02, 0.04]           # measurement noise std (m³/m³)
T0 = time.perf_counter()
print("setting:", "quick" if QUICK else "full", SETTING)

# %% [markdown]
# ## 1. Synthetic soil attributes, one NetCDF file per depth layer

# %%
TRUE = {"1": 0.031, "S": -0.024, "C": 0.487, "OM": 0.006, "S·OM": 0.005, "C·OM": -0.013,
        "S·C": 0.068}


def theta_1500t(s: np.ndarray, c: np.ndarray, om: np.ndarray) -> np.ndarray:
    """Saxton & Rawls (2006) eq. 1: first-solution wilting-point water content (m³/m³)."""
    return (TRUE["1"] + TRUE["S"] * s + TRUE["C"] * c + TRUE["OM"] * om + TRUE["S·OM"] * s * om
            + TRUE["C·OM"] * c * om + TRUE["S·C"] * s * c)


def smooth_field(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """A random field with correlation length ``scale`` cells, standardized."""
    f = gaussian_filter(rng.normal(size=(n, n)), scale, mode="wrap")
    return (f - f.mean()) / f.std()


DEPTHS = np.array([2.5, 10.0, 22.5, 45.0, 80.0, 150.0])   # SoilGrids layer mid-depths (cm)
WORK = Path(tempfile.mkdtemp(prefix="arcoforge-soil-"))
rng = np.random.default_rng(1500)
n = SETTING["grid"]
y = np.arange(n) * 1000.0
x = np.arange(n) * 1000.0
base = {k: smooth_field(rng, n, n / 12) for k in ("sand", "clay", "om", "bd")}
files = []
for k, depth in enumerate(DEPTHS):
    wiggle = {key: smooth_field(rng, n, n / 24) for key in base}
    # texture: a logistic split of the mineral fraction; clay grows and OM shrinks with depth
    a = 1.2 * base["sand"] + 0.4 * wiggle["sand"] - 0.1 * k
    b = 1.0 * base["clay"] + 0.4 * wiggle["clay"] + 0.1 * k
    e = np.exp(np.stack([a, b, np.zeros_like(a)]))
    sand, clay = 0.95 * e[0] / e.sum(0), 0.95 * e[1] / e.sum(0)
    om = np.exp(0.8 + 0.5 * base["om"] + 0.2 * wiggle["om"] - 0.018 * depth)
    bd = 1.35 + 0.08 * base["bd"] + 0.04 * wiggle["bd"] + 0.002 * depth - 0.03 * om
    theta = theta_1500t(sand, clay, om)
    obs = theta[None] + np.array(NOISE)[:, None, None] * rng.normal(size=(len(NOISE), n, n))
    ds = xr.Dataset(
        {"sand": (("y", "x"), sand, {"units": "1", "long_name": "sand fraction"}),
         "clay": (("y", "x"), clay, {"units": "1", "long_name": "clay fraction"}),
         "om": (("y", "x"), om, {"units": "%", "long_name": "organic matter"}),
         "bd": (("y", "x"), bd, {"units": "g cm-3", "long_name": "bulk density"}),
         "theta_wp": (("noise", "y", "x"), obs,
                      {"units": "m3 m-3", "long_name": "measured wilting-point water content"})},
        coords={"y": y, "x": x, "noise": ("noise", NOISE, {"units": "m3 m-3"})},
    ).expand_dims(depth=[depth])
    ds["depth"].attrs = {"units": "cm", "positive": "down"}
    path = WORK / f"soil_{k}.nc"
    ds.to_netcdf(path, engine="netcdf4",
                 encoding={v: {"dtype": "float32", "zlib": True} for v in ds.data_vars})
    files.append(path)
print(f"{len(files)} NetCDF layers of {n}×{n} cells in {WORK}")

# %% [markdown]
# ## 2. Bake them into one ARCO store, open it, stream it as a table

# %%
pattern = af.FilePattern(lambda depth: str(files[depth]),
                         af.ConcatDim("depth", keys=list(range(len(files))), nitems_per_file=1))
recipe = af.ZarrRecipe(pattern, target_chunks={"depth": 1, "y": n // 2, "x": n // 2})
print(af.bake(recipe, WORK / "soil.zarr", progress=False))
soil = af.open_dataset(WORK / "soil.zarr")
table = soil.arcoforge.to_table(["depth", "y", "x"],
                                variables=["sand", "clay", "om", "bd", "theta_wp"])
print(f"table: {dict(table.sizes)}")
features = [str(f) for f in table["variable"].values[:4]]
print("features:", features, "+", table.sizes["feature"] - 4, "targets (one per noise level)")

# %% [markdown]
# ## 3. STLSQ on streamed normal equations
#
# Each block of rows becomes the candidate library `Θ` (15 columns: 1, S, C, OM, BD and every
# product of two of them); the blocks add up `ΘᵀΘ` and `Θᵀy` for all noise levels at once.
# STLSQ then solves least squares, zeroes every term whose *standardized* coefficient
# (coefficient × the term's standard deviation ÷ the target's) is below a threshold, and solves
# again on the terms left, until nothing changes. The threshold is set to 0.02, a term that
# moves the target by less than 2 % of its spread.

# %%
NAMES = {"sand": "S", "clay": "C", "om": "OM", "bd": "BD"}
base_terms = [NAMES[f] for f in features]
TERMS = ["1"] + base_terms + ["·".join((a, b)) if a != b else f"{a}²" for a, b in
                              combinations_with_replacement(base_terms, 2)]


def library(block: np.ndarray) -> np.ndarray:
    """Candidate terms (rows, 15) from attribute columns (rows, 4)."""
    cols = [np.ones(len(block))] + [block[:, i] for i in range(4)]
    cols += [block[:, i] * block[:, j] for i, j in combinations_with_replacement(range(4), 2)]
    return np.column_stack(cols)


t = time.perf_counter()
gram = np.zeros((len(TERMS), len(TERMS)))
xty = np.zeros((len(TERMS), len(NOISE)))
yty = np.zeros(len(NOISE))
rows = 0
for block in iter_table(table, 8192):
    block = block[np.isfinite(block).all(axis=1)]
    lib = library(block[:, :4])
    gram += lib.T @ lib
    xty += lib.T @ block[:, 4:]
    yty += (block[:, 4:] ** 2).sum(axis=0)
    rows += len(block)
print(f"normal equations from {rows} rows in {time.perf_counter() - t:.1f} s")


def stlsq(g: np.ndarray, b: np.ndarray, yy: float, npts: int, threshold: float = 0.02,
          ridge: float = 1e-10) -> np.ndarray:
    """Sequentially thresholded least squares from ``ΘᵀΘ`` (g), ``Θᵀy`` (b) and ``yᵀy``."""
    mean = g[0] / npts                               # column means (column 0 is the constant)
    std = np.sqrt(np.maximum(np.diag(g) / npts - mean**2, 0))
    std[0] = 1.0
    ystd = np.sqrt(yy / npts - (b[0] / npts) ** 2)
    scale = np.sqrt(np.diag(g))                      # column norms: condition the solves
    active = np.ones(len(b), bool)
    coef = np.zeros(len(b))
    for _ in range(20):
        idx = np.flatnonzero(active)
        gs = g[np.ix_(idx, idx)] / np.outer(scale[idx], scale[idx])
        sol = np.linalg.solve(gs + ridge * np.eye(len(idx)), b[idx] / scale[idx]) / scale[idx]
        coef = np.zeros(len(b))
        coef[idx] = sol
        keep = (np.abs(coef) * std / ystd >= threshold) | (np.arange(len(b)) == 0)
        keep &= active
        if (keep == active).all():
            break
        active = keep
    return coef


stlsq_coef = np.stack([stlsq(gram, xty[:, k], yty[k], rows) for k in range(len(NOISE))])
true_vec = np.array([TRUE.get(term, 0.0) for term in TERMS])
print(pd.DataFrame(np.column_stack([true_vec, stlsq_coef.T]), index=TERMS,
                   columns=["true"] + [f"σ={s}" for s in NOISE]).round(4))

# %% [markdown]
# ## 4. The inverse method: gradient descent through the PyTorch loader
#
# The known form has seven parameters. The loader cuts the store into windows of 16 cells
# along `x` (every depth and row is a sample axis), stacks S, C, OM on the channel axis and the
# five noise levels' targets on the target axis; the form is evaluated cell by cell, one set of
# seven parameters per noise level, and all follow Adam down the mean squared error. The terms
# are centred and scaled by their means and spreads (taken from the streamed normal equations),
# a fixed change of variables that makes one learning rate suit every parameter; the fitted
# parameters are mapped back to the coefficients of the original form.

# %%
FORM = ["1", "S", "C", "OM", "S·OM", "C·OM", "S·C"]
form_idx = [TERMS.index(f) for f in FORM]
term_mean = (gram[0] / rows)[form_idx]
term_std = np.sqrt(np.diag(gram) / rows - (gram[0] / rows) ** 2)[form_idx]
term_mean[0], term_std[0] = 0.0, 1.0                  # the constant stays as it is


class KnownForm(torch.nn.Module):
    """θ = Σ_j a_j · term_j(S, C, OM) over the known form's seven terms, for several targets."""

    def __init__(self, n_targets: int) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(n_targets, len(FORM), dtype=torch.float64))
        self.register_buffer("mean", torch.as_tensor(term_mean))
        self.register_buffer("std", torch.as_tensor(term_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (points, 3) -> predictions (points, targets)."""
        s, c, om = x[:, 0], x[:, 1], x[:, 2]
        terms = torch.stack([torch.ones_like(s), s, c, om, s * om, c * om, s * c], -1)
        return ((terms - self.mean) / self.std) @ self.p.T

    def coefficients(self) -> np.ndarray:
        """The fitted coefficients of the original form, (targets, 7)."""
        p = self.p.detach().numpy()
        a = p / term_std
        a[:, 0] = p[:, 0] - (a[:, 1:] * term_mean[1:]).sum(axis=1)
        return a


t = time.perf_counter()
targets = [f"theta_{k}" for k in range(len(NOISE))]
levels = soil[["sand", "clay", "om"]].assign(
    {name: soil["theta_wp"].isel(noise=k, drop=True) for k, name in enumerate(targets)})
loader = levels.arcoforge.torch_loader(
    input_dims={"x": 16}, inputs=["sand", "clay", "om"], targets=targets,
    batch_size=SETTING["batch_size"], sampling="chunk_shuffle", seed=0)
model = KnownForm(len(NOISE))
opt = torch.optim.Adam(model.parameters(), lr=0.02)
steps = SETTING["epochs"] * sum(1 for _ in loader)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
losses = []
for epoch in range(SETTING["epochs"]):
    loader.dataset.set_epoch(epoch)
    for batch in loader:
        x = batch["input"].double().permute(0, 2, 1).reshape(-1, 3)          # (points, 3)
        target = batch["target"].double().permute(0, 2, 1).reshape(-1, len(NOISE))
        per_level = torch.mean((model(x) - target) ** 2, dim=0)
        loss = per_level.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(per_level.detach().numpy())
inverse_coef = model.coefficients()
curves = np.array(losses)
print(f"inverse method: {steps} steps of {SETTING['batch_size']}×16 cells, "
      f"{time.perf_counter() - t:.1f} s")
print(pd.DataFrame(np.column_stack([[TRUE[f] for f in FORM], inverse_coef.T]), index=FORM,
                   columns=["true"] + [f"σ={s}" for s in NOISE]).round(4))

# %% [markdown]
# ## 5. Recovered vs true
#
# For each noise level: did STLSQ select exactly the seven true terms, the largest error of
# any coefficient (over all 15 for STLSQ, the seven of the form for the inverse method), and
# the noise as a fraction of the target's spread.

# %%
target_std = float(np.sqrt(yty[0] / rows - (xty[0, 0] / rows) ** 2))
summary = []
true_support = true_vec != 0
form_true = np.array([TRUE[f] for f in FORM])
for k, sigma in enumerate(NOISE):
    support = stlsq_coef[k] != 0
    summary.append({
        "noise σ": sigma, "σ / std(θ)": round(sigma / target_std, 3),
        "STLSQ terms": int(support.sum()),
        "STLSQ exact support": bool((support == true_support).all()),
        "STLSQ max |error|": float(np.abs(stlsq_coef[k] - true_vec).max()),
        "inverse max |error|": float(np.abs(inverse_coef[k] - form_true).max()),
        "inverse final RMSE": float(np.sqrt(np.mean(curves[-20:, k]))),
    })
summary_df = pd.DataFrame(summary)
print(summary_df.to_string(index=False))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
pos = np.arange(len(TERMS))
mid = NOISE.index(0.02)
axes[0].bar(pos - 0.27, true_vec, 0.27, label="true", color="k")
axes[0].bar(pos, stlsq_coef[mid], 0.27, label=f"STLSQ (σ = {NOISE[mid]})")
form_pos = np.array([TERMS.index(f) for f in FORM])
axes[0].bar(form_pos + 0.27, inverse_coef[mid], 0.27, label=f"inverse (σ = {NOISE[mid]})")
axes[0].set_xticks(pos, TERMS, rotation=60, fontsize=8)
axes[0].set(ylabel="coefficient", title="recovered vs true coefficients")
axes[0].axhline(0, color="0.5", lw=0.5)
axes[0].legend(fontsize=8)
axes[1].semilogy([s / target_std for s in NOISE],
                 [max(r["STLSQ max |error|"], 1e-8) for r in summary], "o-", label="STLSQ")
axes[1].semilogy([s / target_std for s in NOISE],
                 [max(r["inverse max |error|"], 1e-8) for r in summary], "s-",
                 label="inverse (gradient descent)")
axes[1].set(xlabel="noise σ / std(θ1500t)", ylabel="largest coefficient error",
            title="error vs noise")
axes[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "eqd_coefficients.png", dpi=110)
plt.close(fig)

layer = soil.isel(depth=0)
fig, axes = plt.subplots(1, 5, figsize=(14, 2.8))
for ax, (name, da) in zip(axes, [("sand", layer["sand"]), ("clay", layer["clay"]),
                                 ("OM (%)", layer["om"]), ("BD (g/cm³)", layer["bd"]),
                                 ("θ1500 measured, σ=0.02", layer["theta_wp"].isel(noise=mid))]):
    im = ax.imshow(da.values, origin="lower", cmap="viridis")
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)
fig.suptitle(f"top layer ({DEPTHS[0]} cm) of the synthetic soil store", fontsize=10)
fig.tight_layout()
fig.savefig(OUT / "eqd_inputs.png", dpi=100)
plt.close(fig)

metrics = {
    "setting": "quick" if QUICK else "full", **SETTING, "rows": rows, "noise": NOISE,
    "target_std": target_std, "terms": TERMS, "true": true_vec.tolist(),
    "stlsq": stlsq_coef.tolist(), "form": FORM, "inverse": inverse_coef.tolist(),
    "inverse_steps": int(steps),
    "summary": summary, "seconds": round(time.perf_counter() - T0, 1),
}
(OUT / "eqd_metrics.json").write_text(json.dumps(metrics, indent=1))
print(f"figures and metrics in {OUT}; {metrics['seconds']} s in all")
shutil.rmtree(WORK, ignore_errors=True)  # the temporary store
