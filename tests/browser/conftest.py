"""Real-browser harness: a throwaway JupyterLab server driven by headless Chromium.

Widget code only proves itself when the real front end renders it: the JS widget manager, the
comm round trip, the DOM the user sees. Headless ``button.click()`` tests cannot catch a view
that never renders or an HTML value that runs a script, so the widget tests in this folder drive
JupyterLab 4 with Playwright. Recipes and timings: ``/work/shared/JUPYTER-CONVENTIONS.md`` section 5.

Fixtures:

- ``jupyter_server`` (session): one ``jupyter lab`` process on 127.0.0.1, free port, random token,
  fresh settings/workspace/config/runtime dirs, a kernelspec pinned to ``sys.executable``.
- ``browser`` (session): Playwright's Chromium API on Debian's ``/usr/lib/chromium/chromium``.
- ``open_notebook`` (function): ``open_notebook("x.ipynb")`` returns a :class:`NotebookPage`
  with an idle kernel; every page gets its own browser context and is closed after the test.
- ``write_notebook`` (function): writes code cells into the server's root dir with nbformat.

Every test collected here is marked ``browser`` and gets a timeout (``BROWSER_TEST_TIMEOUT``
seconds unless it sets its own), so ``pytest -m "not browser"`` skips the lot.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent.parent
ARTIFACTS_DIR = HERE / "artifacts"

CHROMIUM = os.environ.get("DNB_CHROMIUM", "/usr/lib/chromium/chromium")
# Playwright 1.65 already adds --headless --no-sandbox --disable-dev-shm-usage and a throwaway
# profile; these two remove GPU probing and QUIC attempts that only slow a sandbox down.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic"]

BROWSER_TEST_TIMEOUT = 180  # seconds per test (pytest-timeout), unless the test sets its own
SERVER_START_TIMEOUT = 60.0  # ready in ~3 s on the 2-core machine; generous for cold CI disks
KERNEL_IDLE_TIMEOUT_MS = 60_000  # first kernel start imports ipykernel + ipywidgets from cold
DEFAULT_TIMEOUT_MS = 30_000

KERNEL_NAME = "python3"  # shadow the default name so notebooks with stock metadata get our spec


# ----------------------------------------------------------------------------------------------
# markers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/browser as ``browser`` and give it a timeout.

    Done here so that a new test file cannot forget the marker (and thereby escape
    ``-m "not browser"``) or hang CI forever on a widget that never renders.
    """
    for item in items:
        if HERE not in Path(str(item.path)).resolve().parents:
            continue
        if item.get_closest_marker("browser") is None:
            item.add_marker(pytest.mark.browser)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(BROWSER_TEST_TIMEOUT))


# ----------------------------------------------------------------------------------------------
# server


