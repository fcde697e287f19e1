"""The notifications slice: tells customers about their orders, from notification events."""
