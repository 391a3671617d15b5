"""Bounds for values that reach the database: past them a request is a 422, never an overflow or a driver error."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

#: The largest value of a 32-bit signed integer column (round numbers, offsets): PostgreSQL's INTEGER and what
#: SQLite binds without an OverflowError both hold it.
MAX_INT32 = 2**31 - 1


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("string_nul", "text may not contain the NUL character (\\x00)")
    return value


#: Free text that is stored: PostgreSQL's text columns refuse NUL, which would otherwise surface as a 500.
Text = Annotated[str, AfterValidator(_without_nul)]
