"""Headless Chromium driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: commands
in on the browser's file descriptor 3, answers out on 4, each a JSON message ended by a NUL byte), so that a
test can load a page, pick files in its inputs, click, read the DOM and take a screenshot with nothing but
the Debian ``chromium`` package: no npm, no websocket library, no driver binary.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

from PIL import Image

#: The flags a headless run needs on a build machine (no sandbox as root, no GPU, no network chatter).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """The Chromium binary (``$SSPL_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the PATH)."""
    return os.environ.get("SSPL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless browser with one page (a context manager; closing it ends the browser)."""

    def __init__(
        self, binary: str, profile: Path, *, width: int = 1320, height: int = 1600, timeout: float = 60
    ) -> None:
        """Start Chromium with a fresh profile in the folder ``profile`` (left for the caller to remove)."""
        self.timeout = timeout
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # bash puts the pipe ends on the descriptors 3 and 4 that --remote-debugging-pipe uses.
        command = ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", binary, *FLAGS]
        command += [f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(
            command,
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.page(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    # -- the protocol -------------------------------------------------------------------------------

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and return its result (events that arrive meanwhile are kept in ``events``)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer in {self.timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                raise RuntimeError(f"Chromium closed its pipe (exit {self.proc.poll()}): {err[-2000:]}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def page(self, method: str, **params) -> dict:
        """A command to the page."""
        return self.send(method, self.session, **params)

    # -- what a test does with a page ---------------------------------------------------------------

    def open(self, url: str) -> None:
        self.page("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-able values)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None):
        """Poll until ``expression`` is truthy; its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not (value := self.js(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout or self.timeout} s: {expression}")
            time.sleep(0.1)
        return value

    def choose_files(self, selector: str, *paths: Path) -> None:
        """Pick files in an ``<input type=file>`` as a user would (its change event fires)."""
        handle = self.page("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        object_id = handle["result"]["objectId"]
        self.page("DOM.setFileInputFiles", files=[str(p) for p in paths], objectId=object_id)

    def screenshot(self) -> Image.Image:
        data = self.page("Page.captureScreenshot", format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def rect(self, selector: str) -> tuple[int, int, int, int]:
        """An element's box in the screenshot, ``(left, top, right, bottom)`` in pixels."""
        box = self.js(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.left, r.top, r.right, r.bottom]; })()"
        )
        return tuple(round(v) for v in box)
