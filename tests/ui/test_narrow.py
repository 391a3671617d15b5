"""Pages at 768 px, a tablet in portrait: every table column shows, and a table too wide for a window says so."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import NARROW, Page

pytestmark = pytest.mark.slow

# Per table frame: (no column lies beyond the frame, the last header cell ends inside it, the cue shows).
FRAMES_JS = """() => [...document.querySelectorAll(".table-wrap")].map((frame) => {
  const box = frame.getBoundingClientRect(), last = frame.querySelector("thead th:last-child").getBoundingClientRect();
  const hint = document.getElementById(frame.getAttribute("aria-describedby"));
  return [frame.scrollWidth <= frame.clientWidth + 1, last.right <= box.right + 1, !!hint && !hint.hidden];
})"""


def test_tables_show_every_column_at_768_px_and_say_when_a_narrower_window_cuts_them(
    server: str, browser: Any, finished: dict[str, Any]
) -> None:
    run_id = finished["run"]["id"]
    tab = Page(browser, server, NARROW)
    for path, name in (("/", "narrow-experiments"), (f"/compare?runs={run_id}", "narrow-compare")):
        tab.goto(path)
        tab.page.wait_for_load_state("networkidle")
        frames = tab.page.evaluate(FRAMES_JS)  # the compare page also frames its Grad-CAM table
        assert frames and all(frame == [True, True, False] for frame in frames), f"{path}: a column is cut off"
        tab.shot(name)

    tab.page.set_viewport_size({"width": 480, "height": 900})
    tab.page.wait_for_function("() => !document.querySelector('.scroll-hint').hidden")
    assert tab.page.evaluate(FRAMES_JS)[0] == [False, False, True]  # Table 3
    assert tab.page.get_attribute("#compare-table >> xpath=..", "tabindex") == "0", "the keyboard can scroll it"
    tab.shot("narrow-compare-480")
    assert tab.problems == []
