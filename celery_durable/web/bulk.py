"""Bulk actions by filter, run in batches in a thread of the console, with progress.

A job lives in the memory of the console's process: its page shows its progress while
that process runs (a console served by several processes shows a job only in the one
that started it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

#: Invocations per batch: progress is reported after each.
BATCH = 100
#: Jobs kept for their pages, newest last.
KEPT = 20
#: Refusals a job keeps word for word; more are only counted.
NOTED = 20


@dataclass
class Job:
    """One bulk action and how far it got."""

    id: str
    description: str
    total: int
    """How many it was expected to touch (the count the user typed)."""
    done: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    """Why some were skipped (the first ``NOTED``)."""
    error: str | None = None
    """Why it stopped early."""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def skip(self, why: str) -> None:
        self.skipped += 1
        if len(self.notes) < NOTED:
            self.notes.append(why)


class Jobs:
    """The console's bulk jobs, newest last."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, description: str, total: int, work: Callable[[Job], None]) -> Job:
        """Run ``work`` in a thread of its own; it reports progress in the job it gets."""
        job = Job(uuid.uuid4().hex[:12], description, total)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEPT:
                self._jobs.popitem(last=False)

        def run() -> None:
            try:
                work(job)
            except Exception as exc:  # shown on the job's page: the console keeps serving
                job.error = f"{type(exc).__name__}: {exc}"
            finally:
                job.finished_at = time.time()

        threading.Thread(target=run, name=f"durable-bulk-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))
