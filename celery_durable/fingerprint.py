"""Argument fingerprints: the same in every process, and able to say which argument differs.

Every invocation (one Celery task id) records a fingerprint of the arguments it was
started with. A later delivery of that task id with other arguments is a reuse of the
id, not a redelivery, and is refused instead of replaying someone else's journal.
A fingerprint therefore has to be equal for every delivery of the same message, in
any worker process and under any ``PYTHONHASHSEED``, and should tell *which*
argument changed without storing, logging or returning any argument's value.

Format (version 1)::

    v1|a:<digest>,<digest>,...|k:<name>=<digest>,<name>=<digest>,...

for example ``v1|a:3f9c2a1b07,77d0e5c2aa|k:order_id=9a1b0c2d3e,qty=00a1b2c3d4``.
There is one 10-hex-digit (40-bit) BLAKE2b digest per positional argument, in
order, and one per keyword, sorted by written name so that keyword order never
matters; an argument has the same digest whether it is passed by position or by
keyword. An
empty section is just its label (``v1|a:|k:``). A keyword whose name is an ASCII
identifier is written as it is; any other string name is percent-encoded (so that
it holds no ``,``, ``=`` or ``|``); a name that is not a string is written as ``#``
and the digest of the name. Two fingerprints are equal exactly when the strings
are; :func:`describe_difference` reads two of them and names the arguments that
differ. Digests are not secret: a low-entropy value (``qty=3``) can be found by
trying candidates, so treat a fingerprint like the journal it sits beside.

A digest is ``blake2b(text, digest_size=5)`` of the compact, ASCII-only JSON text
of the argument's canonical form: a str is its JSON string (``"order-1"``), a small
int its digits, and anything else a JSON array led by a tag, such as
``["l",1,"a"]`` for a sequence, ``["m","a",1,"b",2]`` for a mapping with str keys
(sorted by key) and ``["s",...]`` for a set (items sorted by their own text).
Changing any of this changes the fingerprint of every invocation in flight: change
``VERSION`` with it.

What counts as the same argument is the canonical form's business: see
``celery_durable.canonical``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any
from urllib.parse import quote, unquote

from celery_durable.canonical import BIG, Refusal, canonical_text, key_label
from celery_durable.errors import UnstableArgumentsError

__all__ = ["UnstableArgumentsError", "describe_difference", "fingerprint"]


VERSION = "v1"
_DIGEST_BYTES = 5  # 10 hex digits: a changed argument goes unnoticed once in 2**40

_blake2b = hashlib.blake2b
_OLD_FORMAT = re.compile(r"[0-9a-f]{24}\Z").match


def fingerprint(args: Iterable[Any] | None, kwargs: Mapping[Any, Any] | None) -> str:
    """Return the fingerprint of a task's arguments, in the format the module describes.

    Args:
        args: The positional arguments as delivered (``request.args``).
        kwargs: The keyword arguments as delivered (``request.kwargs``).

    Returns:
        ``v1|a:<digest>,...|k:<name>=<digest>,...``: equal for equal arguments in
        every process, whatever the order of ``kwargs``.

    Raises:
        UnstableArgumentsError: An argument has no encoding that every delivery would
            share (an object whose repr holds its memory address, a function, a value
            that contains itself, ...).
    """
    positional: list[str] = []
    keywords: list[tuple[str, str]] = []
    # What is being digested, kept for the error message only: formatting a label for
    # every argument would cost more than digesting a short str.
    where: tuple[str, Any] = ("args", 0)
    try:
        for index, value in enumerate(args or ()):
            where = ("args", index)
            positional.append(_digest(value))
        if kwargs:
            for name, value in kwargs.items():
                where = ("key", name)
                label = _keyword_name(name)
                where = ("kwargs", name)
                keywords.append((label, _digest(value)))
            keywords.sort()
    except (Refusal, RecursionError) as exc:
        raise _unstable(exc, *where) from exc.__cause__ if isinstance(exc, Refusal) else None
    named = ",".join([f"{name}={digest}" for name, digest in keywords])
    return f"{VERSION}|a:{','.join(positional)}|k:{named}"


def describe_difference(recorded: str, asked: str) -> str:
    """Name the arguments that differ between two fingerprints, never their values.

    Args:
        recorded: The fingerprint the invocation was started with.
        asked: The fingerprint of the delivery that does not match it.

    Returns:
        A clause for a message, such as ``"args[2] differs; kwargs['qty'] was added"``.
        A fingerprint from before this format (a bare 24-hex digest) only allows
        ``"the arguments differ"`` with the reason.
    """
    if recorded == asked:
        return "no argument differs"
    old, new = _parse(recorded), _parse(asked)
    if old is None or new is None:
        unreadable = recorded if old is None else asked
        if _OLD_FORMAT(unreadable):
            return (
                "the arguments differ (one fingerprint was recorded by an older "
                "celery-durable, which cannot say which argument)"
            )
        return "the arguments differ (one fingerprint is in a format this version cannot read)"
    (old_args, old_kwargs), (new_args, new_kwargs) = old, new
    clauses = []
    for index in range(max(len(old_args), len(new_args))):
        if index >= len(new_args):
            clauses.append(f"args[{index}] was removed")
        elif index >= len(old_args):
            clauses.append(f"args[{index}] was added")
        elif old_args[index] != new_args[index]:
            clauses.append(f"args[{index}] differs")
    for name in sorted(old_kwargs.keys() | new_kwargs.keys()):
        label = _keyword_label(name)
        if name not in new_kwargs:
            clauses.append(f"{label} was removed")
        elif name not in old_kwargs:
            clauses.append(f"{label} was added")
        elif old_kwargs[name] != new_kwargs[name]:
            clauses.append(f"{label} differs")
    return "; ".join(clauses) or "the arguments differ"


# -- Fingerprinting -----------------------------------------------------------------


def _digest(value: Any) -> str:
    kind = type(value)
    # The usual arguments skip the canonical form: these are the texts it would give.
    if kind is str:
        written = encode_basestring_ascii(value)
    elif kind is int and -BIG < value < BIG:
        written = int.__repr__(value)
    else:
        written = canonical_text(value)
    return _blake2b(written.encode("ascii"), digest_size=_DIGEST_BYTES).hexdigest()


def _unstable(exc: Exception, section: str, position: Any) -> UnstableArgumentsError:
    """Return the error for a refused argument, at ``position`` in args or kwargs."""
    if section == "args":
        where = f"args[{position}]"
    else:
        where = f"kwargs[{key_label(position)}]"
        if section == "key":
            where = f"the key of {where}"
    if isinstance(exc, Refusal):
        place = where + "".join(reversed(exc.path))
        return UnstableArgumentsError(
            f"cannot fingerprint the task's arguments: {place} is a {exc.type_name} "
            f"{exc.reason}, so a redelivery of this task could not be told from a reuse "
            f"of its task id with other arguments. {exc.hint}",
            place,
            exc.type_name,
        )
    # A RecursionError: cheaper than tracking every container on the way down, and
    # only values that pickle alone can deliver contain themselves.
    return UnstableArgumentsError(
        f"cannot fingerprint the task's arguments: {where} contains itself or is nested "
        "too deeply to walk. Pass plain, acyclic data (str, int, list, dict) instead.",
        where,
    )


def _keyword_name(name: Any) -> str:
    if type(name) is str and name.isascii() and name.isidentifier():
        return name
    if isinstance(name, str):
        return quote(name, safe="")
    # Not a str: only reachable through apply(kwargs={1: ...}); name it by its digest.
    return "#" + _digest(name)


def _parse(text: str) -> tuple[list[str], dict[str, str]] | None:
    parts = text.split("|")
    if len(parts) != 3 or parts[0] != VERSION:
        return None
    _, positional, named = parts
    if not positional.startswith("a:") or not named.startswith("k:"):
        return None
    args = positional[2:].split(",") if positional != "a:" else []
    kwargs: dict[str, str] = {}
    for item in named[2:].split(",") if named != "k:" else []:
        name, equals, digest = item.rpartition("=")
        if not equals:
            return None
        kwargs[name] = digest
    return args, kwargs


def _keyword_label(name: str) -> str:
    if name.startswith("#"):
        return f"a keyword whose name is not a str ({name})"
    return f"kwargs[{unquote(name)!r}]"
