"""The dashboard page of a real `fizz serve`, in a real headless Chromium (Debian's
chromium and chromium-driver, driven by selenium): it shows the real figures of the test
database and follows them within 5 s, filters the latest tasks, fits a phone's width, asks
for the token once, and says when the server is gone. Screenshots go to test-artifacts/
(FIZZ_TEST_ARTIFACTS).
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from serving import ServerProcess, finish

ARTIFACTS = Path(os.environ.get("FIZZ_TEST_ARTIFACTS") or
                 Path(__file__).parents[2] / "test-artifacts")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
# Flags known to work here (as root, on a closed network): no sandbox, no GPU, and nothing
# that phones home (refused connections otherwise slow every start).
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[test]')")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


def _find(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


BROWSER, DRIVER = _find(BROWSERS), _find(DRIVERS)
NO_BROWSER = ("no Chromium and ChromeDriver found: apt-get install -y chromium chromium-driver "
              "(.ci/run does)")
pytestmark = [
    pytest.mark.slow,
    # CI always has a browser (.ci/run installs it): there, a missing one fails the tests.
    pytest.mark.skipif((BROWSER is None or DRIVER is None) and not os.environ.get("CI"),
                       reason=NO_BROWSER),
]


# ---------------------------------------------------------------------------- the server


@dataclass
class Dashboard:
    base: str  # http://127.0.0.1:PORT/
    server: ServerProcess


@pytest.fixture
def dashboard(database: str) -> Iterator[Callable[..., Dashboard]]:
    servers: list[ServerProcess] = []

    def start(token: str | None = None) -> Dashboard:
        server = ServerProcess(database, *(["--token", token] if token else [])).wait_ready()
        servers.append(server)
        return Dashboard(server.base + "/", server)

    yield start
    finish([server for server in servers if server.proc.poll() is None])


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    if BROWSER is None or DRIVER is None:
        pytest.fail(NO_BROWSER)
    profile = tempfile.mkdtemp(prefix="fizz-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def text_of(driver: Any, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def wait_text(driver: Any, element_id: str, expected: str | Callable[[str], bool],
              timeout: float = 10) -> None:
    check = expected if callable(expected) else (lambda text: text == expected)
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.05).until(
            lambda d: check(text_of(d, element_id)))
    except TimeoutException:
        raise AssertionError(f"#{element_id} shows {text_of(driver, element_id)!r}, not "
                             f"{expected!r}, after {timeout} s") from None


def rows(driver: Any, body_id: str) -> list[list[str]]:
    """A table's cells, read in one go (the page redraws its tables every 2 s)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tr'), "
        "tr => Array.from(tr.cells, td => td.textContent))", body_id)


def errors_logged(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> Path:
    """The whole page, top to bottom, into the artifacts folder."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    width, height = driver.execute_script(
        "return [document.documentElement.clientWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO tasks (tasktype, status, time)
            SELECT (ARRAY['Fizz', 'Buzz', 'FizzBuzz'])[1 + g % 3], 'Waiting',
                   now() + g * interval '1 minute' FROM generate_series(1, 3) AS g""")
        conn.execute("""INSERT INTO tasks (tasktype, status, time, started_at, completed_at,
                                           worker)
            SELECT (ARRAY['Fizz', 'Buzz', 'FizzBuzz'])[1 + g % 3], 'Complete',
                   now() - interval '30 s' - (g % 40) * interval '0.1 ms',
                   now() - interval '30 s', now() - interval '27 s', 'web-1:77:abcdef'
            FROM generate_series(1, 40) AS g""")
        conn.execute("""INSERT INTO fizz_workers (id, host, pid, version, started_at, last_seen,
                        lease, concurrency, in_flight, ran)
                        VALUES ('web-1:77:abcdef', 'web-1', 77, '9.9', now() - interval '1 h',
                                now(), 3600, 100, 0, 40)""")


# ---------------------------------------------------------------------------- tests


