"""Shared pytest configuration."""

from tests.servers import *  # noqa: F401,F403


def pytest_configure(config: object) -> None:
    """Load torch's compiler stack (Triton) before anything imports TensorFlow.

    Both bundle their own LLVM; importing Triton into a process that already loaded TensorFlow
    crashes it (a segfault inside ``import triton``, e.g. when ``torch.optim.Adam`` first loads
    ``torch._dynamo``). Test modules import TensorFlow at collection (xbatcher's suite), so the
    order is fixed here, once, for the whole session.
    """
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # noqa: BLE001 - torch not installed or broken: its tests skip or fail
        pass
    # netCDF4 and pyproj each bundle a libcurl; importing pyproj after a netCDF file was opened
    # aborts the process at exit ("double free or corruption"): load it first, once
    try:
        import pyproj  # noqa: F401
    except ImportError:
        pass
