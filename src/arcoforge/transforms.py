"""The recipe transforms, as ``arcoforge.transforms`` (defined in :mod:`arcoforge.forge.transforms`).

>>> import arcoforge as af
>>> recipe = af.ZarrRecipe(pattern, transforms=[af.transforms.Rename({"tasmax": "tmax"})])  # doctest: +SKIP
"""

from arcoforge.forge.transforms import (
    DropDuplicateSteps,
    DropVariables,
    ExpandDimFromKey,
    FillMissingVariable,
    Function,
    KeepVariables,
    OnGroup,
    ReexpressTimes,
    Rename,
    Select,
    SetAttrs,
    SetEncoding,
    Transform,
)

__all__ = [
    "Transform",
    "Function",
    "Rename",
    "DropVariables",
    "KeepVariables",
    "Select",
    "SetAttrs",
    "SetEncoding",
    "ExpandDimFromKey",
    "FillMissingVariable",
    "ReexpressTimes",
    "DropDuplicateSteps",
    "OnGroup",
]
