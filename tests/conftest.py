"""Shared pytest configuration."""

from tests.servers import *  # noqa: F401,F403
