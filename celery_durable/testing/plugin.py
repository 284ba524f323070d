"""The pytest plugin of celery-durable, registered through the ``pytest11`` entry point.

Fixtures:

- ``durable_app``: a Celery app for durable tasks defined in the test, with a key
  prefix of its own. Eager by default (``durable_config``), so it needs no broker
  and no Redis; its journals are gone after the test.
- ``durable_config``: the settings ``durable_app`` gets; override it in a conftest
  (for example with a Redis broker and ``task_always_eager=False``, for a worker).
- ``durable_key_prefix``: the unique ``durable_key_prefix`` of the test.
- ``durable_journal``: a ``JournalReader`` of ``durable_app``'s journals.
- ``durable_replay_each_step``: request it to turn the mode on for ``durable_app``.

The marker ``@pytest.mark.durable_replay_each_step`` turns it on too, and the option
``--durable-replay-each-step`` for every test that uses ``durable_app``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_durable.testing.apps import EAGER_CONFIG, isolated, unique_prefix
from celery_durable.testing.journals import JournalReader

MARKER = "durable_replay_each_step"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("celery-durable").addoption(
        "--durable-replay-each-step",
        action="store_true",
        default=False,
        help="run the durable tasks of every durable_app with durable_replay_each_step on",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: run this test's durable_app with durable_replay_each_step on: every "
        "step after the first is reached through a replay (celery_durable.testing)",
    )


@pytest.fixture
def durable_key_prefix() -> str:
    """A ``durable_key_prefix`` no other test uses."""
    return unique_prefix()


@pytest.fixture
def durable_config() -> dict[str, Any]:
    """Settings of ``durable_app``: eager, journals in memory. Override to change them."""
    return dict(EAGER_CONFIG)


@pytest.fixture
def durable_replay_each_step() -> bool:
    """Turns ``durable_replay_each_step`` on for ``durable_app``: request it in a test."""
    return True


@pytest.fixture
def durable_app(
    request: pytest.FixtureRequest, durable_config: dict[str, Any], durable_key_prefix: str
) -> Iterator[Celery]:
    """A Celery app for durable tasks, its journals its own (see the module docstring)."""
    app = Celery(f"durable-{durable_key_prefix}", set_as_current=False)
    app.conf.update(durable_config)
    wanted = (
        request.node.get_closest_marker(MARKER) is not None
        or MARKER in request.fixturenames
        or bool(request.config.getoption("--durable-replay-each-step"))
    )
    with isolated(app, durable_key_prefix, True if wanted else None):
        yield app
    app.close()


@pytest.fixture
def durable_journal(durable_app: Celery) -> JournalReader:
    """Reads ``durable_app``'s journals: ``durable_journal[task_id].steps``,
    ``durable_journal.names(task_id)``, ``durable_journal.save(task_id, path)``."""
    return JournalReader(durable_app)
