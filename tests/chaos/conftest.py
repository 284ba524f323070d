"""Fixtures of the chaos run: its world, always torn down, with its logs on failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.world import ChaosRun, Settings
from tests.conftest import PROCESS_LOGS


@pytest.fixture
def chaos_run(
    request: pytest.FixtureRequest, tmp_path: Path, chaos_settings: Settings
) -> Iterator[ChaosRun]:
    """A private Redis and a unique prefix; workers and Redis are killed at the end."""
    run = ChaosRun(chaos_settings, tmp_path)
    request.node.stash[PROCESS_LOGS] = run.logs
    try:
        yield run
    finally:
        run.close()
