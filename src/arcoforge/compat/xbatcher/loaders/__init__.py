"""xbatcher's ``loaders`` package: ``loaders.torch`` (PyTorch) and ``loaders.keras`` (Keras).

Each submodule needs its framework and is imported only when asked for.
"""
