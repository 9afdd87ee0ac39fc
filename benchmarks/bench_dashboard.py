"""The web dashboard in a real browser: time until the overview is interactive, JS/CSS bytes
per page and the latency of each page's API calls.

    .venv/bin/python benchmarks/bench_dashboard.py                   # make-run data, 5 rounds
    .venv/bin/python benchmarks/bench_dashboard.py --rounds 3 --screenshots docs/img

Loads the `make run` demo (1,000 users x 30 days of shop events, a 7-day factory) through the
CLI into a fresh data directory, starts ``avila serve`` on a free port and drives Debian's
Chromium (headless, Playwright) against it. Each round uses a new browser context (cold cache,
the key put in sessionStorage as after a sign-in) and opens every page by its URL:

* overview interactive: ``performance.now()`` when the page finished rendering and every chart
  has drawn (ms since navigation start), cold cache; then again on a reload (warm: every file
  revalidated with its ETag, 304);
* JS/CSS bytes: the scripts and stylesheets a fresh tab downloads to show that page (over the
  wire, gzip, and decoded), from the Resource Timing entries;
* API calls: the duration of every ``/api/`` request a page made (Resource Timing, as the
  browser saw it), pooled over the rounds: p50, p99 and the count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from avila.testing import ServerProcess
from avila.testing.browser import CHROMIUM, CHROMIUM_ARGS

KEY = "bench-dashboard-key"
PAGES = ["overview", "live", "funnels", "retention", "users", "segments", "ml", "factory", "keys"]
READY_JS = """() => {
  const main = document.getElementById('main');
  if (!main || main.getAttribute('aria-busy') !== 'false') return false;
  const cards = [...main.querySelectorAll('[data-chart]')];
  return cards.every((c) => c.querySelector('.chart svg path')) ? performance.now() : false;
}"""
RESOURCES_JS = """() => performance.getEntriesByType('resource').map((e) => ({
  url: e.name, duration: e.duration, transfer: e.transferSize, decoded: e.decodedBodySize
}))"""


def load_demo(data_dir: Path, users: int, days: int, factory_days: int) -> None:
    env = {**os.environ, "AVILA_DATA_DIR": str(data_dir)}
    env.pop("AVILA_STORAGE_URL", None)
    for args in (
        ["demo", "--users", str(users), "--days", str(days)],
        ["demo", "--factory", "--days", str(factory_days)],
    ):
        subprocess.run(
            [sys.executable, "-m", "avila.cli", *args], env=env, check=True, capture_output=True
        )


def open_page(browser: Any, url: str, page_name: str) -> tuple[Any, Any, float]:
    """A fresh context with the key signed in; returns (context, page, ready ms)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(f"sessionStorage.setItem('avila.key', {KEY!r})")
    page = context.new_page()
    page.goto(f"{url}/#/{page_name}")
    ready = page.wait_for_function(READY_JS, timeout=120_000).json_value()
    return context, page, float(ready)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--factory-days", type=int, default=7)
    parser.add_argument("--train", action="store_true", help="train the models first")
    parser.add_argument("--screenshots", type=Path, help="save one PNG per page here")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        load_demo(data_dir, args.users, args.days, args.factory_days)
        if args.train:
            subprocess.run(
                [sys.executable, "-m", "avila.cli", "train"],
                env={**os.environ, "AVILA_DATA_DIR": str(data_dir)},
                check=True,
                capture_output=True,
            )
        server = ServerProcess(
            data_dir, env={"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
        ).start(timeout=120)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                cold: list[float] = []
                warm: list[float] = []
                ready: dict[str, list[float]] = {p: [] for p in PAGES}
                api_ms: dict[str, list[float]] = {p: [] for p in PAGES}
                assets: dict[str, tuple[int, int, int]] = {}
                for _ in range(args.rounds):
                    for name in PAGES:
                        context, page, ms = open_page(browser, server.url, name)
                        ready[name].append(ms)
                        entries = page.evaluate(RESOURCES_JS)
                        api_ms[name].extend(e["duration"] for e in entries if "/api/" in e["url"])
                        files = [e for e in entries if e["url"].endswith((".js", ".css"))]
                        assets[name] = (
                            len(files),
                            sum(e["transfer"] for e in files),
                            sum(e["decoded"] for e in files),
                        )
                        if name == "overview":
                            cold.append(ms)
                            page.reload()
                            warm.append(
                                float(
                                    page.wait_for_function(READY_JS, timeout=120_000).json_value()
                                )
                            )
                        context.close()
                if args.screenshots:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    for name in PAGES:
                        context, page, _ = open_page(browser, server.url, name)
                        page.screenshot(path=str(args.screenshots / f"dashboard-{name}.png"))
                        context.close()
                browser.close()
        finally:
            server.stop()

    print(
        f"demo: {args.users} users x {args.days} days, factory {args.factory_days} days;"
        f" {args.rounds} rounds, fresh browser context per page (cold cache); 2 cores, shared"
    )
    print(
        f"overview interactive (ms since navigation start): cold median "
        f"{statistics.median(cold):.0f} (rounds {', '.join(f'{v:.0f}' for v in cold)}); "
        f"warm reload median {statistics.median(warm):.0f}"
        f" (rounds {', '.join(f'{v:.0f}' for v in warm)})"
    )
    print()
    print(
        f"{'page':<10} {'ready ms':>9} {'js/css files':>12} {'wire KB':>8} {'decoded KB':>10}"
        f" {'api calls':>9} {'api p50 ms':>10} {'api p99 ms':>10}"
    )
    for name in PAGES:
        count, wire, decoded = assets[name]
        calls = api_ms[name]
        print(
            f"{name:<10} {statistics.median(ready[name]):>9.0f} {count:>12} {wire / 1024:>8.1f}"
            f" {decoded / 1024:>10.1f} {len(calls) // args.rounds:>9}"
            f" {percentile(calls, 50):>10.1f} {percentile(calls, 99):>10.1f}"
        )


if __name__ == "__main__":
    main()
