"""A stored outcome cannot pick the codec that reads it: no pickle from a JSON journal."""

from __future__ import annotations

import base64
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from celery_durable import UnreadableJournalError
from celery_durable.keys import MetaField
from tests.hardening import harness
from tests.hardening.world import World

pytestmark = pytest.mark.system

TIMEOUT = 60


class _Touch:
    """Unpickled, it runs ``os.system`` (what an attacker would make it run)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_a_pickle_written_into_a_json_outcome_is_never_unpickled(
    world: World, tmp_path: Path
) -> None:
    world.start_worker()
    task_id = world.new_id()
    assert world.send(harness.ECHO, "hello", task_id=task_id).get(timeout=TIMEOUT) == "hello"
    assert world.wait_status(task_id, "completed").result == "hello"

    # The attacker: write access to Redis, publish access to the broker.
    touched = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(_Touch(touched))).decode()
    forged = f'{{"s":"ok","v":"{payload}","c":"pickle"}}'
    world.journal.hset(world.invocation_keys(task_id).meta, MetaField.OUTCOME, forged)
    error = world.resend_for_failure(harness.ECHO, "hello", task_id=task_id)

    assert isinstance(error, UnreadableJournalError)
    assert "names codec 'pickle'" in str(error)
    assert not touched.exists()
    inv = world.wait_status(task_id, "paused")
    assert inv.paused_reason is not None
    assert "names codec 'pickle'" in inv.paused_reason
    assert f"durable resume {task_id}" in inv.paused_reason
    assert str(error) == inv.paused_reason
    assert world.journal.ttl(world.invocation_keys(task_id).meta) == -1  # waits for people