def test_the_dashboard_shows_the_figures_and_follows_them(
        database: str, dashboard: Callable[..., Dashboard], browser: Any) -> None:
    seed(database)
    board = dashboard()
    browser.get(board.base)
    wait_text(browser, "waiting", "3")
    assert (text_of(browser, "claimed"), text_of(browser, "complete")) == ("0", "40")
    assert text_of(browser, "workers-alive") == "1"
    assert text_of(browser, "lat-n") == "40"
    assert text_of(browser, "lat-max") == "3.900 ms"
    assert text_of(browser, "next-due").startswith(text_of(browser, "next-due")[:4] + "-")
    assert "(in " in text_of(browser, "next-due")
    assert rows(browser, "workers-body")[0][:2] == ["web-1:77:abcdef", "9.9"]
    assert rows(browser, "by-type") == [["Fizz", "1", "0", "13"], ["Buzz", "1", "0", "14"],
                                        ["FizzBuzz", "1", "0", "13"]]
    latest = rows(browser, "tasks-body")
    assert [r[0] for r in latest[:3]] == ["43", "42", "41"] and len(latest) == 43

    # A task added now shows within 5 s (the page polls every 2 s).
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (tasktype, status, time) VALUES ('Buzz', 'Waiting', "
                     "now() - interval '1 minute')")
    added = time.monotonic()
    wait_text(browser, "waiting", "4", timeout=5)
    wait_text(browser, "overdue", "1", timeout=1)
    assert time.monotonic() - added < 5
    assert rows(browser, "tasks-body")[0][:3] == ["44", "Buzz", "Waiting"]

    # Filters ask the server for what they show.
    Select(browser.find_element(By.ID, "filter-type")).select_by_value("fizz")
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("complete")
    WebDriverWait(browser, 5).until(
        lambda d: {tuple(r[1:3]) for r in rows(d, "tasks-body")} == {("Fizz", "Complete")})
    assert len(rows(browser, "tasks-body")) == 13
    def asked() -> bool:  # the server writes its log in batches: give the line a moment
        return any("GET /tasks?" in line and "filters.type=fizz" in line
                   and "filters.status=complete" in line
                   for line in board.server.log().splitlines())
    deadline = time.monotonic() + 5
    while not asked():
        assert time.monotonic() < deadline, board.server.log()[-3000:]
        time.sleep(0.05)
    Select(browser.find_element(By.ID, "filter-type")).select_by_value("fizzbuzz")
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("claimed")
    wait_text(browser, "tasks-body", "No task matches.", timeout=5)
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("")
    Select(browser.find_element(By.ID, "filter-type")).select_by_value("")

    shot = screenshot(browser, "dashboard.png")
    assert shot.stat().st_size > 10_000
    assert errors_logged(browser) == []


def test_the_dashboard_fits_a_phone(database: str, dashboard: Callable[..., Dashboard],
                                    browser: Any) -> None:
    seed(database)
    board = dashboard()
    browser.set_window_size(390, 844)
    browser.get(board.base)
    wait_text(browser, "waiting", "3")
    # Nothing wider than the screen: the page never scrolls sideways (wide tables scroll
    # inside their own box).
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(browser, "dashboard-phone.png")


def test_the_dashboard_asks_for_the_token_once(
        database: str, dashboard: Callable[..., Dashboard], browser: Any) -> None:
    seed(database)
    board = dashboard(token="s3cret")
    browser.get(board.base)
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "token-form").is_displayed())
    assert not browser.find_element(By.ID, "board").is_displayed()
    field = browser.find_element(By.ID, "token-input")
    field.send_keys("wrong", Keys.ENTER)
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "token-error").is_displayed())
    assert "refused" in text_of(browser, "token-error")
    field = browser.find_element(By.ID, "token-input")
    field.send_keys("s3cret", Keys.ENTER)
    wait_text(browser, "waiting", "3")
    # Reloading does not ask again: the browser keeps the token.
    browser.refresh()
    wait_text(browser, "waiting", "3")
    assert not browser.find_element(By.ID, "token-form").is_displayed()
    # Forgetting it asks again.
    browser.find_element(By.ID, "sign-out").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "token-form").is_displayed())
    # 401s are expected here and the browser logs them; nothing else may fail.
    assert [e for e in errors_logged(browser) if "401" not in e] == []


def test_the_page_says_when_the_server_is_gone(
        database: str, dashboard: Callable[..., Dashboard], browser: Any) -> None:
    board = dashboard()
    browser.get(board.base)
    wait_text(browser, "waiting", "0")
    board.server.stop()
    wait_text(browser, "status", lambda text: text.startswith("cannot reach fizz"), timeout=10)
    assert text_of(browser, "waiting") == "0"  # the last figures stay
