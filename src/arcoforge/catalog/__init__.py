"""STAC catalog of built datasets: publish, search, open by id, and a static HTML site.

>>> from arcoforge.catalog import publish, search, open_dataset
>>> publish("catalog/", "ersst-v5.zarr", meta=load_meta("feedstocks/ersst"))
>>> [s.id for s in search("catalog/", variables=["sst"], time="2020")]
['ersst-v5']
>>> ds = open_dataset("catalog/", "ersst-v5")
"""

from arcoforge.catalog.search import CollectionSummary, get_collection, open_dataset, search
from arcoforge.catalog.stac import publish, read_collections, validate_collection

__all__ = [
    "CollectionSummary",
    "get_collection",
    "open_dataset",
    "publish",
    "read_collections",
    "search",
    "validate_collection",
]
