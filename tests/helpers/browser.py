"""A real headless Chromium for the report tests, and a reader of a page's images."""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


class Images(HTMLParser):
    """Every <img>'s attributes, and whether the page has a script or loads anything."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if key in a and not a[key].startswith(("data:", "#")):
                self.external.append(a[key])


def page_images(html: str) -> Images:
    parser = Images()
    parser.feed(html)
    return parser


PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    const r = img.getBoundingClientRect();
    img.dataset.loaded = String(img.complete && img.naturalWidth > 0);
    img.dataset.rect = [r.left, r.top, r.width, r.height].map(Math.round).join(",");
  }
});
</script>
</body>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
        *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1200,3000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    cmd = [str(CHROMIUM), *flags, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)
