"""Loopback servers for demos and tests (no network beyond 127.0.0.1)."""
