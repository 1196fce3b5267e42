"""Drop-in layouts of peer projects, run on arcoforge's engine.

* :mod:`arcoforge.compat.xbatcher` — xbatcher 0.4's public names (``BatchGenerator``,
  ``BatchSchema``, the ``batch``/``torch``/``tf`` accessors, ``loaders.torch``,
  ``loaders.keras``): ``import arcoforge.compat.xbatcher as xbatcher``.
* :mod:`arcoforge.compat.pangeo_forge_recipes` — pangeo-forge-recipes' ``types``, ``patterns``
  and recipe classes (``XarrayZarrRecipe``): recipe modules that import ``pangeo_forge_recipes``
  run unchanged under ``arcoforge bake`` (aliased when the real package is absent).

Nothing is imported here: each compat package is loaded only when asked for.
"""
