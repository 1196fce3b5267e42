"""Tests of arcoforge.compat (drop-in layouts of peer projects)."""
