"""The browser tests' Chromium runs without the omnibox popup's renderer, and with every
feature Playwright itself turns off (Chromium keeps only the last ``--disable-features``)."""

from __future__ import annotations

from avila.testing.browser import UNUSED_FEATURES, _playwright_disabled_features, launch_args


def test_the_last_disable_features_switch_keeps_playwrights_list_and_adds_ours() -> None:
    playwrights = _playwright_disabled_features()
    assert playwrights, "Playwright's bundle no longer lists its disabled features this way"
    (switch,) = [a for a in launch_args() if a.startswith("--disable-features=")]
    disabled = switch.removeprefix("--disable-features=").split(",")
    assert set(playwrights) <= set(disabled) and set(UNUSED_FEATURES) <= set(disabled)
