"""Static checks of the observability and test-kit API's types (mypy --strict only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, assert_type

from celery_durable import Invocation, Step, tracing
from celery_durable.testing import (
    Divergence,
    JournalReader,
    RecordedJournal,
    ReplayResult,
    isolated,
    load_journal,
    replay,
)


def checks(task: Any, app: Any, provider: Any) -> None:
    result = replay(task, Path("case.json"), args=["o-1"], raise_on_divergence=False)
    assert_type(result, ReplayResult)
    assert_type(result.ok, bool)
    assert_type(result.divergence, Divergence | None)
    assert_type(result.next, str | None)
    replay(task, {"steps": []}, compare_result="no")  # type: ignore[arg-type]

    assert_type(load_journal("case.json"), RecordedJournal)
    reader = JournalReader(app)
    assert_type(reader.get("id"), Invocation | None)
    assert_type(reader["id"], Invocation)
    assert_type(reader.steps("id"), list[Step])
    assert_type(reader.names("id"), list[str])
    assert_type(reader.export("id"), dict[str, Any])
    assert_type(reader.save("id", "case.json", raw=True), Path)

    with isolated(app, replay_each_step=True) as same:
        assert_type(same, Any)

    assert_type(tracing.instrument(tracer_provider=provider), None)
    assert_type(tracing.is_instrumented(), bool)
