"""The science examples (``examples/*.py``) run end to end at reduced size (``--quick``) and
their headline results hold: computed here from the metrics each run writes, never stored.

* SSH reconstruction: optimal interpolation and the CNN both beat the climatology on the
  held-out days; OI also beats "climatology + the observed basin-mean offset" (it interpolates,
  not only levels); both are better next to the tracks than far from them.
* Equation discovery: STLSQ selects exactly the true terms of the transfer function at the two
  lowest noise levels and recovers them closely; the inverse method recovers the known form's
  coefficients at every noise level, better than STLSQ at the highest one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out: Path, shared_data: Path | None = None) -> dict:
    env = dict(os.environ)
    if shared_data is not None:
        env["ARCOFORGE_SHARED_DATA"] = str(shared_data)
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--quick",
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"stdout": proc.stdout, "files": sorted(p.name for p in out.iterdir())}


def test_ssh_reconstruction_quick(tmp_path: Path, shared_data: Path) -> None:
    if not (shared_data / "aviso").is_dir() or not (shared_data / "altimetry").is_dir():
        pytest.skip("aviso/ or altimetry/ missing from the shared data")
    run = _run("ssh_reconstruction.py", tmp_path, shared_data)
    assert {"ssh_maps.png", "ssh_scores.png", "ssh_covariance.png",
            "ssh_metrics.json"} <= set(run["files"])
    m = json.loads((tmp_path / "ssh_metrics.json").read_text())
    rmse = m["rmse_m"]
    assert rmse["OI"] < rmse["climatology"], rmse
    assert rmse["CNN"] < rmse["climatology"], rmse
    assert rmse["OI"] < rmse["climatology + offset"], rmse
    # noise costs something; noise-free observations leave the sampling error alone
    assert m["rmse_oi_noise_free_m"] < rmse["OI"]
    # the CNN learned something: its training loss went down
    first, last = m["cnn_loss_first_last"]
    assert last < first
    # errors grow away from the tracks: nearest bin better than the mean of the others
    for method in ("OI", "CNN"):
        by = m["rmse_by_distance_m"][method]
        assert by[0] < rmse[method], (method, by)
    fitted = m["fitted"]
    assert 5 < fitted["L_small_km"] < fitted["L_large_km"]
    assert 0 < fitted["L_time_days"] < 60
    assert fitted["noise_std_m"] > 0
    spec = m["spectrum"]
    assert len(spec["truth"]) == len(spec["OI"]) == len(spec["wavelength_km"]) > 10


def test_equation_discovery_quick(tmp_path: Path) -> None:
    run = _run("equation_discovery.py", tmp_path)
    assert {"eqd_coefficients.png", "eqd_inputs.png", "eqd_metrics.json"} <= set(run["files"])
    m = json.loads((tmp_path / "eqd_metrics.json").read_text())
    true = m["true"]
    scale = max(abs(c) for c in true)
    summary = m["summary"]
    assert [r["noise σ"] for r in summary] == m["noise"]
    for level in (0, 1):  # noise-free and the lowest noise
        row = summary[level]
        assert row["STLSQ exact support"], row
        assert row["STLSQ max |error|"] < 0.02 * scale, row
    assert summary[0]["STLSQ max |error|"] < 1e-6 * scale
    form_true = [true[m["terms"].index(term)] for term in m["form"]]
    for level, row in enumerate(summary):
        err = max(abs(a - b) for a, b in zip(m["inverse"][level], form_true))
        assert err == pytest.approx(row["inverse max |error|"])
        assert err < 0.05 * scale, (level, m["inverse"][level])
        # the fit's residual is the noise it was given (nothing left unexplained)
        assert row["inverse final RMSE"] < 1.5 * row["noise σ"] + 1e-3
    assert summary[-1]["inverse max |error|"] < summary[-1]["STLSQ max |error|"]
