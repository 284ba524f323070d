"""Fixtures of the operator tests: an app on the real Redis, and the CLI on it."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable, Iterator

import pytest
from celery import Celery
from celery.bin.base import CLIContext
from click.testing import CliRunner, Result

from celery_durable.cli import durable
from celery_durable.runtime import release_runtime
from tests.operator.proj import make_app

Invoke = Callable[..., Result]


@pytest.fixture
def app(key_prefix: str) -> Iterator[Celery]:
    """An app of ``tests.operator.proj`` whose keys carry this test's prefix.

    ``apply()`` journals in Redis, so that invocations are made without a worker.
    """
    app = make_app(key_prefix)
    yield app
    release_runtime(app)
    app.close()
    with warnings.catch_warnings():  # the result backend's sockets, left to the collector
        warnings.simplefilter("ignore", ResourceWarning)
        del app
        gc.collect()


@pytest.fixture
def cli(app: Celery) -> Invoke:
    """Run ``celery -A <app> durable ARGS...`` in process, as Celery's own command passes
    the app; returns click's ``Result`` (``stdout``, ``stderr``, ``exit_code``)."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        context = CLIContext(app=app, no_color=False, workdir=None)
        return runner.invoke(durable, list(args), obj=context, input=input)

    return invoke
