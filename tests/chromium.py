"""Headless Chromium driven over the DevTools protocol, for the browser test of the HTML report.

A small client instead of a browser-automation framework: start Debian's /usr/bin/chromium with
--remote-debugging-port=0, read the port it chose from its stderr, and talk to the page's websocket
(aiohttp, already installed with ray[default]). Nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import requests

CHROMIUM = os.environ.get("SCALESWEEP_CHROMIUM", "/usr/bin/chromium")
# Offline and quiet: no sandbox (CI runs as root), no GPU, no background or first-run traffic.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


@dataclass
class PageReport:
    """What a loaded page showed: console errors, non-local requests, plots and a full-page PNG."""

    console_errors: list[str] = field(default_factory=list)
    remote_requests: list[str] = field(default_factory=list)
    plots: list[dict] = field(default_factory=list)
    screenshot_png: bytes = b""


class Chromium:
    """A headless Chromium process with a fresh profile; use as a context manager."""

    def __init__(self, binary: str = CHROMIUM):
        if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
            raise FileNotFoundError(
                f"no Chromium at {binary}: install Debian's package (`make browser`, i.e. "
                "apt-get install -y --no-install-recommends chromium) or set SCALESWEEP_CHROMIUM"
            )
        self.binary = binary
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    def __enter__(self) -> Chromium:
        command = [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.time() + 60
        for line in self.process.stderr:
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if found:
                self.port = int(found.group(1))
                break
            if time.time() > deadline:
                break
        if self.port is None:
            self.__exit__()
            raise RuntimeError(f"Chromium did not announce its DevTools port (exit code {self.process.poll()})")
        # Keep draining stderr so Chromium never blocks on a full pipe.
        threading.Thread(target=lambda stream: [None for _ in stream], args=(self.process.stderr,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        shutil.rmtree(self.profile, ignore_errors=True)

    def page_websocket(self) -> str:
        targets = requests.get(f"http://127.0.0.1:{self.port}/json/list", timeout=10).json()
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def inspect(self, url: str, expected_plots: int, timeout_s: float = 60, width: int = 1280) -> PageReport:
        return asyncio.run(inspect_page(self.page_websocket(), url, expected_plots, timeout_s, width))


class DevTools:
    """One websocket session: commands by id, every other message kept as an event."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        call_id = self.next_id
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive(timeout=60)).data)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


# Each plotly graph div: how many traces it holds, what it drew, and where it sits on the page.
PLOTS_JS = """
JSON.stringify([...document.querySelectorAll('.js-plotly-plot')].map(gd => {
  const r = gd.getBoundingClientRect();
  return {
    traces: gd.data.length,
    rendered: gd._fullData ? gd._fullData.length : 0,
    title: (gd.layout.title && gd.layout.title.text) || '',
    svg: gd.querySelectorAll('.main-svg').length,
    x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height,
  };
}))
"""


async def inspect_page(ws_url: str, url: str, expected_plots: int, timeout_s: float, width: int) -> PageReport:
    report = PageReport()
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        tools = DevTools(ws)
        for domain in ("Page", "Runtime", "Log", "Network"):
            await tools.call(f"{domain}.enable")
        await tools.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
        await tools.call("Page.navigate", url=url)
        deadline = time.time() + timeout_s
        while True:
            ready = await tools.evaluate("document.readyState")
            plots = json.loads(await tools.evaluate(PLOTS_JS) or "[]")
            if ready == "complete" and len(plots) >= expected_plots and all(p["rendered"] for p in plots):
                break
            if time.time() > deadline:
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(0.5)  # let the last frame paint
        report.plots = json.loads(await tools.evaluate(PLOTS_JS) or "[]")
        metrics = await tools.call("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = await tools.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        report.screenshot_png = base64.b64decode(shot["data"])
        for event in tools.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                report.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                report.console_errors.append(details.get("exception", {}).get("description", details.get("text", "")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                report.console_errors.append(params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                request_url = params.get("request", {}).get("url", "")
                if not request_url.startswith(("file:", "data:", "about:", "blob:")):
                    report.remote_requests.append(request_url)
    return report
