"""The one logger of downloads: every module of :mod:`arcoforge.forge.io` that fetches logs here.

Its name stays ``arcoforge.forge.io.fetch`` (the module that used to hold all of it), so that an
application that sets that logger's level or handlers still sees every download message.
"""

from __future__ import annotations

import logging

#: the logger of :func:`arcoforge.forge.io.fetch.fetch` and of its helpers
logger = logging.getLogger("arcoforge.forge.io.fetch")
