"""The replica slice: its own copy of every order, from state-transfer events."""
