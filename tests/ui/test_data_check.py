"""The form's "Check data" button in a real browser: counts, splits and thumbnails, or the error at its field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.test_dashboard import Page

pytestmark = pytest.mark.slow


def test_check_data_shows_what_each_split_holds_then_an_error_at_the_data_field(server: str, browser: Any) -> None:
    tab = Page(browser, server)
    tab.goto("/experiments/new?preset=quickstart")
    tab.page.click("#check-data")
    tab.page.wait_for_selector("#data-check-thumbnails img", timeout=60_000)
    lines = tab.page.locator("#data-check-lines li").all_inner_texts()
    # examples/quickstart-synthetic.yaml: 900 synthetic images, half PNEUMONIA; 20% held out (180); 3 IID clients
    # share the other 720 (240 each), keep 20% as their own test set and, of the other 96 per class, cut
    # round(0.9 * 96) = 86 for training and 10 for validation
    client = "train 86 NORMAL, 86 PNEUMONIA; validation 10 NORMAL, 10 PNEUMONIA; own test 24 NORMAL, 24 PNEUMONIA"
    assert lines == [
        "data.train: 450 NORMAL, 450 PNEUMONIA; sizes 32x32 (900); 8-bit",
        "common test set: 90 NORMAL, 90 PNEUMONIA",
        f"client 1: {client}",
        f"client 2: {client}",
        f"client 3: {client}",
    ]
    assert tab.page.locator("#data-check-thumbnails img").count() == 6
    tab.shot("data-check")

    tab.page.select_option("[name='data.train.format']", "npz")
    tab.page.fill("[name='data.train.path']", "/nowhere/chest.npz")
    tab.page.click("#check-data")
    error = tab.page.locator("[data-live-error='data.train.path']")
    error.wait_for(timeout=60_000)
    # outside the service's data roots: refused at the field, naming the roots and nothing about the path
    assert error.inner_text().startswith("this path is outside the data roots (")
    assert "nowhere" not in error.inner_text()
    assert tab.page.locator("#data-check-lines li").count() == 0
    assert tab.problems == []
