# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Sea-surface height from sparse altimeter tracks: optimal interpolation vs a small CNN
#
# A nadir altimeter measures sea-surface height (SSH) along a thin line under the satellite;
# maps are made by interpolating between tracks. This example measures how well two methods do
# it on real ocean structure:
#
# * **truth** -- the CMEMS/AVISO DUACS gridded daily absolute dynamic topography of the
#   Mediterranean, April--June 2005 (1/8°, 91 days), baked into an ARCO Zarr store with
#   `af.bake` and opened with `af.open_dataset`;
# * **observations** -- the truth sampled along the real Jason-1 ground tracks (geometry of
#   one real Jason-1 pass, repeated over the 254 passes of the 9.9156-day repeat cycle as the
#   real orbit lays them down, see section 2), with white and long-wavelength noise;
# * **(a) optimal interpolation (OI)** with a Gaussian space--time covariance whose length and
#   time scales, signal and noise variances are fitted on the training days;
# * **(b) a small U-Net** that maps gridded track data (three time bins around the target
#   day) to the SSH map, trained with arcoforge's PyTorch loader (`ds.arcoforge.torch_loader`)
#   on 64×64 windows of the training days, then run on the whole basin;
# * two baselines: **climatology**, the mean map of the training days, and **climatology +
#   offset**, that map shifted by the mean of the observations around the day (the basin-wide
#   level change that one number captures, here a seasonal rise of several cm).
#
# The last 21 days (10--30 June 2005) are held out: neither the covariance fit nor the CNN sees
# their maps. `python examples/ssh_reconstruction.py --quick` runs the reduced setting (CI);
# without `--quick` it runs the documented one (more track realizations, longer training).
#
# Data: "E.U. Copernicus Marine Service Information" (CMEMS DUACS, Copernicus licence); Jason-1
# GDR pass (NASA/CNES, via podaac/l2ss-py's test data).

# %%
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

# one BLAS/OpenMP thread unless told otherwise: on a small shared machine more threads than
# free cores make numpy and torch many times slower, not faster (see --threads)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
from scipy.interpolate import RegularGridInterpolator  # noqa: E402
from scipy.linalg import cho_factor, cho_solve  # noqa: E402
from scipy.optimize import curve_fit  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

import arcoforge as af  # noqa: E402
from arcoforge.testing.samples import find_shared_data  # noqa: E402

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
ROOT = HERE.parent

parser = argparse.ArgumentParser(description=__doc__ if "__doc__" in globals() else None)
parser.add_argument("--quick", action="store_true", help="reduced size (CI): under a minute")
parser.add_argument("--out", type=Path, default=None,
                    help="folder for figures and metrics.json (default: docs/science, or "
                         "build/examples/ssh with --quick)")
parser.add_argument("--threads", type=int, default=1,
                    help="torch threads (more help only on cores nobody else is using)")
ARGS, _ = parser.parse_known_args()
QUICK = ARGS.quick or os.environ.get("ARCOFORGE_TUTORIAL_SIZE") == "small"
OUT = ARGS.out or (ROOT / "build" / "examples" / "ssh" if QUICK else ROOT / "docs" / "science")
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(ARGS.threads)
torch.manual_seed(0)
RNG = np.random.default_rng(2005)

# reduced vs documented setting
SETTING = dict(
    realizations=2 if QUICK else 8,     # track layouts (orbit phases) per training day
    steps=100 if QUICK else 2000,       # optimizer steps of the CNN
    width=8 if QUICK else 16,           # channels of the first U-Net level
    batch_size=8 if QUICK else 16,
    test_every=3 if QUICK else 1,       # evaluate every n-th held-out day
)
T0 = time.perf_counter()
TIMES: dict[str, float] = {}


def lap(name: str) -> None:
    """Record the seconds spent since the previous lap."""
    TIMES[name] = round(time.perf_counter() - T0 - sum(TIMES.values()), 2)
    print(f"[{name}: {TIMES[name]:.1f} s]")


DATA = find_shared_data("aviso", "altimetry", checkout=ROOT)
if DATA is None:
    print("The shared data folder (with aviso/ and altimetry/) was not found: set "
          "ARCOFORGE_SHARED_DATA. Nothing else runs.")
    raise SystemExit(0)
print("setting:", "quick" if QUICK else "full", SETTING)

