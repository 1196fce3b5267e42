"""The forge: recipes of archival files -> ARCO stores (scan, plan, targets, engines)."""
