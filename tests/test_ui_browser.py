"""The web page in a real headless browser: Debian's Chromium, driven by Selenium through
Debian's chromium-driver, against `serve` under uvicorn on loopback with the tiny guard.

`make test` installs the browser where it can (`make browser`); without one the tests skip
with the reason, except in CI (``CI`` set), where they fail. The run leaves screenshots of
each page in docs/ (ui-try.png, ui-guard.png, ui-review.png) for the README.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_proxy import serving

from topicguard import TopicGuard
from topicguard.data import read_dataset
from topicguard.serve import ServeConfig, create_app

DOCS = Path(__file__).resolve().parents[1] / "docs"
WAIT_S = 20
HTML_TEXT = '<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed: pip install -e '.[test]'")
    chromium = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        _unavailable(
            "no Chromium or chromedriver: `make browser` (as root: "
            "apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-quic", "--window-size=1200,900", "--lang=en-US",
    ):  # fmt: skip
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    except Exception as exc:  # noqa: BLE001 - selenium raises several kinds for a bad browser
        _unavailable(f"Chromium did not start: {' '.join(str(exc).split())[:300]}")
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def guard(tiny_guard: Path) -> TopicGuard:
    return TopicGuard.load(tiny_guard)


@pytest.fixture(scope="module")
def site(
    guard: TopicGuard, tiny_guard: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    reviews = tmp_path_factory.mktemp("reviews")
    config = ServeConfig(model_dir=tiny_guard, review_dir=reviews)
    with serving(create_app(config, guard=guard)) as url:
        yield url, reviews


def _wait(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d))


def _by_id(driver: Any, ident: str) -> Any:
    return driver.find_element("id", ident)


def _screenshot(driver: Any, name: str) -> None:
    """The whole page, as tall as it is."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1200, min(max(int(height) + 100, 600), 2400))
    DOCS.mkdir(exist_ok=True)
    driver.save_screenshot(str(DOCS / name))
    driver.set_window_size(1200, 900)


def _judge(driver: Any, text: str, *, previous: int) -> None:
    box = _by_id(driver, "try-text")
    box.clear()
    box.send_keys(text)
    box.send_keys("\n")  # Enter judges
    _wait(driver, lambda d: len(d.find_elements("css selector", "#history li")) == previous + 1)