# %% [markdown]
# ## 1. The truth as an ARCO store
#
# One NetCDF file (int16 packed, 91 daily maps) becomes a Zarr v3 store chunked by 7 days;
# `af.open_dataset` decodes it exactly as xarray decodes the source.

# %%
WORK = Path(tempfile.mkdtemp(prefix="arcoforge-ssh-"))
aviso = DATA / "aviso" / "dt_med_allsat_phy_l4_2005T2.nc"
pattern = af.FilePattern(lambda time: str(aviso), af.ConcatDim("time", keys=[0]))
recipe = af.ZarrRecipe(pattern, target_chunks={"time": 7})
print(af.bake(recipe, WORK / "aviso.zarr", progress=False))
store = af.open_dataset(WORK / "aviso.zarr")
truth = store["adt"].load()                      # (time, latitude, longitude), metres, NaN land
lat = truth["latitude"].values.astype(float)
lon = truth["longitude"].values.astype(float)
days = truth["time"].values
ND, NY, NX = truth.shape
ocean = np.isfinite(truth.values).all(axis=0)    # cells that are sea on every day
TRUTH = np.where(ocean, truth.values, np.nan)
TEST = np.arange(ND - 21, ND)                    # held out: the last 21 days
TRAIN = np.arange(0, ND - 21)
clim = TRUTH[TRAIN].mean(axis=0)                 # the climatology baseline (NaN on land)
print(f"{ND} days, grid {NY}×{NX}, {ocean.sum()} ocean cells; train {len(TRAIN)} days, "
      f"test {len(TEST)} days ({pd.Timestamp(days[TEST[0]]):%d %b}–"
      f"{pd.Timestamp(days[TEST[-1]]):%d %b %Y})")
lap("bake + open")

# %% [markdown]
# ## 2. Jason-1 ground tracks over the repeat cycle
#
# The file holds one real descending pass (pass 2 of cycle 1, 15 January 2002): 1 Hz positions
# from 66°N to 66°S and their times. Jason-1 flew an exact-repeat orbit: 127 revolutions
# (254 passes) in 10 *nodal* days, i.e. a cycle of 9.9156 solar days. The model of the shift
# between passes follows from that:
#
# * pass *n* crosses the equator *n − 2* half-revolutions after pass 2, at time
#   `t_eq(2) + (n − 2) · 9.9156 d / 254` (plus whole cycles);
# * in one pass (half a revolution) the satellite moves 180° in longitude relative to the
#   orbit's node while the Earth turns 360° · 10 / 254 = 14.17° under it, so the equator
#   crossing moves east by 180° − 14.17° = 165.83° per pass. After 254 passes that is exactly
#   117 turns: the tracks close, and neighbouring equator crossings are 360°/127 = 2.83° apart;
# * ascending (odd) passes are the mirror image of descending ones about the equator: at the
#   same time from the equator crossing they are at the opposite latitude and the same
#   longitude offset.
#
# Each pass keeps the real pass's along-track shape, spacing and timing relative to its equator
# crossing. Times are extrapolated from 2002 over whole cycles; the real orbit's timing drifted
# by minutes over those years, which moves tracks between neighbouring hours, not places.
# The observations are the truth interpolated bilinearly in space and linearly in time at each
# point, keeping every second 1 Hz point (about 12 km, as CMEMS L3 products do) and only points
# whose four surrounding cells are sea (coastal data loss). Noise: white 2 cm plus a
# long-wavelength error per pass (a random offset and a slope along track, 1 cm rms each over
# 1000 km), the orbit/wet-troposphere residual left in L3 data.

# %%
jason = xr.open_dataset(DATA / "altimetry" /
                        "JA1_GPN_2PeP001_002_20020115_060706_20020115_070316.nc")
p_lat = jason["lat"].values
p_lon = np.rad2deg(np.unwrap(np.deg2rad(jason["lon"].values)))
eq_time = np.datetime64(jason.attrs["equator_time"].replace(" ", "T"))
p_dt = (jason["time"].values - eq_time) / np.timedelta64(1, "s") / 86400.0   # days from equator
p_dlon = p_lon - float(jason.attrs["equator_longitude"])
P_LON_EQ = float(jason.attrs["equator_longitude"])
CYCLE = 9.9156                                   # days
NPASS = 254
SHIFT = 180.0 - 360.0 * 10 / NPASS               # degrees east per pass
keep = slice(0, None, 2)                         # every second 1 Hz point
p_lat, p_dlon, p_dt = p_lat[keep], p_dlon[keep], p_dt[keep]
print(f"Jason-1 pass {int(jason.attrs['pass_number'])}: {p_lat.size} points kept, "
      f"{p_lat[0]:.1f}°N to {p_lat[-1]:.1f}°N over {(p_dt[-1] - p_dt[0]) * 1440:.0f} min")

