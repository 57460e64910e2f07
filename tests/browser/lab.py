"""A JupyterLab server on localhost and a headless Debian Chromium driven by selenium.

Both are local processes with their own temporary homes: the server listens on 127.0.0.1 with a
token, never opens a browser and asks no news, update or extension server; Chromium gets the
flags that keep it off the network (it would otherwise try Google's hosts at every start), and
selenium uses the system chromedriver, so Selenium Manager never downloads a driver or browser.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = ("install Debian's browser with `apt-get install -y chromium chromium-driver` "
                "(.ci/run does) and the dev extra (`pip install -e '.[dev]'`, selenium)")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--disable-features=MediaRouter",
    "--window-size=1400,1600",
)


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (said in the skip), or None when they can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} not found: {INSTALL_HINT}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed: {INSTALL_HINT}"
    try:
        import jupyterlab  # noqa: F401
        import jupyterlab_widgets  # noqa: F401
    except ImportError:
        return "jupyterlab / ipywidgets are not installed (pip install -e '.[notebooks]')"
    return None


def free_port() -> int:
    """A port nothing listens on now (the server is told not to try others)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab: where it listens, its token and its log."""

    url: str
    token: str
    log: Path

    def open_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else "(no log)"


@contextlib.contextmanager
def jupyter_lab(root: Path, env: dict[str, str], state: Path,
                start_timeout: float = 90.0) -> Iterator[Lab]:
    """JupyterLab serving `root` with `env` (the kernels inherit it); Jupyter's own config,
    data and runtime folders live under `state`, so no user setting or kernel spec leaks in."""
    for sub in ("config", "data", "runtime", "ipython"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    # no "get notified about Jupyter news?" toast over what the screenshots show
    news = state / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True, exist_ok=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = free_port(), secrets.token_hex(16)
    env = {**env, "JUPYTER_CONFIG_DIR": str(state / "config"),
           "JUPYTER_DATA_DIR": str(state / "data"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "IPYTHONDIR": str(state / "ipython"), "JUPYTER_PLATFORM_DIRS": "1"}
    env.pop("JUPYTER_PATH", None)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    log = state / "jupyterlab.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, log)
    try:
        _wait_until_up(lab, proc, start_timeout)
        yield lab
    finally:
        _stop(proc)


def _wait_until_up(lab: Lab, proc: subprocess.Popen, timeout: float) -> None:
    """Poll /api/status until the server answers (a deadline so a broken start cannot hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{lab.log_tail()}")
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s:\n{lab.log_tail()}")


def _stop(proc: subprocess.Popen) -> None:
    """End the server and the kernels it started (its own session), politely first."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 9)  # a kernel the server could not shut down


@contextlib.contextmanager
def chromium(profile_dir: Path, log: Path) -> Iterator[Any]:
    """A selenium driver for headless Debian Chromium with a fresh, empty profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER), log_output=str(log))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


def screenshot_dir() -> Path:
    """runs/screenshots/ of the checkout (ignored by git): where a person looks afterwards."""
    path = Path(__file__).resolve().parents[2] / "runs" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