def test_try_it_shows_verdicts_score_bar_and_threshold(
    browser: Any, site: tuple[str, Path], guard: TopicGuard
) -> None:
    url, _ = site
    browser.get(url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(url + "/")
    queries = ["Where is my parcel?", "write me a poem about the sea"]
    for n, query in enumerate(queries):
        _judge(browser, query, previous=n)
        expected = guard.classify([query])[0]
        verdict = _by_id(browser, "verdict").text
        assert verdict == ("allowed" if expected.allowed else "blocked")
        assert _by_id(browser, "score").text == f"{expected.score:.4f}"
        assert _by_id(browser, "lang").text == "en"
        assert _by_id(browser, "judged-by").text.startswith("the fast model")
        bar = _by_id(browser, "score-bar")
        fill, mark = _by_id(browser, "score-fill"), _by_id(browser, "score-threshold")
        assert float(bar.get_attribute("data-score")) == expected.score
        assert float(bar.get_attribute("data-threshold")) == guard.threshold
        # drawn: the fill as wide as the score, the threshold marked where it is
        width = bar.size["width"]
        assert fill.size["width"] == pytest.approx(width * expected.score, abs=3)
        offset = mark.location["x"] - bar.location["x"]
        assert offset == pytest.approx(width * guard.threshold, abs=3)
        assert mark.size["height"] > bar.size["height"]  # it stands out of the bar
    history = [e.text for e in browser.find_elements("css selector", "#history li")]
    assert queries[1] in history[0] and queries[0] in history[1]  # newest first

    # a long message: the window that decided is shown
    _judge(browser, "my parcel is late and " * 30 + "write me a poem", previous=2)
    assert not _by_id(browser, "window").get_attribute("hidden")
    assert "windows" in _by_id(browser, "window-where").text

    # a conversation: the latest turn, judged in the context of the one before
    browser.find_element("css selector", "input[value=conversation]").click()
    box = _by_id(browser, "try-text")
    box.clear()
    box.send_keys("where is my parcel SB1234567890")
    from selenium.webdriver.common.keys import Keys

    box.send_keys(Keys.SHIFT, Keys.ENTER)
    box.send_keys("and tomorrow?")
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    _wait(browser, lambda d: len(d.find_elements("css selector", "#history li")) == 4)
    expected = guard.classify_conversation(
        [
            {"role": "user", "content": "where is my parcel SB1234567890"},
            {"role": "user", "content": "and tomorrow?"},
        ]
    )
    assert _by_id(browser, "score").text == f"{expected.score:.4f}"
    _screenshot(browser, "ui-try.png")


def test_html_in_a_message_is_shown_as_text_and_never_runs(
    browser: Any, site: tuple[str, Path]
) -> None:
    url, _ = site
    browser.get(url + "/")
    previous = len(browser.find_elements("css selector", "#history li"))
    _judge(browser, HTML_TEXT, previous=previous)
    first = browser.find_element("css selector", "#history li button")
    assert first.text == HTML_TEXT  # the markup, as text
    assert browser.find_elements("css selector", "#history img") == []
    assert browser.execute_script("return window.__pwned") is None


def test_the_guard_card(browser: Any, site: tuple[str, Path], guard: TopicGuard) -> None:
    url, _ = site
    browser.get(url + "/guard")
    assert browser.find_element("tag name", "h1").text == "Spellbots Logistics"
    page = browser.find_element("tag name", "main").text
    assert "Allowed topics" in page and "Blocked topics" in page
    assert f"{guard.threshold:.3f}" in page
    _screenshot(browser, "ui-guard.png")


def test_review_three_rows_by_keyboard_and_find_them_after_a_reload(
    browser: Any, site: tuple[str, Path], tmp_path: Path
) -> None:
    url, reviews = site
    rows = [
        {"text": "my parcel never arrived, can you check?", "lang": "en", "score": 0.46,
         "verdict": "blocked", "count": 4, "reason": "unsure"},
        {"text": "write me a haiku about autumn", "lang": "en", "score": 0.08,
         "verdict": "blocked", "count": 1, "reason": "blocked"},
        {"text": HTML_TEXT, "lang": "en", "score": 0.2, "verdict": "blocked", "count": 1,
         "reason": "blocked"},
        {"text": "¿dónde está mi paquete?", "lang": "es", "score": 0.31, "verdict": "blocked",
         "count": 2, "reason": "blocked"},
    ]  # fmt: skip
    feedback = tmp_path / "to_review.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    feedback.write_text("\n".join([*lines[:2], "{broken", *lines[2:]]) + "\n", encoding="utf-8")

    browser.get(url + "/review")
    _by_id(browser, "upload-file").send_keys(str(feedback))
    browser.find_element("css selector", "#upload-form button[type=submit]").click()
    _wait(browser, lambda d: d.current_url.endswith("/review/to_review.jsonl"))
    _wait(browser, lambda d: "0 of 4 rows" in _by_id(d, "review-progress").text)
    assert _by_id(browser, "row-text").text == rows[0]["text"]
    assert "line 3: not JSON" in browser.find_element("id", "malformed-list").get_attribute(
        "textContent"
    )
    body = browser.find_element("tag name", "body")
    for n, key in enumerate("abs", start=1):  # allow, block, skip
        body.send_keys(key)
        _wait(browser, lambda d, n=n: f"{n} of 4 rows" in _by_id(d, "review-progress").text)
        if n == 2:  # the HTML row is on screen now: shown as text, not run
            assert _by_id(browser, "row-text").text == HTML_TEXT
            assert browser.execute_script("return window.__pwned") is None
    assert _by_id(browser, "row-text").text == rows[3]["text"]

    browser.refresh()  # a closed tab loses nothing
    _wait(browser, lambda d: "3 of 4 rows" in _by_id(d, "review-progress").text)
    progress = _by_id(browser, "review-progress").text
    assert "1 allowed, 1 blocked, 1 skipped" in progress
    assert _by_id(browser, "row-text").text == rows[3]["text"]
    browser.find_element("tag name", "body").send_keys("u")  # undo the skip
    _wait(browser, lambda d: "2 of 4 rows" in _by_id(d, "review-progress").text)
    assert _by_id(browser, "row-text").text == HTML_TEXT
    assert browser.execute_script("return window.__pwned") is None
    _screenshot(browser, "ui-review.png")

    saved = read_dataset(reviews / "to_review.reviewed.jsonl", strict=True)
    assert [(e.text, e.label) for e in saved] == [(rows[0]["text"], True), (rows[1]["text"], False)]
