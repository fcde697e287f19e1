"""Orchestrated sagas: ordered steps with compensations, persisted state, timeouts, recovery."""
