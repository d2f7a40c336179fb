"""Headless Chromium (Debian's package, driven by Playwright), a real Flower, and screenshots of each step."""
import shutil
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.processes import free_port, process_start, subprocess_env, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# Nothing leaves this machine: no updates, sync, first-run pages or background requests.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-test-pass"


@pytest.fixture(scope="module")
def browser(django_db_setup) -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package.")
    # Playwright's sync API keeps an event loop in this thread while it runs, so Django takes the
    # tests' plain ORM calls for async ones; they are not. Module scope: other tests never see it.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        # Each launch starts from a new, empty user data directory.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, http_credentials={"username": FLOWER_USER, "password": FLOWER_PASSWORD}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot(page: Page, request) -> Callable[[str], Path]:
    """Save the page as artifacts/screenshots/<test>-<step>.png (a test artifact, not committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(step: str) -> Path:
        path = SCREENSHOTS / f"{request.node.name}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("operator", password="operator-pass-123")


@pytest.fixture
def sign_in(page: Page, live_server, operator) -> Callable[[], None]:
    def sign_in() -> None:
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("input[name=username]", "operator")
        page.fill("input[name=password]", "operator-pass-123")
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_url(f"{live_server.url}/jobs/")

    return sign_in


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def flower(tmp_path, settings) -> Iterator[str]:
    """A real Flower on a free port, with basic auth and a persistent state file; its URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "celery", "-A", "config", "flower", "--address=127.0.0.1", f"--port={port}",
        "--persistent=True", f"--db={tmp_path / 'flower.db'}",
    ]
    process = process_start("flower", command, subprocess_env(FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/healthcheck") or process.popen.poll() is not None, timeout=30,
                   what="Flower to start")
        assert process.popen.poll() is None, f"Flower exited at start:\n{process.output()[-3000:]}"
        settings.CONVEYOR_FLOWER_URL = url
        yield url
    finally:
        process.stop()
