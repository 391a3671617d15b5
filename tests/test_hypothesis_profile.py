"""The Hypothesis profile of the suite: a slow example is not a failure."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=1, database=None)
@given(st.integers())
def test_an_example_slower_than_hypothesis_default_deadline_passes(n: int) -> None:
    time.sleep(0.3)  # over the default 200 ms deadline (x1.25 while generating), as a busy machine can make any example
    assert isinstance(n, int)