DAY0 = days[0]
t_eq0 = (eq_time - DAY0) / np.timedelta64(1, "s") / 86400.0  # pass 2, cycle 1, in model days
interp = RegularGridInterpolator((np.arange(ND), lat, lon), TRUTH, bounds_error=False,
                                 fill_value=np.nan)


def ground_tracks(phase: float = 0.0) -> dict[str, np.ndarray]:
    """Positions and times (days since the first map) of every pass over the Mediterranean
    during the 91 days; ``phase`` (days) shifts the whole orbit in time (a new layout)."""
    first_cycle = np.floor((0 - 6 - t_eq0 - phase) / CYCLE)
    out: dict[str, list[np.ndarray]] = {"lat": [], "lon": [], "t": [], "pass": []}
    k = 0
    for c in range(int(first_cycle), int(first_cycle) + int((ND + 12) / CYCLE) + 2):
        for n in range(1, NPASS + 1):
            t_eq = t_eq0 + phase + c * CYCLE + (n - 2) * CYCLE / NPASS
            if t_eq < -6 or t_eq > ND + 6:
                continue
            lon_eq = P_LON_EQ + (n - 2) * SHIFT
            plat = p_lat if n % 2 == 0 else -p_lat      # even passes descend, odd ascend
            plon = (lon_eq + p_dlon + 180.0) % 360.0 - 180.0
            sel = ((plat > lat[0]) & (plat < lat[-1]) & (plon > lon[0]) & (plon < lon[-1]))
            if not sel.any():
                continue
            out["lat"].append(plat[sel])
            out["lon"].append(plon[sel])
            out["t"].append(t_eq + p_dt[sel])
            out["pass"].append(np.full(sel.sum(), k))
            k += 1
    return {key: np.concatenate(v) for key, v in out.items()}


