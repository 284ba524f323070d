"""Journals for tests: read them where they are, export them, and load exported ones.

Two JSON forms are understood:

- **The invocation form**, what ``celery durable show ID --json`` prints: the
  ``Invocation`` record (``id``, ``task_name``, ``status``, ``steps``, ``result``,
  ``error``, ``created_at``, ``updated_at``, ``seed``, ...), its ``steps`` a list of
  ``Step`` objects (``index``, ``name``, ``kind``, ``status``, ``attempts``, ``value``,
  ``error``, ``started_at``, ``finished_at``). Times may be ISO 8601 text or seconds
  since the epoch. It does not say which codec stored a step's value, so a replay
  decodes each value with the codec the code asks for.
- **The raw form** (``"format": "celery-durable.journal/1"``), what
  ``JournalReader.export`` writes: the stored entries and completions as they are
  (codecs included), the outcome, and the arguments when the invocation kept them.

Either may carry ``args`` and ``kwargs``, which ``replay`` then calls the task with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kombu.utils import json as kombu_json

from celery_durable.journal.records import Invocation, Step, parse_invocation
from celery_durable.journal.store import JournalStore, Stored
from celery_durable.keys import MetaField as F
from celery_durable.runtime import runtime_for

RAW_FORMAT = "celery-durable.journal/1"

_dumps = json.JSONEncoder(separators=(",", ":")).encode
# Typed once here: kombu leaves it untyped. Stored calls are kombu's JSON.
_loads: Callable[[str], Any] = kombu_json.loads


@dataclass(frozen=True, slots=True)
class RecordedJournal:
    """A journal as exported: what a replay hands back, and how the invocation ended."""

    id: str
    task_name: str
    status: str
    seed: int | None
    entries: list[str]
    """Stored entries (JSON text), in journal order."""
    completions: dict[str, str] = field(default_factory=dict)
    """Outcomes from outside by journal index (JSON text), ``<index>:sent`` markers."""
    result: Any = None
    """The result as its codec stored it (JSON), if it completed."""
    error: dict[str, Any] | None = None
    """The error record, if it failed."""
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    exact_codecs: bool = True
    """False when the form does not say which codec stored each value (invocation form)."""


def load_journal(source: Any) -> RecordedJournal:
    """Read a journal in either form (see the module docstring).

    Args:
        source: A path to a JSON file, JSON text, a mapping already parsed, or an
            ``Invocation`` (from ``get_invocation``).

    Raises:
        ValueError: it is neither form.
    """
    if isinstance(source, Invocation):
        return _from_invocation(invocation_json(source))
    is_text = isinstance(source, str) and source.lstrip().startswith("{")
    if isinstance(source, Path) or (isinstance(source, str) and not is_text):
        source = Path(source).read_text()
    if isinstance(source, str | bytes):
        source = json.loads(source)
    if not isinstance(source, Mapping):
        raise ValueError(f"a journal is a JSON object, not {type(source).__name__}")
    if "entries" in source:
        return _from_raw(source)
    if "steps" in source:
        return _from_invocation(source)
    raise ValueError(
        "not a journal: expected the JSON of `celery durable show ID --json` (with 'steps') "
        "or of JournalReader.export (with 'entries')"
    )


def invocation_json(invocation: Invocation) -> dict[str, Any]:
    """The invocation form of ``invocation``, as ``celery durable show --json`` prints it."""
    return invocation.as_dict()


# -- The two forms ----------------------------------------------------------------------


def _from_raw(raw: Mapping[str, Any]) -> RecordedJournal:
    if raw.get("format", RAW_FORMAT) != RAW_FORMAT:
        raise ValueError(f"journal format {raw.get('format')!r} is not {RAW_FORMAT!r}")
    outcome = raw.get("outcome") or {}
    return RecordedJournal(
        id=str(raw["id"]),
        task_name=str(raw.get("task_name", "")),
        status=str(raw.get("status", "running")),
        seed=_seed(raw.get("seed")),
        entries=[e if isinstance(e, str) else _dumps(e) for e in raw["entries"]],
        completions={
            str(k): v if isinstance(v, str) else _dumps(v)
            for k, v in (raw.get("completions") or {}).items()
        },
        result=outcome.get("v"),
        error=outcome.get("e"),
        args=raw.get("args"),
        kwargs=raw.get("kwargs"),
    )


def _from_invocation(inv: Mapping[str, Any]) -> RecordedJournal:
    task_id = str(inv["id"])
    entries: list[str] = []
    completions: dict[str, str] = {}
    for step in sorted(inv["steps"], key=lambda s: int(s["index"])):
        if step.get("status") in ("retrying", "paused"):
            continue  # failed attempts waiting for a retry or an operator: not an entry
        index = int(step["index"])
        if index != len(entries):
            raise ValueError(f"journal of {task_id}: step {index} follows {len(entries)} entries")
        entries.append(_entry_of(task_id, step, completions))
    return RecordedJournal(
        id=task_id,
        task_name=str(inv.get("task_name", "")),
        status=str(inv.get("status", "running")),
        seed=_seed(inv.get("seed")),
        entries=entries,
        completions=completions,
        result=inv.get("result"),
        error=inv.get("error"),
        args=inv.get("args"),
        kwargs=inv.get("kwargs"),
        exact_codecs=False,
    )


def _entry_of(task_id: str, step: Mapping[str, Any], completions: dict[str, str]) -> str:
    """The stored entry a ``Step`` describes; completions it reports go to ``completions``."""
    index, kind, status = int(step["index"]), str(step["kind"]), step.get("status")
    started, finished = _seconds(step.get("started_at")), _seconds(step.get("finished_at"))
    entry: dict[str, Any] = {"k": kind, "n": step["name"], "t": int((started or 0) * 1000)}
    entry["d"] = int(((finished or started or 0) - (started or 0)) * 1e6) if kind == "run" else 0
    if int(step.get("attempts") or 1) != 1:
        entry["a"] = int(step["attempts"])
    if kind in ("call", "awakeable"):
        # The record shows the outcome that came from outside, not the entry's own value
        # (the child's id, the awakeable's secret), which a replay does not need.
        entry.update(s="ok", v={"id": f"{task_id}/{index}", "task": ""} if kind == "call" else
                     {"id": "0" * 32})  # fmt: skip
        if status in ("completed", "failed"):
            done: dict[str, Any] = {"s": "ok" if status == "completed" else "error"}
            if status == "completed":
                done["v"] = step.get("value")
            else:
                done["e"] = step.get("error") or {}
            done["t"] = finished or started or 0.0
            completions[str(index)] = _dumps(done)
        completions[f"{index}:sent"] = "1"  # never publish a child again from a replay
    elif status == "failed":
        entry.update(s="error", e=step.get("error") or {})
    else:
        entry.update(s="ok", v=step.get("value"))
    return _dumps(entry)


def _seconds(stamp: Any) -> float | None:
    if stamp is None or stamp == "":
        return None
    if isinstance(stamp, int | float):
        return float(stamp)
    return datetime.fromisoformat(str(stamp)).timestamp()


def _seed(value: Any) -> int | None:
    return None if value is None else int(value)


# -- Reading journals where they are ------------------------------------------------------


class JournalReader:
    """Reads the journals of one app, eager (in this process) or in Redis.

    The ``durable_journal`` fixture is one, for the ``durable_app`` fixture's app.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def get(self, task_id: str) -> Invocation | None:
        """The invocation ``task_id``, or None if no journal of it is kept."""
        found = self._read(task_id)
        return None if found is None else parse_invocation(task_id, *found)

    def __getitem__(self, task_id: str) -> Invocation:
        invocation = self.get(task_id)
        if invocation is None:
            raise KeyError(f"no journal of invocation {task_id} is kept")
        return invocation

    def steps(self, task_id: str) -> list[Step]:
        """The steps of ``task_id``'s journal (``KeyError`` if there is none)."""
        return self[task_id].steps

    def names(self, task_id: str) -> list[str]:
        """The names of ``task_id``'s journal entries, in order."""
        return [s.name for s in self.steps(task_id) if s.status not in ("retrying", "paused")]

    def invocations(self, status: str | None = None, limit: int = 100) -> list[Invocation]:
        """Invocations kept, newest first (eager ones first), optionally of one status."""
        found: list[Invocation] = []
        for store in self._stores():
            ids = store.list_ids(status, limit)
            for task_id, stored in zip(ids, store.read_many(ids), strict=True):
                if stored is not None and (status is None or stored[0].get(F.STATUS) == status):
                    found.append(parse_invocation(task_id, *stored))
        return found[:limit]

    def export(self, task_id: str) -> dict[str, Any]:
        """The raw form of ``task_id``'s journal, for ``replay`` (``KeyError`` if none)."""
        found = self._read(task_id)
        if found is None:
            raise KeyError(f"no journal of invocation {task_id} is kept")
        meta, entries, completions = found
        raw: dict[str, Any] = {
            "format": RAW_FORMAT,
            "id": task_id,
            "task_name": meta.get(F.TASK, ""),
            "status": meta.get(F.STATUS, "running"),
            "seed": int(meta[F.SEED]) if F.SEED in meta else None,
            "entries": [json.loads(e) for e in entries],
            "completions": {k: _parsed(v) for k, v in completions.items()},
            "outcome": json.loads(meta[F.OUTCOME]) if meta.get(F.OUTCOME) else None,
        }
        if meta.get(F.CALL):
            call = _loads(meta[F.CALL])
            raw["args"], raw["kwargs"] = call.get("args", []), call.get("kwargs", {})
        return raw

    def save(self, task_id: str, path: str | Path, raw: bool = False) -> Path:
        """Write ``task_id``'s journal to ``path`` as JSON: the invocation form, or the raw
        form with ``raw=True``; return the path."""
        data = self.export(task_id) if raw else invocation_json(self[task_id])
        target = Path(path)
        target.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        return target

    # -- Plumbing -------------------------------------------------------------------------

    def _stores(self) -> list[JournalStore]:
        runtime = runtime_for(self.app)
        stores: list[JournalStore] = [runtime.eager_store]
        if runtime.settings.redis_url:  # never connect to a Redis nobody named
            stores.append(runtime.store)
        return stores

    def _read(self, task_id: str) -> Stored | None:
        for store in self._stores():
            found = store.read(task_id)
            if found is not None:
                return found
        return None


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
