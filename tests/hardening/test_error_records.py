"""An error record in the journal names a type; the module it names is never imported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from celery_durable import TerminalError
from celery_durable.keys import MetaField
from tests.hardening import harness
from tests.hardening.world import World

pytestmark = pytest.mark.system

TIMEOUT = 60
PLANTED = "tests.hardening.planted"


def test_a_forged_error_record_does_not_import_the_module_it_names(
    world: World, tmp_path: Path
) -> None:
    marker = tmp_path / "imported"
    world.start_worker(HD_PLANTED=str(marker))
    task_id = world.new_id()
    assert world.send(harness.ECHO, "hello", task_id=task_id).get(timeout=TIMEOUT) == "hello"

    # The attacker: a failure whose type lives in a module no worker imported.
    record = {
        "type": "PlantedError", "module": PLANTED, "qualname": "PlantedError",
        "message": "forged", "args": ["forged"], "metadata": {}, "attempts": 1,
    }  # fmt: skip
    forged = json.dumps({"s": "error", "e": record})
    world.journal.hset(world.invocation_keys(task_id).meta, MetaField.OUTCOME, forged)
    error = world.resend_for_failure(harness.ECHO, "hello", task_id=task_id)
    assert not marker.exists()
    assert isinstance(error, TerminalError)
    assert error.error_type == "PlantedError"
    assert PLANTED not in sys.modules  # nor in this process, which rebuilt it too
