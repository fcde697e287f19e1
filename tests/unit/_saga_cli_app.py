"""An app whose one saga fails to compensate while ``BROKEN`` says so (for the CLI tests)."""

from __future__ import annotations

import dataclasses

from wirebus import App, Command, Router
from wirebus.saga import Saga, Sagas, Step

BROKEN = {"compensation": True}


@dataclasses.dataclass
class Booking:
    booking_id: str


async def reserve(data: Booking) -> None:
    return None


async def unreserve(data: Booking) -> None:
    if BROKEN["compensation"]:
        raise RuntimeError("the reservation service is down")


async def pay(data: Booking) -> None:
    raise RuntimeError("card refused")


booking = Saga(
    "booking",
    data=Booking,
    key="booking_id",
    compensation_attempts=1,
    steps=[Step("reserve", action=reserve, compensate=unreserve), Step("pay", action=pay)],
)


class Book(Command[str]):
    booking_id: str


router = Router("bookings")


@router.handler
async def book(cmd: Book, sagas: Sagas) -> str:
    saga_id = await sagas.start(booking, Booking(booking_id=cmd.booking_id))
    assert saga_id is not None
    return saga_id


app = App(name="bookings", routers=[router], sagas=[booking])
