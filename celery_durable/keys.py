"""Every Redis key celery-durable uses, and every field of its hashes, named in one place.

An invocation's keys share the hash tag ``{<task_id>}`` so that they land in one
Redis Cluster slot and the Lua scripts that touch them together stay legal there.
Redis takes the text between a key's first ``{`` and the first ``}`` after it as the
tag, so any task id gives its keys one tag, braces and all, except an empty one or one
that starts with ``}``: their tag would be empty, and Redis would hash each whole key
to a slot of its own. On a cluster those ids get keys of another shape (see
``KeySpace.invocation``).
The listing indexes span invocations; on a single Redis they are one sorted set per
status.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class InvocationKeys:
    """The keys of one invocation, in the order the Lua scripts expect them."""

    meta: str
    """Hash: the fields of ``MetaField``."""
    journal: str
    """List: one JSON entry per durable operation, in order."""
    done: str
    """Hash: completions that came from outside (a child's outcome, an awakeable's value)
    by journal index, and ``<index>:sent`` once a child was published."""
    call: str
    """String: what a wake-up, the recovery sweep, a resume or a restart publishes (task
    name, arguments, options; JSON). Kept apart from ``meta`` so that the meta hash, all
    of its values short, stays a listpack in Redis (a value longer than
    ``hash-max-listpack-value``, 64 B by default, turns the whole hash into a hash table,
    at about twice the bytes). It lives as long as the steps (``MetaField.STEPS_UNTIL``):
    a restart needs both."""
    steps: str
    """String: a completed invocation's journal, call and seed, packed at finish
    (compressed; ``stores.redis.packing``) in place of ``journal``, ``call`` and
    ``MetaField.SEED``, when that is smaller. ``MetaField.PACKED`` says it is there, and
    how many entries it holds. Only a completed invocation is packed: nothing writes to
    its steps again (a failed one may be resumed, which reads and trims its journal in
    Lua)."""
    tombstone: str
    """String: the last fence of a forgotten (or purged) invocation, kept for
    ``journal.store.TOMBSTONE_TTL``, so that one created anew under its id starts above
    it: fences only go up for a task id."""


@dataclass(frozen=True, slots=True)
class ConcurrencyKeys:
    """The keys of one concurrency key (``durable_concurrency_key``), under a hash tag of
    their own: on a Redis Cluster they live in another slot than their invocations."""

    holders: str
    """Sorted set: the invocations that hold a slot of the key, scored by when they got it."""
    waiting: str
    """Sorted set: the invocations that wait for a slot, scored by when they first asked
    (ms of Redis's clock): they get one in that order. The score is also the ticket of
    the grant that wakes a waiter (``DoneField.grant``)."""


class IndexKeys(NamedTuple):
    """Sorted sets of invocation ids scored by creation time, for listing.

    ``all`` holds every invocation until its retention has passed; each live status
    has its own, so that listing one status reads only its members.
    """

    all: str
    running: str
    suspended: str
    paused: str


class MetaField:
    """Fields of an invocation's meta hash. The Lua scripts spell them the same way."""

    TASK = "task"
    """Name of the task the invocation runs."""
    FINGERPRINT = "fingerprint"
    """Digest of its arguments, per position (``celery_durable.fingerprint``)."""
    SEED = "seed"
    """The checkpointed seed of ``ctx.rand``."""
    STATUS = "status"
    """running, suspended, paused, completed, failed, cancelled or replaced."""
    OUTCOME = "outcome"
    """The final outcome's JSON, once finished."""
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    """Seconds since the epoch, as the clients saw them."""
    FENCE = "fence"
    """Fencing token: raised by every execution that takes the lease; every write of
    an execution must carry the token it took. It only goes up for a task id, across
    forget, replace and re-creation: a new invocation starts at Redis's clock in ms, or
    above its tombstone or the incarnation it replaces."""
    LEASE = "lease"
    """Who holds the lease (``host:pid``). Present until the execution ends cleanly:
    a lease that expired while still present belonged to an execution that died."""
    LEASE_UNTIL = "lease_until"
    """When the lease expires, in milliseconds of Redis's clock."""
    FRONTIER = "frontier"
    DEATHS = "deaths"
    """Executions that died in a row with the journal at ``frontier`` entries."""
    ATTEMPT = "attempt"
    """JSON of the failed attempts of the next step, while it waits for its retry."""
    GUARD = "guard"
    """Index of an at-most-once step that an execution started."""
    NESTING = "nesting"
    """``replaced_task_nesting`` of the request that created or replaced it."""
    PAUSED_REASON = "paused_reason"
    RELEASED = "released"
    """Set on a paused invocation by the operator action that moves it on (``resume``,
    ``restart``): the next start runs it, and consumes the field. Without it a delivery
    of a paused invocation runs nothing."""
    CANCEL = "cancel"
    """Why the invocation was cancelled (``cancel_invocation``, a deadline): set once, kept
    until it expires. Its execution raises ``InvocationCancelled`` at its next durable
    operation, and the journal's ``cancel`` entry says where."""
    DEADLINE = "deadline"
    """When the invocation is cancelled unless it finished (ms of Redis's clock): its
    creation plus ``durable_timeout`` (or a child's ``timeout``). Set on creation."""
    CONCURRENCY_KEY = "ckey"
    """The concurrency key whose slot the invocation holds or waits for. Set on creation."""
    CALL = "call"
    """The name under which the store's readers hand the call (``InvocationKeys.call``)
    back with the meta fields. No longer written to the meta hash; an invocation started
    by an earlier release keeps its call there, and every reader falls back to it. What
    a wake-up, the recovery sweep or a resume re-publishes: task name, arguments,
    options (JSON). Stored at creation, and again when a retry changes the arguments."""
    STEPS_UNTIL = "steps_until"
    """When a finished invocation's steps (journal, completions, call) expire, in ms of
    Redis's clock; set at finish when ``durable_journal_retention`` is shorter than
    ``durable_retention``. Past it (at once for a journal retention of 0) only the meta
    hash is left: status, outcome, times, fingerprint."""
    PACKED = "packed"
    """How many journal entries a completed invocation's ``InvocationKeys.steps`` holds:
    set at finish when its journal and call were packed there (they are deleted)."""
    AWAITING = "awaiting"
    """What a suspended invocation waits for (JSON list), for people reading it."""
    DUE = "due"
    """When a running invocation that released its lease is due to run again, in
    milliseconds of Redis's clock: its retry's ETA. The recovery sweep waits for it."""
    RECOVERED = "recovered"
    """``<fence>:<count>:<next>``: the recovery sweep published the invocation again
    ``count`` times while its fence stayed ``fence``, and claims it next no earlier
    than ``next`` (milliseconds of Redis's clock)."""


class DoneField:
    """Fields of an invocation's completions hash besides journal indexes."""

    GRANT = "slot:"
    """``slot:<ticket>``: a slot of its concurrency key was handed to the invocation while
    it waited with that ticket (``ConcurrencyKeys.waiting``): it wakes, and runs."""

    @staticmethod
    def grant(ticket: str) -> str:
        return f"{DoneField.GRANT}{ticket}"


FINISHED_STATUSES = ("completed", "failed", "cancelled", "replaced")
LIVE_STATUSES = ("running", "suspended", "paused")


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds keys under one prefix: ``<prefix>:{<task_id>}:<part>``.

    On one Redis the listing indexes and the due wake-ups are one key each. On a Redis
    Cluster (``cluster``) a script may only touch one hash slot, so each slot has its
    own: ``<prefix>:slot:{<tag>}:<part>``, where ``<tag>`` hashes to the slot of the
    invocations it lists. The keys that span slots (which slots are in use, the due
    wake-ups to claim) are written outside the scripts.
    """

    prefix: str = "durable"
    cluster: bool = False

    def invocation(self, task_id: str) -> InvocationKeys:
        """The keys of the invocation ``task_id``, any text: all in one hash slot.

        They are ``<prefix>:{<task_id>}:<part>``. On a cluster, a task id that is empty
        or starts with ``}`` (whose tag would be empty) has
        ``<prefix>:#{<crc32 of the id, hex>}:<task_id>:<part>`` instead. No key of the
        first shape starts with ``<prefix>:#``, so the two never meet, and every other
        id keeps the keys it had before this second shape existed. On one Redis the tag
        does not matter, and every id keeps the first shape.
        """
        if self.cluster and task_id[:1] in ("", "}"):
            tag = f"{binascii.crc32(task_id.encode()):08x}"
            base = f"{self.prefix}:#{{{tag}}}:{task_id}:"
        else:
            base = f"{self.prefix}:{{{task_id}}}:"
        return InvocationKeys(
            meta=base + "meta", journal=base + "journal", done=base + "done",
            call=base + "call", steps=base + "steps", tombstone=base + "tombstone",
        )  # fmt: skip

    @property
    def wakeups(self) -> str:
        """Sorted set of suspended invocation ids, scored by when to wake them (ms): the
        one the wake-up component claims from."""
        return f"{self.prefix}:wakeups"

    @property
    def epoch(self) -> str:
        """String set once per Redis data set: if it is missing, Redis lost its data."""
        return f"{self.prefix}:epoch"

    @property
    def slots_in_use(self) -> str:
        """Set of the hash slots that hold invocations (cluster only), for listing."""
        return f"{self.prefix}:slots"

    @property
    def sweep_lock(self) -> str:
        """Who sweeps the slots' wake-ups into ``wakeups`` now (cluster only)."""
        return f"{self.prefix}:sweep-lock"

    @property
    def recovery_lock(self) -> str:
        """Who sweeps for lost invocations now: one worker at a time."""
        return f"{self.prefix}:recovery-lock"

    def slot(self, task_id: str) -> int:
        """The hash slot of an invocation's keys."""
        return key_slot(self.invocation(task_id).meta)

    def indexes(self, task_id: str = "") -> IndexKeys:
        """The listing indexes that hold ``task_id`` (one set for all ids on one Redis)."""
        if self.cluster:
            return self.indexes_of_slot(self.slot(task_id))
        base = f"{self.prefix}:index:"
        return IndexKeys(base + "all", base + "running", base + "suspended", base + "paused")

    def indexes_of_slot(self, slot: int) -> IndexKeys:
        """The listing indexes of one hash slot (cluster only)."""
        base = f"{self.prefix}:slot:{{{slot_tag(slot)}}}:index:"
        return IndexKeys(base + "all", base + "running", base + "suspended", base + "paused")

    def wakeups_of(self, task_id: str) -> str:
        """Where a suspension schedules its wake-up: ``wakeups`` on one Redis; on a
        cluster the set of its slot, copied into ``wakeups`` outside the script."""
        if self.cluster:
            return self.wakeups_of_slot(self.slot(task_id))
        return self.wakeups

    def wakeups_of_slot(self, slot: int) -> str:
        return f"{self.prefix}:slot:{{{slot_tag(slot)}}}:wakeups"

    @property
    def deadlines(self) -> str:
        """Sorted set of invocation ids with a deadline, scored by it (ms): the one the
        workers' sweep reads (``worker.Recovery``)."""
        return f"{self.prefix}:deadlines"

    def deadlines_of(self, task_id: str) -> str:
        """Where an invocation's deadline is kept: ``deadlines`` on one Redis; on a cluster
        the set of its slot, copied into ``deadlines`` outside the script."""
        if self.cluster:
            return self.deadlines_of_slot(self.slot(task_id))
        return self.deadlines

    def deadlines_of_slot(self, slot: int) -> str:
        return f"{self.prefix}:slot:{{{slot_tag(slot)}}}:deadlines"

    def concurrency(self, key: str) -> ConcurrencyKeys:
        """The keys of the concurrency key ``key``, any text: ``<prefix>:concurrency:{key}:``,
        or on a cluster, for a key whose tag would be empty, as ``invocation`` makes them."""
        if self.cluster and key[:1] in ("", "}"):
            base = f"{self.prefix}:concurrency#{{{binascii.crc32(key.encode()):08x}}}:{key}:"
        else:
            base = f"{self.prefix}:concurrency:{{{key}}}:"
        return ConcurrencyKeys(holders=base + "holders", waiting=base + "waiting")


#: Hash slots of a Redis Cluster.
SLOTS = 16384
_TAGS: list[str] = []


def key_slot(key: str) -> int:
    """The Redis Cluster hash slot of ``key``: its ``{hash tag}`` if it has one."""
    data = key.encode()
    start = data.find(b"{")
    if start > -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


def slot_tag(slot: int) -> str:
    """A short text whose hash slot is ``slot``: a hash tag that puts a key there."""
    if not _TAGS:
        # Made once per process, in about a tenth of a second: every slot gets the
        # first decimal number that hashes to it.
        tags: list[str | None] = [None] * SLOTS
        found, number = 0, 0
        while found < SLOTS:
            text = str(number)
            index = binascii.crc_hqx(text.encode(), 0) % SLOTS
            if tags[index] is None:
                tags[index] = text
                found += 1
            number += 1
        _TAGS.extend(tag for tag in tags if tag is not None)
    return _TAGS[slot]
