"""The shop example: orders and payments slices served by one wirebus app.

Run it with ``make demo``, or ``wirebus run examples.shop.app:app``.
"""