def observe(phase: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Noisy along-track observations of the truth for one orbit phase."""
    tr = ground_tracks(phase)
    inside = (tr["t"] >= 0) & (tr["t"] <= ND - 1)
    tr = {k: v[inside] for k, v in tr.items()}
    val = interp(np.column_stack([tr["t"], tr["lat"], tr["lon"]]))
    ok = np.isfinite(val)
    tr = {k: v[ok] for k, v in tr.items()}
    val = val[ok]
    noise = rng.normal(0.0, 0.02, val.size)
    for p in np.unique(tr["pass"]):                  # long-wavelength error, per pass
        m = tr["pass"] == p
        s = np.cumsum(np.r_[0, np.hypot(np.diff(tr["lat"][m]), np.diff(tr["lon"][m]))]) * 111.0
        noise[m] += rng.normal(0, 0.01) + rng.normal(0, 0.01) * (s - s.mean()) / 1000.0
    tr["obs"] = val + noise
    tr["true"] = val
    return tr


OBS = observe(0.0, RNG)                          # the real orbit phase: used for evaluation
per_day = np.bincount(np.floor(OBS["t"]).astype(int), minlength=ND)
print(f"{OBS['obs'].size} observations on {np.unique(OBS['pass']).size} passes; "
      f"{per_day.mean():.0f} per day on average (min {per_day.min()}, max {per_day.max()})")
lap("tracks")

# %% [markdown]
# ## 3. Covariance scales from the training days
#
# Anomalies are taken from the climatology, and each day's basin mean is removed (at analysis
# time the mean of the observation anomalies in the window stands for it). The spatial and
# temporal correlation functions of the training-day anomalies are fitted with Gaussians (in
# space a sum of two: the mesoscale and a basin-scale part that one Gaussian would miss);
# the noise variance is that of observation minus truth on training days.

# %%
train_anom = TRUTH[TRAIN] - clim
train_anom -= np.nanmean(train_anom, axis=(1, 2), keepdims=True)
sig2 = float(np.nanvar(train_anom))
R_EARTH = 6371.0
LAT0 = float(np.deg2rad(38.0))
KM_LAT = R_EARTH * np.deg2rad(lat[1] - lat[0])
KM_LON = R_EARTH * np.deg2rad(lon[1] - lon[0]) * np.cos(LAT0)


def lagged_corr(a: np.ndarray, axis: int, lag: int) -> float:
    """Correlation of ``a`` with itself shifted by ``lag`` cells along ``axis`` (NaN-aware)."""
    n = a.shape[axis]
    x = np.take(a, np.arange(0, n - lag), axis=axis)
    y = np.take(a, np.arange(lag, n), axis=axis)
    m = np.isfinite(x) & np.isfinite(y)
    return float(np.sum(x[m] * y[m]) / np.sqrt(np.sum(x[m] ** 2) * np.sum(y[m] ** 2)))


lags = np.arange(0, 61, 3)
r_km = np.r_[lags * KM_LAT, lags * KM_LON]
some_days = train_anom[::3]                      # spatial lags: every third day is plenty
rho_s = np.r_[[lagged_corr(some_days, 1, k) for k in lags],
              [lagged_corr(some_days, 2, k) for k in lags]]
tlags = np.arange(0, 21, 2)
rho_t = np.array([lagged_corr(train_anom, 0, k) for k in tlags])


def gauss(x: np.ndarray, scale: float) -> np.ndarray:
    return np.exp(-0.5 * (x / scale) ** 2)


def two_gauss(x: np.ndarray, share: float, small: float, large: float) -> np.ndarray:
    return share * gauss(x, small) + (1 - share) * gauss(x, large)


(SHARE, LS, LL), _ = curve_fit(two_gauss, r_km, rho_s, p0=[0.8, 40.0, 300.0],
                               bounds=([0.0, 5.0, 50.0], [1.0, 200.0, 2000.0]))
use = rho_t > 0.1
LT = float(curve_fit(gauss, tlags[use].astype(float), rho_t[use], p0=[10.0])[0][0])
train_obs = np.isin(np.floor(OBS["t"]).astype(int), TRAIN)
noise2 = float(np.var(OBS["obs"][train_obs] - OBS["true"][train_obs]))
WINDOW = float(min(10.0, max(3.0, 1.0 * LT)))    # days of data each analysis uses (±)
print(f"fitted: {SHARE:.0%} of the variance at L = {LS:.0f} km, {1 - SHARE:.0%} at "
      f"{LL:.0f} km, L_time = {LT:.1f} d, signal std {np.sqrt(sig2) * 100:.2f}"
      f" cm, noise std {np.sqrt(noise2) * 100:.2f} cm; window ±{WINDOW:.1f} d")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
axes[0].plot(r_km[: lags.size], rho_s[: lags.size], "o", ms=3, label="meridional lags")
axes[0].plot(r_km[lags.size:], rho_s[lags.size:], "s", ms=3, label="zonal lags")
rr = np.linspace(0, r_km.max(), 200)
axes[0].plot(rr, two_gauss(rr, SHARE, LS, LL), "k-",
             label=f"{SHARE:.2f} G({LS:.0f} km) + {1 - SHARE:.2f} G({LL:.0f} km)")
axes[0].set(xlabel="separation (km)", ylabel="correlation", title="space")
axes[0].legend(fontsize=8)
axes[1].plot(tlags, rho_t, "o", ms=3)
tt = np.linspace(0, tlags.max(), 200)
axes[1].plot(tt, gauss(tt, LT), "k-", label=f"Gaussian, T = {LT:.1f} d")
axes[1].set(xlabel="lag (days)", title="time")
axes[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "ssh_covariance.png", dpi=110)
plt.close(fig)
lap("covariance fit")

# %% [markdown]
# ## 4. Optimal interpolation
#
# For each held-out day, the observations within the window are turned into anomalies from the
# climatology; their mean is removed and added back (an unknown basin-mean level, as in
# ordinary kriging), and the residual is interpolated with
# `x̂ = C_go (C_oo + σ_n² I)⁻¹ y`, where `C` is the fitted Gaussian space--time covariance.
# Distances are on a local plane (longitude scaled by cos 38°).

# %%
GLAT, GLON = np.meshgrid(lat, lon, indexing="ij")
GX1 = np.deg2rad(lon) * R_EARTH * np.cos(LAT0)   # grid columns / rows on the plane (km)
GY1 = np.deg2rad(lat) * R_EARTH
clim_interp = RegularGridInterpolator((lat, lon), np.nan_to_num(clim), bounds_error=False,
                                      fill_value=0.0)


def window_obs(obs: dict[str, np.ndarray], day: int) -> dict[str, np.ndarray]:
    """Observations within ±WINDOW days of ``day``, as anomalies from the climatology."""
    m = np.abs(obs["t"] - day) <= WINDOW
    sub = {k: v[m] for k, v in obs.items()}
    sub["anom"] = sub["obs"] - clim_interp(np.column_stack([sub["lat"], sub["lon"]]))
    return sub


def oi_map(obs: dict[str, np.ndarray], day: int) -> np.ndarray:
    """The OI analysis (full SSH field, NaN on land) for ``day``."""
    w = window_obs(obs, day)
    x = np.deg2rad(w["lon"]) * R_EARTH * np.cos(LAT0)
    y = np.deg2rad(w["lat"]) * R_EARTH
    mean = float(w["anom"].mean())
    resid = w["anom"] - mean
    d2 = (x[:, None] - x[None]) ** 2 + (y[:, None] - y[None]) ** 2
    cov = sig2 * two_gauss(np.sqrt(d2), SHARE, LS, LL) * gauss(w["t"][:, None] - w["t"][None], LT)
    cov[np.diag_indices_from(cov)] += noise2
    alpha = cho_solve(cho_factor(cov, lower=True), resid)
    tw = sig2 * np.exp(-0.5 * (w["t"] - day) ** 2 / LT**2) * alpha
    # the Gaussian separates on the plane: exp(-(dx² + dy²)/2L²) = exp(-dx²/2L²)·exp(-dy²/2L²),
    # so the whole grid is one matrix product (rows × obs) @ (obs × columns)
    field = np.full((NY, NX), mean)
    for share, scale in ((SHARE, LS), (1 - SHARE, LL)):
        ex = gauss(GX1[:, None] - x[None], scale)
        ey = gauss(GY1[:, None] - y[None], scale)
        field += share * ((ey * tw) @ ex.T)
    return np.where(ocean, clim + field, np.nan)


EVAL = TEST[:: SETTING["test_every"]]
oi = np.stack([oi_map(OBS, int(d)) for d in EVAL])
print(f"OI: {len(EVAL)} days, about {window_obs(OBS, int(EVAL[0]))['obs'].size} "
      "observations per analysis")
# the same analysis from noise-free observations: what the sampling alone allows
oi_clean = np.stack([oi_map(dict(OBS, obs=OBS["true"]), int(d)) for d in EVAL])
lap("OI")

# %% [markdown]
# ## 5. A small U-Net, trained through arcoforge's PyTorch loader
#
# Inputs per target day: the window's observation anomalies (mean removed, as for OI) binned
# onto the grid in three time bins (|Δt| ≤ 1, 1--4 and beyond 4 days: a value and a count
# channel each) plus the sea mask: 7 channels. Target: the day's anomaly minus the same
# window mean. Training days get several track layouts (the orbit shifted by a random phase,
# new noise): the same ocean seen through different sampling, which is the augmentation that
# matters here. The training set is an `xarray.Dataset` `(sample, latitude, longitude)`, and
# `ds.arcoforge.torch_loader` cuts it into 64×64 windows (overlapping by half), skips windows
# that are more than 75 % land (`max_missing` on the target) and hands out shuffled batches
# of tensors.

# %%
BINS = [(0.0, 1.0), (1.0, 4.0), (4.0, 1e9)]
SCALE = 100.0                                    # metres -> cm for the network
IN_VARS = [f"{k}{b}" for b in range(len(BINS)) for k in ("val", "cnt")] + ["sea"]


def grid_inputs(obs: dict[str, np.ndarray], day: int) -> tuple[np.ndarray, float]:
    """(channels, NY, NX) network input for ``day`` and the window mean it removed."""
    w = window_obs(obs, day)
    mean = float(w["anom"].mean())
    i = np.clip(np.rint((w["lat"] - lat[0]) / (lat[1] - lat[0])).astype(int), 0, NY - 1)
    j = np.clip(np.rint((w["lon"] - lon[0]) / (lon[1] - lon[0])).astype(int), 0, NX - 1)
    x = np.zeros((len(IN_VARS), NY, NX), np.float32)
    dt = np.abs(w["t"] - day)
    for b, (lo, hi) in enumerate(BINS):
        m = (dt >= lo) & (dt < hi) if b else dt <= hi
        s = np.bincount(i[m] * NX + j[m], (w["anom"][m] - mean) * SCALE, minlength=NY * NX)
        c = np.bincount(i[m] * NX + j[m], minlength=NY * NX).astype(float)
        x[2 * b] = np.where(c > 0, s / np.maximum(c, 1), 0).reshape(NY, NX)
        x[2 * b + 1] = c.reshape(NY, NX)
    x[-1] = ocean
    return x, mean


def training_set() -> xr.Dataset:
    """Inputs and targets for every (training day, orbit layout)."""
    xs, ys = [], []
    for r in range(SETTING["realizations"]):
        # the real layout (with fresh noise), then the orbit shifted by random phases
        obs = observe(0.0 if r == 0 else float(RNG.uniform(0, CYCLE)), RNG)
        for d in TRAIN:
            x, mean = grid_inputs(obs, int(d))
            xs.append(x)
            ys.append(((TRUTH[d] - clim) - mean) * SCALE)
    x = np.stack(xs)
    dims = ("sample", "latitude", "longitude")
    data = {v: (dims, x[:, k]) for k, v in enumerate(IN_VARS)}
    data["target"] = (dims, np.stack(ys).astype(np.float32))  # NaN on land
    return xr.Dataset(data, coords={"latitude": lat, "longitude": lon})


train_ds = training_set()
print(f"training set: {dict(train_ds.sizes)}, variables {list(train_ds.data_vars)}")
lap("CNN inputs")


class UNet(torch.nn.Module):
    """Two-level U-Net: (conv-conv) down, (conv-conv) bottom, up with skip connections."""

    def __init__(self, c_in: int, w: int) -> None:
        super().__init__()

        def block(a: int, b: int) -> torch.nn.Sequential:
            return torch.nn.Sequential(
                torch.nn.Conv2d(a, b, 3, padding=1), torch.nn.GELU(),
                torch.nn.Conv2d(b, b, 3, padding=1), torch.nn.GELU())

        self.d1, self.d2, self.mid = block(c_in, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.u2, self.u1 = block(6 * w, 2 * w), block(3 * w, w)
        self.out = torch.nn.Conv2d(w, 1, 1)
        self.pool = torch.nn.AvgPool2d(2)
        self.up = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.d1(x)
        b = self.d2(self.pool(a))
        c = self.mid(self.pool(b))
        b = self.u2(torch.cat([self.up(c), b], 1))
        return self.out(self.u1(torch.cat([self.up(b), a], 1)))


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    m = torch.isfinite(target)
    return ((pred - torch.nan_to_num(target)) ** 2 * m).sum() / m.sum().clamp(min=1)


loader = train_ds.arcoforge.torch_loader(
    input_dims={"latitude": 64, "longitude": 64},
    input_overlap={"latitude": 32, "longitude": 32},
    inputs=IN_VARS, targets=["target"], batch_size=SETTING["batch_size"], drop_last=True,
    sampling="random", seed=0, max_missing=0.75, mask_variable="target")
model = UNet(len(IN_VARS), SETTING["width"])
opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=SETTING["steps"])
step, epoch, losses, per_epoch = 0, 0, [], 0
while step < SETTING["steps"]:
    loader.dataset.set_epoch(epoch)
    for batch in loader:
        x = batch["input"].clone()
        x[:, 1:6:2] = torch.log1p(x[:, 1:6:2])     # counts -> log(1 + n)
        loss = masked_mse(model(x), batch["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        step += 1
        per_epoch += epoch == 0
        if step % max(1, SETTING["steps"] // 5) == 0:
            print(f"  step {step}: loss {np.mean(losses[-20:]):.2f} cm²")
        if step >= SETTING["steps"]:
            break
    epoch += 1
print(f"CNN: {sum(p.numel() for p in model.parameters())} parameters, {step} steps "
      f"({epoch} epochs of {per_epoch} batches); loss {np.mean(losses[:20]):.2f} -> "
      f"{np.mean(losses[-20:]):.2f} cm²")
lap("CNN training")


def cnn_map(obs: dict[str, np.ndarray], day: int) -> np.ndarray:
    """The CNN's full-basin SSH field (NaN on land) for ``day``."""
    x, mean = grid_inputs(obs, day)
    x[1:6:2] = np.log1p(x[1:6:2])
    pad = (-NX) % 4
    xt = torch.from_numpy(np.pad(x, ((0, 0), (0, 0), (0, pad))))[None]
    with torch.no_grad():
        y = model(xt)[0, 0, :, :NX].numpy() / SCALE
    return np.where(ocean, clim + mean + y, np.nan)


model.eval()
cnn = np.stack([cnn_map(OBS, int(d)) for d in EVAL])
lap("CNN inference")

# %% [markdown]
# ## 6. Scores on the held-out days
#
# RMSE over all sea cells; RMSE as a function of the distance to the nearest observation taken
# within a day of the map; and zonal wavenumber spectra of the anomaly maps (segments of 64
# cells, 8° of longitude, that are sea all along; Hann window), with the wavelength at which
# each method's error spectrum reaches half the truth's (its effective resolution).

# %%
true_e = TRUTH[EVAL]
offset = np.array([window_obs(OBS, int(d))["anom"].mean() for d in EVAL])[:, None, None]
methods = {"climatology": np.broadcast_to(clim, true_e.shape),
           "climatology + offset": clim + offset, "OI": oi, "CNN": cnn}


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean((a - b) ** 2)))


