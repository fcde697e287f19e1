"""The orders slice: place, read, list and cancel orders."""
