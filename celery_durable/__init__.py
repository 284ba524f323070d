"""Durable execution for Celery tasks: journaled steps that replay after a crash."""

from celery_durable import worker as _worker  # noqa: F401 - registers the worker bootsteps
from celery_durable.admin import (
    CancelledInvocation,
    ConcurrencySlots,
    Resumed,
    cancel_invocation,
    cancel_invocations,
    concurrency_slots,
    forget_invocation,
    get_invocation,
    list_invocations,
    purge_invocations,
    reject_awakeable,
    resolve_awakeable,
    restart_invocation,
    resume_invocation,
)
from celery_durable.codec import Codec, JsonCodec, PickleCodec
from celery_durable.context import DurableContext
from celery_durable.engine.futures import DurableFuture
from celery_durable.errors import (
    AwakeableError,
    CodecError,
    ConfigurationError,
    ContextError,
    DurableError,
    InvocationCancelled,
    InvocationConflictError,
    InvocationStateError,
    JournalError,
    JournalRefusedError,
    JournalUnavailableError,
    LeaseLost,
    NonDeterminismError,
    Paused,
    RetryableError,
    StepInterruptedError,
    Suspended,
    TerminalError,
    UnreadableJournalError,
    UnstableArgumentsError,
    ValueTooLargeError,
)
from celery_durable.journal.records import Invocation, Step
from celery_durable.policy import RetryPolicy
from celery_durable.rand import DurableRandom
from celery_durable.task import DurableTask

__all__ = [  # noqa: RUF022 - grouped by purpose, as users read it
    # Tasks and their context
    "DurableTask",
    "DurableContext",
    "DurableFuture",
    "DurableRandom",
    "RetryPolicy",
    # Codecs
    "Codec",
    "JsonCodec",
    "PickleCodec",
    # Reading journals
    "Invocation",
    "Step",
    "get_invocation",
    "list_invocations",
    "forget_invocation",
    "resolve_awakeable",
    "reject_awakeable",
    # Operating invocations
    "resume_invocation",
    "restart_invocation",
    "purge_invocations",
    "Resumed",
    "cancel_invocation",
    "cancel_invocations",
    "CancelledInvocation",
    "concurrency_slots",
    "ConcurrencySlots",
    # Errors
    "DurableError",
    "TerminalError",
    "RetryableError",
    "StepInterruptedError",
    "InvocationCancelled",
    "NonDeterminismError",
    "InvocationConflictError",
    "InvocationStateError",
    "JournalError",
    "JournalUnavailableError",
    "JournalRefusedError",
    "UnreadableJournalError",
    "CodecError",
    "ConfigurationError",
    "ContextError",
    "AwakeableError",
    "LeaseLost",
    "Suspended",
    "Paused",
    "ValueTooLargeError",
    "UnstableArgumentsError",
]
