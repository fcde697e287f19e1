"""The checkout slice: the saga that takes a placed order to paid, or back to cancelled."""