def _free_port() -> int:
    """Ask the kernel for an unused port; with ``port_retries=0`` a lost race fails loudly."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


@dataclass
class JupyterServer:
    """A running ``jupyter lab`` and the throwaway directories it owns."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str
    root_dir: Path
    settings_dir: Path
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, **query: str) -> str:
        """Absolute URL for ``path`` with the token added (``reset=""`` gives a bare ``&reset``)."""
        parts = [f"token={self.token}"] + [f"{k}={v}" if v else k for k, v in query.items()]
        return f"{self.base_url}/{path.lstrip('/')}?{'&'.join(parts)}"

    def api(self, path: str, method: str = "GET") -> Any:
        """Call the REST API; used for readiness and to list kernels in tests."""
        req = urllib.request.Request(
            f"{self.base_url}/api/{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no server log: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def write_lab_setting(self, plugin: str, values: dict[str, Any]) -> None:
        """Write a user setting, e.g. ``("@jupyter-widgets/jupyterlab-manager:plugin", {"saveState": True})``.

        The server reads the settings dir per request, so this takes effect for pages opened
        afterwards. Settings are session-wide: a test that changes one should restore it.
        """
        package, _, name = plugin.partition(":")
        _write_json(self.settings_dir / package / f"{name}.jupyterlab-settings", values)


def _die_with_parent() -> None:
    """Runs in the server child before exec: SIGTERM it if pytest dies (Linux ``PR_SET_PDEATHSIG``).

    A SIGKILLed or crashed pytest never runs fixture teardown; without this the server and its
    kernels would be orphaned and hold ~200 MB until someone notices.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 == PR_SET_PDEATHSIG


def _install_kernelspec(jupyter_path: Path) -> None:
    """Pin the ``python3`` kernel to this interpreter.

    The venv's stock spec says ``"python"``, which jupyter_client swaps for the *server's*
    ``sys.executable``; a spec in ``~/.local/share/jupyter`` or a system dir could still shadow it.
    A spec under ``JUPYTER_PATH`` (searched first) makes the choice explicit. The smoke test
    asserts the kernel really runs ``sys.executable``.
    """
    _write_json(
        jupyter_path / "kernels" / KERNEL_NAME / "kernel.json",
        {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (durable_nb tests)",
            "language": "python",
            "metadata": {"debugger": False},
        },
    )


def _stop_process_tree(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the server (it shuts its kernels down), then SIGKILL whatever it left behind.

    Kernels run in their own sessions (jupyter_client uses ``start_new_session``), so killing
    the server's process group would miss them. We snapshot the server's descendants by pid
    before signalling and reap exactly those.
    """
    import psutil  # ipykernel depends on it, so it is present wherever a kernel can run

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """Start one JupyterLab for the whole session; ~3 s, so sharing it matters.

    Everything the server and its kernels read is isolated in temp dirs so the developer's
    own ``~/.jupyter`` config, workspaces or kernelspecs cannot change what the tests see.
    The project root goes on ``PYTHONPATH`` so kernels import this checkout of ``durable_nb``
    even when it is not pip-installed.
    """
    base = tmp_path_factory.mktemp("jupyter")
    root_dir = base / "root"
    settings_dir = base / "settings"
    jupyter_path = base / "jupyter_path"
    for d in (root_dir, settings_dir, jupyter_path):
        d.mkdir()
    # Without this the "Would you like to receive official Jupyter news?" toast covers the
    # bottom-right of the page and can intercept clicks.
    _write_json(
        settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    _install_kernelspec(jupyter_path)

    token = secrets.token_hex(24)
    port = _free_port()
    env = dict(os.environ)
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings_dir),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_PATH=str(jupyter_path),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        IPYTHONDIR=str(base / "ipython"),
        PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p),
    )
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--allow-root",  # CI and this machine run as root; without it lab exits at once
        f"--IdentityProvider.token={token}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        "--LabApp.expose_app_in_browser=True",  # gives us window.jupyterapp
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    log_path = base / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=root_dir,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    server = JupyterServer(proc, port, token, root_dir, settings_dir, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop_process_tree(proc)


def _wait_ready(server: JupyterServer) -> None:
    """Poll ``/api/status``; fail fast with the log tail if the process dies (e.g. no --allow-root)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        code = server.proc.poll()
        if code is not None:
            raise RuntimeError(
                f"jupyter lab exited with code {code} before it was ready. "
                f"Log tail ({server.log_path}):\n{server.log_tail()}"
            )
        try:
            server.api("status")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = exc
        time.sleep(0.2)
    raise RuntimeError(
        f"jupyter lab not ready after {SERVER_START_TIMEOUT:.0f} s (last error: {last_error!r}). "
        f"Log tail ({server.log_path}):\n{server.log_tail()}"
    )


# ----------------------------------------------------------------------------------------------
# notebooks on disk


@pytest.fixture
def write_notebook(jupyter_server: JupyterServer) -> Callable[..., str]:
    """Return ``write(name, *sources) -> name``: one code cell per source, stock python3 metadata.

    Cells are saved without outputs, so what the page shows is what this run produced.
    """
    import nbformat

    def write(name: str, *sources: str) -> str:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
        path = jupyter_server.root_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        return name

    return write


# ----------------------------------------------------------------------------------------------
# browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright; never ``playwright install`` (no CDN here).

    Module scope, not session: Playwright's sync API keeps an asyncio loop marked as
    running in the main thread while it is started, which would make every later test
    that calls ``asyncio.run`` fail.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium, or set DNB_CHROMIUM")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()


# The notebook panel the user is looking at, or null while the shell is still restoring.
_KERNEL_STATUS_JS = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return k ? k.status : null;
}"""

# True when the kernel is idle and no cell still shows the "[*]" running prompt.
_IDLE_JS = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  if (!k || k.status !== 'idle') return false;
  return ![...document.querySelectorAll('.jp-InputArea-prompt')].some(p => p.textContent.includes('*'));
}"""


@dataclass
class NotebookPage:
    """One notebook open in JupyterLab, plus everything the page said behind our back.

    ``dialogs`` records every ``alert``/``confirm``/``prompt`` (type, message) and dismisses it:
    a widget that renders user data must never produce one, and a test asserts ``dialogs == []``
    to prove no injected script ran. ``console_errors`` and ``page_errors`` (uncaught
    exceptions) are recorded, not asserted, because JupyterLab itself logs some errors.
    """

    page: Any
    name: str
    dialogs: list[tuple[str, str]] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append((dialog.type, dialog.message))
        dialog.dismiss()

    def kernel_status(self) -> str | None:
        return self.page.evaluate(_KERNEL_STATUS_JS)

    def wait_idle(self, timeout_ms: int = KERNEL_IDLE_TIMEOUT_MS) -> None:
        """Wait until the kernel is idle and no cell is queued or running."""
        self.page.wait_for_function(_IDLE_JS, timeout=timeout_ms, polling=100)

    def run_all(self, timeout_ms: int = KERNEL_IDLE_TIMEOUT_MS) -> None:
        """Run every cell and return when they have all finished.

        The command's promise resolves after execution, but we also wait for idle because
        comm messages (widget views) may still be in flight when it resolves.
        """
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self.wait_idle(timeout_ms)

    def execute(self, command: str, args: dict[str, Any] | None = None) -> Any:
        """Run any JupyterLab command, e.g. ``docmanager:save`` or ``kernelmenu:restart``."""
        return self.page.evaluate("([c, a]) => window.jupyterapp.commands.execute(c, a)", [command, args or {}])

    def widget_button(self, text: str) -> Any:
        """Locator of the one widget button (in an output area) whose label is exactly ``text``."""
        return self.page.locator(".jp-OutputArea-output button.jupyter-button").filter(
            has_text=re.compile(rf"^\s*{re.escape(text)}\s*$")
        )

    def click_button(self, text: str, wait: bool = True) -> None:
        """Click a widget button; strict, so two buttons with the same label fail the test."""
        self.widget_button(text).click()
        if wait:
            self.wait_idle()

    def output_text(self) -> str:
        """All text rendered in output areas (widgets included), for coarse assertions."""
        return "\n".join(self.page.locator(".jp-OutputArea-output").all_inner_texts())

    def screenshot(self, path: str | Path) -> Path:
        """Full-page screenshot; a relative path lands in tests/browser/artifacts/ (git-ignored)."""
        target = Path(path)
        if not target.is_absolute():
            target = ARTIFACTS_DIR / target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(target), full_page=True)
        return target


@pytest.fixture
def open_notebook(jupyter_server: JupyterServer, browser: Any) -> Iterator[Callable[[str], NotebookPage]]:
    """Return ``open(nb_path) -> NotebookPage`` with the kernel idle; closes pages and kernels after.

    Each call gets a fresh browser context (no shared storage between tests). ``&reset`` plus
    the fresh workspace dir stop JupyterLab from reopening tabs of earlier tests. Kernels
    outlive their page, so the ones started during the test are shut down through the API;
    otherwise every test would leave a ~60 MB kernel running on a 2-core machine.
    """
    contexts: list[Any] = []
    kernels_before = {k["id"] for k in jupyter_server.api("kernels")}

    def open_(nb_path: str, viewport: dict[str, int] | None = None) -> NotebookPage:
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(DEFAULT_TIMEOUT_MS)
        nb = NotebookPage(page, nb_path)
        page.on("dialog", nb._on_dialog)
        page.on("console", lambda m: nb.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: nb.page_errors.append(str(e)))
        page.goto(jupyter_server.url(f"lab/tree/{nb_path}", reset=""))
        nb.wait_idle()
        return nb

    yield open_

    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()
    for kernel in jupyter_server.api("kernels"):
        if kernel["id"] not in kernels_before:
            with contextlib.suppress(urllib.error.URLError):
                jupyter_server.api(f"kernels/{kernel['id']}", method="DELETE")
