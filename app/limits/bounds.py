"""Upper bounds for integers that reach the database: past them a request is a 422, never an overflow."""

from __future__ import annotations

#: The largest value of a 32-bit signed integer column (round numbers, offsets): PostgreSQL's INTEGER and what
#: SQLite binds without an OverflowError both hold it.
MAX_INT32 = 2**31 - 1
