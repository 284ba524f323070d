"""A module no worker imports on its own: importing it leaves a mark (the file named by
``$HD_PLANTED``), as a module an attacker names in an error record might run code."""

from __future__ import annotations

import os
from pathlib import Path

marker = os.environ.get("HD_PLANTED")
if marker:
    Path(marker).write_text("imported")


class PlantedError(Exception):
    """What the forged error record names."""
