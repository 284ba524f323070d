"""Helpers of the observability tests: a recorder of celery_durable's signals, and spans."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from celery_durable import signals, tracing

SIGNALS = {
    "step_started": signals.step_started,
    "step_succeeded": signals.step_succeeded,
    "step_failed": signals.step_failed,
    "step_replayed": signals.step_replayed,
    "invocation_suspended": signals.invocation_suspended,
    "invocation_paused": signals.invocation_paused,
    "invocation_completed": signals.invocation_completed,
}


@dataclass
class Recorder:
    """Every signal sent, in order: (signal name, sender, arguments)."""

    sent: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, invocation_id: str) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [(s, kw) for s, _, kw in self.sent if kw["invocation_id"] == invocation_id]

    def trail(self, invocation_id: str) -> list[tuple[str, str]]:
        """(signal, step name or status) for one invocation, in order."""
        return [(s, str(kw.get("name", kw.get("status", "")))) for s, kw in self.of(invocation_id)]

    def senders(self) -> set[Any]:
        with self.lock:
            return {sender for _, sender, _ in self.sent}


@contextmanager
def recording() -> Iterator[Recorder]:
    """Connect a receiver to every signal of celery_durable for the block."""
    recorder = Recorder()
    receivers = {}
    for name, signal in SIGNALS.items():

        def receive(sender: Any, signal: Any = None, _name: str = name, **kwargs: Any) -> None:
            with recorder.lock:
                recorder.sent.append((_name, sender, kwargs))

        receivers[name] = receive
        signal.connect(receive, weak=False)
    try:
        yield recorder
    finally:
        for name, signal in SIGNALS.items():
            signal.disconnect(receivers[name])


@contextmanager
def tracing_to_memory() -> Iterator[InMemorySpanExporter]:
    """Turn celery_durable.tracing on for the block, with an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        tracing.uninstrument()
        provider.shutdown()


def spans_named(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    """Spans whose name starts with ``prefix``, in the order they started."""
    return sorted((s for s in spans if s.name.startswith(prefix)), key=lambda s: s.start_time or 0)
