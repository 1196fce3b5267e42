"""Fixtures for the feed (batch) tests: shared data, small Zarr stores, a real redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr


def shared_data_dir() -> Path:
    """`/work/shared/data` seen from the repo, overridable by ARCOFORGE_SHARED_DATA."""
    env = os.environ.get("ARCOFORGE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="session")
def oisst() -> xr.Dataset:
    path = shared_data_dir() / "oisst" / "oisst_2003_2004.nc"
    if not path.exists():
        pytest.skip(f"shared data file missing: {path}")
    with xr.open_dataset(path) as ds:
        return ds.load()


@pytest.fixture(scope="session")
def air() -> xr.Dataset:
    path = shared_data_dir() / "ncep-air" / "air.nc"
    if not path.exists():
        pytest.skip(f"shared data file missing: {path}")
    with xr.open_dataset(path) as ds:
        return ds.load()


@pytest.fixture()
def synthetic() -> xr.Dataset:
    """Small 3-D dataset with coords, three variables and an auxiliary coordinate."""
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {
            "a": (("time", "y", "x"), rng.random((12, 8, 6)).astype("float32")),
            "b": (("time", "y", "x"), rng.random((12, 8, 6))),
            "c": (("y", "x"), rng.random((8, 6))),
        },
        coords={"time": np.arange(12), "y": np.linspace(-10, 10, 8),
                "x": np.arange(6) * 2.0, "aux": (("y",), np.arange(8))},
        attrs={"title": "synthetic"},
    )


@pytest.fixture(scope="session")
def air_zarr(tmp_path_factory: pytest.TempPathFactory, air: xr.Dataset) -> Path:
    """ncep air (124×11×21) as a compressed Zarr store, time chunks of 8, plus a target."""
    path = tmp_path_factory.mktemp("zarr") / "air.zarr"
    ds = air[["air"]].astype({"air": "float32"})
    ds = ds.assign(air_next=ds.air.shift(time=-1).fillna(ds.air))
    for v in ds.variables.values():
        v.encoding = {}
    ds.chunk({"time": 8}).to_zarr(path, zarr_format=3, consolidated=False)
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port in a temp dir; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found (CI installs it via scripts/services.sh)")
    redis = pytest.importorskip("redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.skip("redis-server did not start")
            time.sleep(0.05)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run TensorFlow tests after the PyTorch ones: torch's lazy triton import segfaults in
    a process where TensorFlow is already loaded (the other order is fine)."""
    items.sort(key=lambda item: "test_tf.py" in str(item.fspath))
