"""Event ids (``ce_id``): random version-4 UUIDs, never repeated, also across fork()."""

from __future__ import annotations

import os
import uuid

from wirebus.broker import new_event_id


def test_event_ids_are_version_4_uuids() -> None:
    for _ in range(600):  # more than one pool's worth
        parsed = uuid.UUID(new_event_id())
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_event_ids_do_not_repeat() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_the_parents_pooled_ids() -> None:
    new_event_id()  # the pool now holds ids the parent will hand out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        os.write(write, "\n".join(new_event_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {new_event_id() for _ in range(300)}
    assert not child & parent
