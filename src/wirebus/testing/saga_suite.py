"""The ``SagaStore`` conformance suite: what every saga store keeps (``wirebus.saga.store``).

Each check is an async function of a :class:`SagaStoreHarness`.
:func:`checks_for` lists the checks a harness can run: every store runs
``CHECKS``; a store with real transactions (``transactional``) also runs
``TRANSACTION_CHECKS`` (a rolled-back transaction leaves nothing), and one
whose transactions run side by side and wait on each other's row locks
(``concurrent``: PostgreSQL) runs ``CONCURRENCY_CHECKS`` too::

    @pytest.mark.parametrize("check", checks_for(MemorySagaHarness), ids=lambda c: c.__name__)
    async def test_the_memory_store_passes(check: SagaCheck) -> None:
        await check(MemorySagaHarness())

Each check starts from an empty store. The suite has no pytest dependency: a
failed check raises ``AssertionError`` saying what was expected.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..saga.state import SagaConflict, SagaState, SagaStatus, SagaTimeout, StepRecord
from ..saga.store import SagaStore
from .saga_harnesses import (
    T0,
    MemorySagaHarness,
    Rollback,
    SagaCheck,
    SagaStoreHarness,
    SqlSagaHarness,
    expect,
    new_saga,
    new_timeout,
    stored,
    stored_state,
)
from .waiting import wait_until

__all__ = [
    "CHECKS",
    "CONCURRENCY_CHECKS",
    "TRANSACTION_CHECKS",
    "MemorySagaHarness",
    "SagaCheck",
    "SagaStoreHarness",
    "SqlSagaHarness",
    "checks_for",
]

# ------------------------------------------------------------------ every store


async def inserting_one_saga_twice_keeps_the_first(harness: SagaStoreHarness) -> None:
    first, second = new_saga(), new_saga()
    async with harness.transaction() as store:
        expect(await store.insert(first), "the first start was refused")
        expect(first.version == 1, f"an inserted saga is at version {first.version}, not 1")
        expect(not await store.insert(second), "a second start of checkout o-1 was inserted")
        expect(second.version == 0, "a refused insert changed the state's version")
    async with harness.transaction() as store:
        found = await store.find("checkout", "o-1")
        expect(found is not None and found.saga_id == first.saga_id, f"found {found}")
        expect(await store.get(second.saga_id) is None, "the refused saga is stored")


async def one_key_of_two_saga_types_is_two_sagas(harness: SagaStoreHarness) -> None:
    checkout, refund = new_saga(), new_saga(saga_type="refund")
    await stored(harness, checkout, refund)
    async with harness.transaction() as store:
        found = await store.find("refund", "o-1")
        expect(found is not None and found.saga_id == refund.saga_id, f"found {found}")


async def an_unknown_saga_is_none(harness: SagaStoreHarness) -> None:
    await stored(harness, new_saga())
    async with harness.transaction() as store:
        expect(await store.get(str(uuid.uuid4())) is None, "get of an unknown id found one")
        expect(await store.find("checkout", "o-2") is None, "find of an unknown key found one")
        expect(await store.find("refund", "o-1") is None, "find matched another saga type")


def _rich(state: SagaState) -> SagaState:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    state.data = {"order": "ö-1 ✓", "lines": [{"sku": "日本", "qty": 2}], "ok": True, "n": None}
    state.history = [
        StepRecord("reserve", "action", "succeeded", T0),
        StepRecord("charge", "action", "failed", T0.astimezone(plus_two), detail="card «declined»"),
    ]
    state.status, state.step, state.attempts = SagaStatus.COMPENSATING, 1, 3
    state.error = "charge: card declined"
    state.updated_at = (T0 + dt.timedelta(seconds=1, microseconds=250)).astimezone(plus_two)
    return state


async def a_state_round_trips_every_field(harness: SagaStoreHarness) -> None:
    written = _rich(new_saga())
    await stored(harness, written)
    read = await stored_state(harness, written.saga_id)
    expect(read == written, f"wrote {written}, read {read}")
    assert read is not None
    for name, at in (("created_at", read.created_at), ("updated_at", read.updated_at)):
        expect(at.utcoffset() == dt.timedelta(0), f"{name} came back as {at!r}, not in UTC")


async def a_state_read_or_written_is_not_the_stored_one(harness: SagaStoreHarness) -> None:
    state = new_saga()
    await stored(harness, state)
    state.data["order"] = "changed after insert"
    read = await stored_state(harness, state.saga_id)
    assert read is not None
    read.data["order"], read.step = "changed after get", 7
    again = await stored_state(harness, state.saga_id)
    expect(again is not None and again.data == {"order": "o-1"}, f"stored data is {again}")
    expect(again is not None and again.step == 0, "a state read changed the stored one")


async def update_at_the_stored_version_writes_the_next_one(harness: SagaStoreHarness) -> None:
    state = new_saga()
    await stored(harness, state)
    async with harness.transaction() as store:
        state.status, state.step = SagaStatus.RUNNING, 1
        state.data["paid"] = True
        await store.update(state, expected_version=1)
        expect(state.version == 2, f"after an update the state is at version {state.version}")
    read = await stored_state(harness, state.saga_id)
    expect(read == state, f"updated to {state}, read {read}")


async def update_at_a_stale_version_is_a_conflict_writing_nothing(
    harness: SagaStoreHarness,
) -> None:
    state = new_saga()
    await stored(harness, state)
    async with harness.transaction() as store:
        await store.update(state, expected_version=1)
    stale = await stored_state(harness, state.saga_id)
    assert stale is not None
    stale.step, stale.error = 5, "a worker that read too early"
    async with harness.transaction() as store:
        try:
            await store.update(stale, expected_version=1)
        except SagaConflict:
            pass
        else:
            raise AssertionError("an update at a stale version was written")
    read = await stored_state(harness, state.saga_id)
    expect(read == state, f"after a conflict the saga is {read}, not {state}")


async def update_of_an_unknown_saga_is_a_conflict(harness: SagaStoreHarness) -> None:
    async with harness.transaction() as store:
        try:
            await store.update(new_saga(), expected_version=1)
        except SagaConflict:
            return
    raise AssertionError("an update of a saga never inserted did not raise SagaConflict")


async def list_is_newest_first_by_status_and_type_up_to_a_limit(
    harness: SagaStoreHarness,
) -> None:
    sagas = [new_saga(f"o-{n}", minutes=n) for n in range(4)]
    refund = new_saga("r-1", saga_type="refund", minutes=9)
    sagas[1].status = sagas[3].status = SagaStatus.COMPLETED
    await stored(harness, *sagas, refund)

    def keys(found: Sequence[SagaState]) -> list[str]:
        return [s.key for s in found]

    async with harness.transaction() as store:
        every = keys(await store.list())
        completed = keys(await store.list(status=SagaStatus.COMPLETED))
        checkouts = keys(await store.list(saga_type="checkout", limit=2))
        pending = keys(await store.list(status=SagaStatus.PENDING, saga_type="checkout"))
    expect(every == ["r-1", "o-3", "o-2", "o-1", "o-0"], f"all sagas listed as {every}")
    expect(completed == ["o-3", "o-1"], f"completed sagas listed as {completed}")
    expect(checkouts == ["o-3", "o-2"], f"two newest checkouts listed as {checkouts}")
    expect(pending == ["o-2", "o-0"], f"pending checkouts listed as {pending}")


async def unfinished_are_sagas_not_final_changed_before_a_time(harness: SagaStoreHarness) -> None:
    sagas = {status: new_saga(status.value) for status in SagaStatus}
    for n, (status, state) in enumerate(sagas.items()):
        state.status, state.updated_at = status, T0 + dt.timedelta(minutes=10 - n)
    late = new_saga("late")
    late.updated_at = T0 + dt.timedelta(hours=1)
    await stored(harness, *sagas.values(), late)
    before = T0 + dt.timedelta(minutes=30)
    async with harness.transaction() as store:
        found = [s.key for s in await store.unfinished(updated_before=before, limit=10)]
        first = [s.key for s in await store.unfinished(updated_before=before, limit=1)]
    # least recently changed first: compensating (T0+8), running (+9), pending (+10)
    expected = ["compensating", "running", "pending"]
    expect(found == expected, f"unfinished sagas before {before}: {found}, not {expected}")
    expect(first == ["compensating"], f"the first unfinished saga is {first}")


async def claim_due_takes_due_timeouts_earliest_first_up_to_a_limit(
    harness: SagaStoreHarness,
) -> None:
    saga = new_saga()
    await stored(harness, saga)
    timeouts = [new_timeout(saga.saga_id, minutes) for minutes in (3, 1, 2, 60)]
    async with harness.transaction() as store:
        for due in timeouts:
            await store.add_timeout(due)
    now = T0 + dt.timedelta(minutes=5)
    async with harness.transaction() as store:
        first = await store.claim_due(now, limit=2)
    async with harness.transaction() as store:
        rest = await store.claim_due(now, limit=10)
        again = await store.claim_due(now, limit=10)
    expect(list(first) == [timeouts[1], timeouts[2]], f"the first claim took {first}")
    expect(list(rest) == [timeouts[0]], f"the second claim took {rest}, not the 3-minute one")
    expect(list(again) == [], f"claimed timeouts were claimed again: {again}")
    async with harness.transaction() as store:
        later = await store.claim_due(T0 + dt.timedelta(hours=2), limit=10)
    expect(list(later) == [timeouts[3]], f"the hour's timeout, once due, claimed as {later}")


async def a_timeout_round_trips_in_utc(harness: SagaStoreHarness) -> None:
    saga = new_saga()
    await stored(harness, saga)
    local = dt.timezone(dt.timedelta(hours=-5), "EST")
    due = SagaTimeout("t-1", saga.saga_id, step=2, version=3, due_at=T0.astimezone(local))
    async with harness.transaction() as store:
        await store.add_timeout(due)
    async with harness.transaction() as store:
        [claimed] = await store.claim_due(T0, limit=1)
    expect(claimed == due, f"added {due}, claimed {claimed}")
    expect(claimed.due_at.utcoffset() == dt.timedelta(0), f"due_at came back {claimed.due_at!r}")


async def cancel_timeouts_forgets_one_sagas_timeouts(harness: SagaStoreHarness) -> None:
    one, other = new_saga("o-1"), new_saga("o-2")
    await stored(harness, one, other)
    kept = new_timeout(other.saga_id, 1)
    async with harness.transaction() as store:
        for due in (new_timeout(one.saga_id, 1), new_timeout(one.saga_id, 2, step=2), kept):
            await store.add_timeout(due)
    async with harness.transaction() as store:
        await store.cancel_timeouts(one.saga_id)
    async with harness.transaction() as store:
        claimed = await store.claim_due(T0 + dt.timedelta(hours=1), limit=10)
    expect(list(claimed) == [kept], f"after cancelling o-1's timeouts, claimed {claimed}")


CHECKS: tuple[SagaCheck, ...] = (
    inserting_one_saga_twice_keeps_the_first,
    one_key_of_two_saga_types_is_two_sagas,
    an_unknown_saga_is_none,
    a_state_round_trips_every_field,
    a_state_read_or_written_is_not_the_stored_one,
    update_at_the_stored_version_writes_the_next_one,
    update_at_a_stale_version_is_a_conflict_writing_nothing,
    update_of_an_unknown_saga_is_a_conflict,
    list_is_newest_first_by_status_and_type_up_to_a_limit,
    unfinished_are_sagas_not_final_changed_before_a_time,
    claim_due_takes_due_timeouts_earliest_first_up_to_a_limit,
    a_timeout_round_trips_in_utc,
    cancel_timeouts_forgets_one_sagas_timeouts,
)
"""The checks every store passes, in the order they are best read."""


# ------------------------------------------------------------------ transactional stores


async def a_rolled_back_claim_leaves_its_timeouts_claimable(harness: SagaStoreHarness) -> None:
    saga = new_saga()
    await stored(harness, saga)
    due = new_timeout(saga.saga_id, 1)
    async with harness.transaction() as store:
        await store.add_timeout(due)
    try:
        async with harness.transaction() as store:
            claimed = await store.claim_due(T0 + dt.timedelta(minutes=1), limit=10)
            expect(list(claimed) == [due], f"claimed {claimed}")
            raise Rollback
    except Rollback:
        pass
    async with harness.transaction() as store:
        again = await store.claim_due(T0 + dt.timedelta(minutes=1), limit=10)
    expect(list(again) == [due], f"after a rolled-back claim, claimed {again}")


async def a_rolled_back_start_and_update_leave_nothing(harness: SagaStoreHarness) -> None:
    kept, dropped = new_saga("o-1"), new_saga("o-2")
    await stored(harness, kept)
    try:
        async with harness.transaction() as store:
            expect(await store.insert(dropped), "a new saga was not inserted")
            changed = await store.get(kept.saga_id)
            assert changed is not None
            changed.step = 3
            await store.update(changed, expected_version=1)
            raise Rollback
    except Rollback:
        pass
    expect(await stored_state(harness, dropped.saga_id) is None, "a rolled-back insert is stored")
    read = await stored_state(harness, kept.saga_id)
    expect(read == kept, f"after a rolled-back update the saga is {read}, not {kept}")


TRANSACTION_CHECKS: tuple[SagaCheck, ...] = (
    a_rolled_back_claim_leaves_its_timeouts_claimable,
    a_rolled_back_start_and_update_leave_nothing,
)
"""The checks of stores whose transactions roll back (``transactional``)."""


# ------------------------------------------------------------------ concurrent transactions


async def _blocked(harness: SagaStoreHarness, what: str) -> None:
    async def waiting() -> bool:
        return await harness.waiting_for_locks() >= 1

    condition: Callable[[], Any] = waiting
    await wait_until(condition, within=10, message=f"{what} never waited for the first one's lock")


async def _in_transaction(harness: SagaStoreHarness, work: Callable[[SagaStore], Any]) -> Any:
    async with harness.transaction() as store:
        return await work(store)


async def two_concurrent_starts_of_one_saga_insert_one(harness: SagaStoreHarness) -> None:
    first, second = new_saga(), new_saga()
    async with harness.transaction() as store:
        expect(await store.insert(first), "the first start was refused")
        racing = asyncio.ensure_future(_in_transaction(harness, lambda s: s.insert(second)))
        await _blocked(harness, "the second start")
    inserted = await asyncio.wait_for(racing, 30)
    expect(inserted is False, "a concurrent second start of checkout o-1 was inserted")
    async with harness.transaction() as store:
        found = await store.find("checkout", "o-1")
    expect(found is not None and found.saga_id == first.saga_id, f"found {found}")


async def two_concurrent_updates_of_one_version_write_one(harness: SagaStoreHarness) -> None:
    state = new_saga()
    await stored(harness, state)

    async def late_worker(store: SagaStore) -> str:
        mine = await store.get(state.saga_id)
        assert mine is not None
        mine.step, mine.error = 9, "the late worker"
        try:
            await store.update(mine, expected_version=1)
        except SagaConflict:
            return "conflict"
        return "written"

    async with harness.transaction() as store:
        state.step = 1
        await store.update(state, expected_version=1)
        racing = asyncio.ensure_future(_in_transaction(harness, late_worker))
        await _blocked(harness, "the second update")
    outcome = await asyncio.wait_for(racing, 30)
    expect(outcome == "conflict", f"the second update of version 1 was {outcome}")
    read = await stored_state(harness, state.saga_id)
    expect(read == state, f"after two updates of version 1 the saga is {read}, not {state}")


async def concurrent_claims_take_disjoint_timeouts(harness: SagaStoreHarness) -> None:
    saga = new_saga()
    await stored(harness, saga)
    timeouts = [new_timeout(saga.saga_id, minutes) for minutes in range(4)]
    async with harness.transaction() as store:
        for due in timeouts:
            await store.add_timeout(due)
    now = T0 + dt.timedelta(hours=1)
    async with harness.transaction() as first_store:
        first = await first_store.claim_due(now, limit=2)
        # The second claimer skips the first's locked rows: it neither waits nor takes them.
        second = await asyncio.wait_for(
            _in_transaction(harness, lambda s: s.claim_due(now, limit=10)), 10
        )
    expect(list(first) == timeouts[:2], f"the first claim took {first}")
    expect(list(second) == timeouts[2:], f"beside it, the second claim took {second}")


CONCURRENCY_CHECKS: tuple[SagaCheck, ...] = (
    two_concurrent_starts_of_one_saga_insert_one,
    two_concurrent_updates_of_one_version_write_one,
    concurrent_claims_take_disjoint_timeouts,
)
"""The checks of stores with concurrent, row-locking transactions (``concurrent``)."""


def checks_for(harness: SagaStoreHarness | type[SagaStoreHarness]) -> tuple[SagaCheck, ...]:
    """The checks a store of this harness (class or instance) must pass."""
    checks = CHECKS
    if harness.transactional:
        checks += TRANSACTION_CHECKS
    if harness.concurrent:
        checks += CONCURRENCY_CHECKS
    return checks
