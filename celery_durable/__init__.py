"""Durable execution for Celery tasks: journaled steps that replay after a crash."""

from celery_durable import worker as _worker  # noqa: F401 - registers the worker bootsteps
from celery_durable.admin import (
    forget_invocation,
    get_invocation,
    list_invocations,
    reject_awakeable,
    resolve_awakeable,
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
    InvocationConflictError,
    JournalError,
    JournalUnavailableError,
    LeaseLost,
    NonDeterminismError,
    RetryableError,
    StepInterruptedError,
    Suspended,
    TerminalError,
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
    # Errors
    "DurableError",
    "TerminalError",
    "RetryableError",
    "StepInterruptedError",
    "NonDeterminismError",
    "InvocationConflictError",
    "JournalError",
    "JournalUnavailableError",
    "CodecError",
    "ConfigurationError",
    "ContextError",
    "AwakeableError",
    "LeaseLost",
    "Suspended",
    "ValueTooLargeError",
    "UnstableArgumentsError",
]
