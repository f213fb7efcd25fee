"""The console in a real headless Chromium (Playwright driving /usr/bin/chromium), beside a
real gateway on the same database: a reviewer blocks the distiller's case and the running
gateway refuses its key; the block is undone; the trail shows both; a viewer is refused."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from stillroom.console.app import create_console_app
from stillroom.serve.accounts import get_account
from stillroom.serve.app import create_app
from stillroom.serve.backends import UpstreamBackend
from stillroom.serve.db import open_db
from stillroom.serve.gateway import KEY_CACHE_S, ServeSettings
from tests.console.conftest import reviewer
from tests.helpers.browser import CHROMIUM
from tests.helpers.serve import running

pytestmark = pytest.mark.integration
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def servers(engine: Engine) -> Iterator[tuple[str, str]]:
    """The console and a gateway on the same database file, each on its own port. The
    gateway's model is never reached: a blocked key is refused before any model runs, and
    /v1/models answers a live key without one."""
    gateway_engine = open_db(str(engine.url.database))
    backend = UpstreamBackend("http://127.0.0.1:9/v1", api_key=None, model="unused")
    gateway = create_app(gateway_engine, backend, ServeSettings())
    with running(create_console_app(engine)) as console, running(gateway) as api:
        yield console.removesuffix("/v1"), api
    gateway_engine.dispose()


def until(status: int, api: str, key: str, limit_s: float) -> float:
    """Seconds until the gateway answers `key` with `status` (asking as fast as it answers)."""
    start = time.perf_counter()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(timeout=5) as client:
        while True:
            got = client.get(f"{api}/models", headers=headers).status_code
            elapsed = time.perf_counter() - start
            if got == status:
                return elapsed
            assert elapsed < limit_s, f"still {got} after {elapsed:.2f} s, not {status}"


class Asking:
    """A client asking the gateway with one key without pause, in a thread: (time, status)."""

    def __init__(self, api: str, key: str) -> None:
        self.api, self.key = api, key
        self.seen: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._ask, daemon=True)

    def _ask(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                status = client.get(f"{self.api}/models", headers=headers).status_code
                self.seen.append((time.time(), status))  # wall clock, as blocked_at is

    def first(self, status: int, after: float, wait_s: float = 3.0) -> float:
        """When `status` was first answered after `after` (waiting for it up to `wait_s`)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            found = [t for t, s in list(self.seen) if s == status and t > after]
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no {status} within {wait_s} s; last: {self.seen[-3:]}")

    def __enter__(self) -> Asking:
        self.thread.start()
        time.sleep(0.3)
        assert self.seen and all(s == 200 for _, s in self.seen), self.seen[-3:]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def painted(png: bytes) -> float:
    """The share of an image's pixels that are not background white."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    pixels = list(img.getdata())
    return sum(1 for p in pixels if sum(p) < 720) / len(pixels)


def log_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_block_in_the_browser_stops_the_key_at_the_gateway(
    engine: Engine, built: dict[str, Any], servers: tuple[str, str], browser: Any
) -> None:
    base, api = servers
    distiller = next(f for f in built["result"].flagged if f["unit"] in built["keys"])
    key = built["keys"][distiller["unit"]]
    assert until(200, api, key, 2.0) < 2.0  # the key works, and the gateway has it cached
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    log_in(page, base, reviewer(engine, "reviewer", "rita"))
    page.click(f"#cases a:text-is('{distiller['unit']}')")
    page.wait_for_load_state("load")
    case_url = page.url
    assert distiller["evidence"][0] in page.inner_text("#evidence")
    for img in ("#features-img", "#timeline-img"):
        assert page.eval_on_selector(img, "i => i.complete && i.naturalWidth > 400")
        assert painted(page.locator(img).screenshot()) > 0.03, f"{img} looks blank"

    page.select_option("#block-form select[name=policy]", "model-extraction")
    page.fill("#block-form textarea[name=reason]", "harvests answers to its own prompts")
    # The distiller keeps asking while the reviewer blocks: the gateway's key cache is
    # always fresh, the worst case for how soon a block made elsewhere takes effect.
    with Asking(api, key) as asking:
        page.click("#block-form button")
        page.wait_for_url(case_url)
        assert page.inner_text("#status") == "blocked"
        made = get_account(engine, distiller["unit"]).blocked_at  # set as the block commits
        assert made is not None
        refused = asking.first(403, after=made) - made
    print(f"gateway refused the blocked key {refused:.3f} s after the block")
    assert refused <= KEY_CACHE_S + 0.05, f"403 after {refused:.2f} s"
    chat = httpx.post(
        f"{api}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "unused", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 403 and chat.json()["error"]["code"] == "account_blocked"
    said = chat.json()["error"]["message"]  # the client hears the policy, not the reviewer
    assert "model-extraction" in said and "rita" not in said and "own prompts" not in said

    page.fill("#unblock-form textarea[name=reason]", "the block was a drill")
    page.click("#unblock-form button")
    page.wait_for_url(case_url)
    assert until(200, api, key, 3.0) <= KEY_CACHE_S + 0.05
    trail = page.inner_text("#case-trail")
    assert "block" in trail and "unblock" in trail and "rita (reviewer)" in trail
    assert page.locator("#case-trail tr.trail-block").count() == 1
    assert page.locator("#case-trail tr.trail-unblock").count() == 1
    assert "harvests answers to its own prompts" in trail and "the block was a drill" in trail
    page.screenshot(path=str(engine.url.database) + ".case.png", full_page=True)

    viewer = browser.new_context().new_page()
    log_in(viewer, base, reviewer(engine, "viewer", "vic"))
    viewer.goto(case_url)
    assert viewer.locator("#block-form").count() == 0
    # The page offers a viewer no block form: send one anyway, with the viewer's own
    # session and CSRF token, as a hand-made form in the viewer's page would.
    with viewer.expect_response(lambda r: r.request.method == "POST") as attempt:
        viewer.evaluate(
            """(path) => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = path + "/block";
                const fields = {csrf: document.querySelector("input[name=csrf]").value,
                                reason: "let me", policy: "model-extraction"};
                for (const [name, value] of Object.entries(fields)) {
                    const input = document.createElement("input");
                    input.name = name;
                    input.value = value;
                    form.appendChild(input);
                }
                document.body.appendChild(form);
                form.submit();
            }""",
            case_url.removeprefix(base),
        )
    viewer.wait_for_load_state("load")
    answer = (attempt.value.status, viewer.inner_text("#error"))
    assert answer[0] == 403 and "viewer" in answer[1]
    assert until(200, api, key, 1.0) < 1.0  # still served: the viewer's block did nothing
