"""A child Python SIGKILLed while a side effect is in flight: shared by the Flink Agents kill tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


def run_and_kill_when_held(code: str, held: Path, what: str) -> None:
    """Run ``code`` in a child Python, SIGKILL it once it created ``held`` (a side effect in flight).

    ``what`` names the side effect in the failure when the child never reaches it.
    """
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not held.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, f"the child never reached {what}"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
