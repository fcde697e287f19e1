"""Event ids (``ce_id``): random version-4 UUIDs, never repeated, also across fork()."""

from __future__ import annotations

import os
import uuid

from wirebus.event_ids import EventIds, new_event_id


def test_event_ids_are_version_4_uuids() -> None:
    ids = EventIds()
    for _ in range(600):  # more than one pool's worth
        parsed = uuid.UUID(ids.next())
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_one_off_event_id_is_a_version_4_uuid() -> None:
    parsed = uuid.UUID(new_event_id())
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122


def test_event_ids_do_not_repeat() -> None:
    ids = EventIds()
    drawn = [ids.next() for _ in range(20_000)]
    assert len(set(drawn)) == len(drawn)


def test_two_pools_do_not_hand_out_the_same_ids() -> None:
    first, second = EventIds(), EventIds()
    assert not {first.next() for _ in range(300)} & {second.next() for _ in range(300)}


def test_a_forked_child_does_not_reuse_the_parents_pooled_ids() -> None:
    ids = EventIds()
    ids.next()  # the pool now holds ids the parent will hand out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        os.write(write, "\n".join(ids.next() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {ids.next() for _ in range(300)}
    assert not child & parent


def test_the_old_import_place_still_gives_event_ids() -> None:
    from wirebus.broker import new_event_id as moved

    assert uuid.UUID(moved()).version == 4
