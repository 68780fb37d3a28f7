"""Open a page in headless Chromium and report what a user would see, over the DevTools protocol.

The protocol runs over --remote-debugging-pipe (NUL-separated JSON on file descriptors 3 and 4), so no
websocket client is needed. Collected: console errors/warnings, uncaught exceptions, browser log errors
(e.g. a resource that failed to load), every network request that is not a data: or file: URL, the state
of every <img> and <audio> element, and whether the first audio element plays.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")

PAGE_STATE = """(() => ({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                                  height: i.naturalHeight})),
  audio: Array.from(document.querySelectorAll('audio')).map(a => ({readyState: a.readyState, duration: a.duration,
                                                                   error: a.error && a.error.code})),
  tables: document.querySelectorAll('table').length,
  overflowing_tables: Array.from(document.querySelectorAll('table'))
    .filter(t => t.getBoundingClientRect().right > document.documentElement.clientWidth + 1
                 || t.scrollWidth > t.parentElement.clientWidth + 1)
    .map(t => Array.from(t.querySelectorAll('th')).map(h => h.innerText).join(' | ')),
  page_overflows: document.documentElement.scrollWidth > document.documentElement.clientWidth + 1,
  text: document.body.innerText,
}))()"""

PLAY_FIRST_AUDIO = """(async () => {
  const a = document.querySelector('audio');
  if (!a) return {played: false, reason: 'no audio element'};
  a.muted = true;
  try { await a.play(); } catch (e) { return {played: false, reason: String(e)}; }
  const start = performance.now();
  while (a.currentTime === 0 && performance.now() - start < 5000) await new Promise(r => setTimeout(r, 50));
  const t = a.currentTime; a.pause();
  return {played: t > 0, currentTime: t, duration: a.duration, error: a.error && a.error.code};
})()"""


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class _Pipe:
    def __init__(self, binary: str, profile: str) -> None:
        self._to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, self._from_chrome_w = os.pipe()

        def child_fds() -> None:  # chrome reads commands on fd 3 and writes replies on fd 4
            os.dup2(self._to_chrome_r, 3)
            os.dup2(self._from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--autoplay-policy=no-user-gesture-required",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=child_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # its own process group: close() ends the renderer and helpers too
        os.close(self._to_chrome_r)
        os.close(self._from_chrome_w)
        self._buffer, self._next_id, self.events = b"", 0, []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome_r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_chrome_r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method:
                return event
            self.events.append(event)

    def close(self) -> None:
        """Ask the browser to quit, then end its whole process group and wait until no member of it is alive:
        killing only the main process left helper processes writing into the profile folder while it was
        removed (CI: "Directory not empty: 'Default'")."""
        try:
            self.call("Browser.close", timeout=5.0)
            self.proc.wait(timeout=10.0)
        except Exception:  # no reply, a broken pipe, or still running
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group keeps the leader's id while a member lives
        except ProcessLookupError:
            pass
        self.proc.wait()
        deadline = time.monotonic() + 10.0
        while _live_group_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.close(self._to_chrome_w)
        os.close(self._from_chrome_r)


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that still run (Linux /proc; zombies, which write nothing, are not counted)."""
    live = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                state, _, pgrp = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if int(pgrp) == pgid and state != "Z":
                live.append(int(entry.name))
    return live


def inspect_page(path: str | Path, binary: str, timeout: float = 60.0, width: int | None = None) -> dict:
    """Load file `path`, wait for the load event, then report the page state and play the first audio.
    width: the viewport's CSS width in pixels (e.g. 1280, a common laptop screen), else Chromium's default;
    overflowing_tables lists the tables wider than the page or their box (their headings)."""
    with tempfile.TemporaryDirectory() as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page", "Network"):
                pipe.call(f"{domain}.enable", session=session)
            if width:
                pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                                  "mobile": False}, session=session)
            pipe.call("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired", timeout)
            state = pipe.call("Runtime.evaluate", {"expression": PAGE_STATE, "returnByValue": True},
                              session=session)["result"]["value"]
            play = pipe.call("Runtime.evaluate", {"expression": PLAY_FIRST_AUDIO, "returnByValue": True,
                                                  "awaitPromise": True}, session=session, timeout=timeout)["result"]["value"]
            events = pipe.events
        finally:
            pipe.close()
    console = [e["params"] for e in events if e.get("method") == "Runtime.consoleAPICalled"
               and e["params"]["type"] in ("error", "warning", "assert")]
    exceptions = [e["params"]["exceptionDetails"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
    log_errors = [e["params"]["entry"] for e in events if e.get("method") == "Log.entryAdded"
                  and e["params"]["entry"]["level"] in ("error", "warning")]
    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    external = [u for u in requests if not u.startswith(("data:", "file:", "about:"))]
    return {**state, "play": play, "console_errors": console, "exceptions": exceptions, "log_errors": log_errors,
            "external_requests": external}