scores = {k: rmse(v, true_e) for k, v in methods.items()}
dist = np.empty_like(true_e)
for n, d in enumerate(EVAL):
    near = np.abs(OBS["t"] - d) <= 1.0
    tree = cKDTree(np.column_stack([np.deg2rad(OBS["lon"][near]) * R_EARTH * np.cos(LAT0),
                                    np.deg2rad(OBS["lat"][near]) * R_EARTH]))
    dd, _ = tree.query(np.column_stack([np.deg2rad(GLON.ravel()) * R_EARTH * np.cos(LAT0),
                                        np.deg2rad(GLAT.ravel()) * R_EARTH]))
    dist[n] = dd.reshape(NY, NX)
edges = np.array([0, 25, 50, 100, 150, 200, 300, 500])
by_dist: dict[str, list[float]] = {k: [] for k in methods}
counts = []
for lo, hi in zip(edges[:-1], edges[1:]):
    m = (dist >= lo) & (dist < hi) & np.isfinite(true_e)
    counts.append(int(m.sum()))
    for k, v in methods.items():
        by_dist[k].append(float(np.sqrt(np.mean((v[m] - true_e[m]) ** 2))) if m.any()
                          else float("nan"))

SEG = 64
segments = [(i, j) for i in range(NY) for j in range(0, NX - SEG + 1, SEG // 4)
            if ocean[i, j:j + SEG].all()]
hann = np.hanning(SEG)
k_cyc = np.fft.rfftfreq(SEG, d=KM_LON)[1:]       # cycles per km


def spectrum(fields: np.ndarray) -> np.ndarray:
    """Mean zonal power spectrum of ``fields`` (time, y, x) over the sea segments."""
    ps = []
    for f in fields:
        for i, j in segments:
            s = f[i, j:j + SEG]
            s = (s - s.mean()) * hann
            ps.append(np.abs(np.fft.rfft(s)[1:]) ** 2)
    return np.mean(ps, axis=0)


anom = {k: v - clim for k, v in methods.items() if k in ("OI", "CNN")}
spec_true = spectrum(true_e - clim)
spec = {k: spectrum(v) for k, v in anom.items()}
spec_err = {k: spectrum(v - (true_e - clim)) for k, v in anom.items()}


def resolution(err: np.ndarray) -> float:
    """Shortest wavelength (km) above which the error spectrum stays below half the truth's
    (the longest wavelength of the segments when even that one is not resolved)."""
    bad = np.flatnonzero(err / spec_true >= 0.5)   # k_cyc ascends: long to short waves
    return float(1 / k_cyc[bad[0]]) if bad.size else float(1 / k_cyc[-1])


res = {k: resolution(v) for k, v in spec_err.items()}
print(f"RMSE on {len(EVAL)} held-out days (cm): " +
      ", ".join(f"{k} {v * 100:.2f}" for k, v in scores.items()) +
      f"; OI from noise-free observations {rmse(oi_clean, true_e) * 100:.2f}")
print("RMSE (cm) by distance to the nearest observation within ±1 day:")
print(pd.DataFrame({k: np.round(np.array(v) * 100, 2) for k, v in by_dist.items()} |
                   {"cells": counts},
                   index=[f"{lo}-{hi} km" for lo, hi in zip(edges[:-1], edges[1:])]))
print(f"{len(segments)} sea segments; effective resolution (error/truth spectrum = 0.5): " +
      ", ".join(f"{k} {v:.0f} km" if v < 1 / k_cyc[0] else f"{k} not reached (≥ {v:.0f} km)"
                for k, v in res.items()))
lap("scores")

# %% [markdown]
# ## 7. Figures

# %%
n_show = len(EVAL) // 2
day = int(EVAL[n_show])
vmin, vmax = np.nanpercentile(true_e[n_show], [2, 98])
fig, axes = plt.subplots(2, 2, figsize=(12, 5.6), sharex=True, sharey=True)
extent = (lon[0], lon[-1], lat[0], lat[-1])
w = window_obs(OBS, day)
panels = [("truth", true_e[n_show]), (f"tracks (±{WINDOW:.0f} d)", None),
          (f"OI (RMSE {rmse(oi[n_show], true_e[n_show]) * 100:.1f} cm)", oi[n_show]),
          (f"CNN (RMSE {rmse(cnn[n_show], true_e[n_show]) * 100:.1f} cm)", cnn[n_show])]
for ax, (title, f) in zip(axes.ravel(), panels):
    ax.set_facecolor("0.85")
    if f is None:
        im = ax.scatter(w["lon"], w["lat"], c=w["obs"], s=2, vmin=vmin, vmax=vmax,
                        cmap="RdYlBu_r")
        ax.set_xlim(lon[0], lon[-1])
        ax.set_ylim(lat[0], lat[-1])
    else:
        im = ax.imshow(f, origin="lower", extent=extent, vmin=vmin, vmax=vmax,
                       cmap="RdYlBu_r", aspect="auto")
    ax.set_title(title, fontsize=10)
fig.colorbar(im, ax=axes, label="absolute dynamic topography (m)", shrink=0.8)
fig.suptitle(f"{pd.Timestamp(days[day]):%d %B %Y} (held out)")
fig.savefig(OUT / "ssh_maps.png", dpi=100)
plt.close(fig)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
mid = 0.5 * (edges[:-1] + edges[1:])
COLORS = {"climatology": "0.6", "climatology + offset": "tab:olive", "OI": "tab:blue",
          "CNN": "tab:red"}
for k, v in by_dist.items():
    axes[0].plot(mid, np.array(v) * 100, "o-", label=k, color=COLORS[k])
axes[0].set(xlabel="distance to the nearest observation within ±1 day (km)",
            ylabel="RMSE (cm)", title="error vs distance to the tracks")
axes[0].legend()
wl = 1 / k_cyc
axes[1].loglog(wl, spec_true, "k-", lw=2, label="truth")
for k in spec:
    axes[1].loglog(wl, spec[k], "-", label=k, color=COLORS[k])
    axes[1].loglog(wl, spec_err[k], "--", color=COLORS[k], label=f"{k} error")
axes[1].invert_xaxis()
axes[1].set_xticks([500, 200, 100, 50, 20], ["500", "200", "100", "50", "20"])
axes[1].minorticks_off()
axes[1].set(xlabel="wavelength (km)", ylabel="zonal PSD of the anomaly (arbitrary units)",
            title="wavenumber spectra")
axes[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "ssh_scores.png", dpi=110)
plt.close(fig)

metrics = {
    "setting": "quick" if QUICK else "full", **SETTING,
    "eval_days": [str(pd.Timestamp(days[d]).date()) for d in EVAL],
    "fitted": {"share_small": SHARE, "L_small_km": LS, "L_large_km": LL, "L_time_days": LT, "signal_std_m": float(np.sqrt(sig2)),
               "noise_std_m": float(np.sqrt(noise2)), "window_days": WINDOW},
    "rmse_m": scores,
    "rmse_oi_noise_free_m": rmse(oi_clean, true_e),
    "rmse_by_distance_m": {"edges_km": edges.tolist(), "cells": counts, **by_dist},
    "effective_resolution_km": res,
    "spectrum": {"wavelength_km": wl.tolist(), "truth": spec_true.tolist(),
                 **{k: v.tolist() for k, v in spec.items()},
                 **{f"{k}_error": v.tolist() for k, v in spec_err.items()}},
    "cnn_loss_first_last": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
    "n_observations": int(OBS["obs"].size),
    "seconds": TIMES,
}
lap("figures")
metrics["seconds"] = TIMES
(OUT / "ssh_metrics.json").write_text(json.dumps(metrics, indent=1))
print(f"figures and metrics in {OUT}; {time.perf_counter() - T0:.0f} s in all: {TIMES}")
shutil.rmtree(WORK, ignore_errors=True)  # the temporary store
