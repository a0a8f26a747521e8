"""What a durable call returns or raises on replay in a *new process* (a kernel restart) is what it gave live.

Each test journals in one interpreter and replays in another, with a different
``PYTHONHASHSEED`` (as a restarted kernel has): what an in-process replay keeps
by accident (the same objects, the same hash order) is not there to hide a loss.
The probe prints what a user would look at; the test compares the two runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PRELUDE = '''
import sys, traceback
import durable_nb as dnb

store = dnb.SqliteStore(sys.argv[1])

def outcome(ctx, func):
    try:
        return "returned", ctx.durable_execute(func)
    except Exception as exc:
        return "raised", exc
'''


def twice(tmp_path: Path, body: str) -> tuple[list[str], list[str]]:
    """Run ``PRELUDE + body`` as a first run, then again (a replay) in a fresh interpreter; each one's lines."""
    script = tmp_path / "notebook.py"
    script.write_text(PRELUDE + body)
    journal = str(tmp_path / "journal.db")
    runs = []
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, str(script), journal], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.strip().splitlines())
    return runs[0], runs[1]


CHAINS = '''
calls = []

def wrapped():
    calls.append(1)
    try:
        {}["card"]
    except KeyError as exc:
        raise ValueError("payment failed") from exc

def during():
    calls.append(1)
    try:
        1 / 0
    except ZeroDivisionError:
        raise RuntimeError("cleanup failed")

def hidden():
    calls.append(1)
    try:
        1 / 0
    except ZeroDivisionError:
        raise RuntimeError("clean message") from None

with dnb.LocalRunner(store).context("chains") as ctx:
    for func in (wrapped, during, hidden):
        kind, exc = outcome(ctx, func)
        print(func.__name__, kind, repr(exc), repr(exc.__cause__), repr(exc.__context__), exc.__suppress_context__)
        text = "".join(traceback.format_exception(exc))
        print(func.__name__, "direct cause" in text, "During handling" in text, "KeyError: 'card'" in text)
print("calls", len(calls))
'''


def test_a_replayed_exception_keeps_its_cause_and_context(tmp_path: Path) -> None:
    # Was: __cause__, __context__ and __suppress_context__ were not journaled: after a restart
    # ``raise ValueError(...) from exc`` replayed without its cause, and the traceback lost the original error.
    first, replay = twice(tmp_path, CHAINS)
    assert first[-1] == "calls 3" and replay[-1] == "calls 0"
    assert replay[:-1] == first[:-1]
    assert first[0] == "wrapped raised ValueError('payment failed') KeyError('card') KeyError('card') True"
    assert first[1] == "wrapped True False True"


UNPICKLABLE_CAUSE = '''
import threading, warnings

class Locked(Exception):
    def __init__(self):
        super().__init__("locked")
        self.lock = threading.Lock()

def failing():
    try:
        raise Locked()
    except Locked as exc:
        raise ValueError("outer") from exc

def holding():
    try:
        failing()
    except ValueError as exc:
        return ["kept", exc]

warnings.simplefilter("error")
with dnb.LocalRunner(store).context("unpicklable") as ctx:
    kind, exc = outcome(ctx, failing)
    print(kind, type(exc).__name__, type(exc.__cause__).__name__, getattr(exc.__cause__, "lock", None) is None)
    kind, value = outcome(ctx, holding)
    print(kind, value[0], type(value[1]).__name__, type(value[1].__cause__).__name__)
print([c.status.value for c in store.calls("unpicklable")])
'''


def test_a_cause_that_cannot_be_pickled_is_left_out_not_the_exception(tmp_path: Path) -> None:
    first, replay = twice(tmp_path, UNPICKLABLE_CAUSE)
    assert first == ["raised ValueError Locked False", "returned kept ValueError Locked",
                     "['FAILED', 'SUCCEEDED']"]
    # The cause's class and args come back, its lock does not (as for the exception itself).
    assert replay == ["raised ValueError Locked True", "returned kept ValueError Locked",
                      "['FAILED', 'SUCCEEDED']"]


NAMES = '''
class Order:
    pass

def attribute():
    Order().amount

def name():
    undefined_helper  # noqa: F821

def missing_file():
    try:
        open("/nonexistent/dir/orders.json")
    except FileNotFoundError as exc:
        raise RuntimeError("no orders") from exc

with dnb.LocalRunner(store).context("names") as ctx:
    for func in (attribute, name, missing_file):
        kind, exc = outcome(ctx, func)
        cause = exc.__cause__
        print(func.__name__, kind, type(exc).__name__, getattr(exc, "name", None),
              cause and (type(cause).__name__, cause.errno, cause.filename))
'''


def test_attribute_and_name_errors_keep_the_name_and_os_errors_their_chain(tmp_path: Path) -> None:
    # Was: AttributeError.name and NameError.name came back None (pickle keeps only args); an OSError
    # (pickled by its own __reduce__) lost its place in a chain.
    first, replay = twice(tmp_path, NAMES)
    assert first == ["attribute raised AttributeError amount None", "name raised NameError undefined_helper None",
                     "missing_file raised RuntimeError None ('FileNotFoundError', 2, '/nonexistent/dir/orders.json')"]
    assert replay == first


VIEWS = '''
import array

def views():
    ints = memoryview(array.array("i", range(6))).cast("B").cast("i", [2, 3])
    return [memoryview(b"abcdef")[1:4], memoryview(bytearray(b"xyz")), ints]

with dnb.LocalRunner(store).context("views") as ctx:
    for view in outcome(ctx, views)[1]:
        print(type(view).__name__, view.format, view.shape, view.readonly, view.tolist())
'''


def test_a_memoryview_result_replays_as_a_memoryview(tmp_path: Path) -> None:
    # Was: cloudpickle journals a memoryview as bytes: the replay returned bytes (no .format, .tolist(), .cast()).
    first, replay = twice(tmp_path, VIEWS)
    assert first == ["memoryview B (3,) True [98, 99, 100]", "memoryview B (3,) False [120, 121, 122]",
                     "memoryview i (2, 3) False [[0, 1, 2], [3, 4, 5]]"]
    assert replay == first


LOCKED_WITH_CAUSE = '''
import threading

class Locked(Exception):
    def __init__(self, code):
        super().__init__(f"locked {code}")
        self.lock, self.code = threading.Lock(), code

def failing():
    try:
        {}["card"]
    except KeyError as exc:
        raise Locked(7) from exc

with dnb.LocalRunner(store).context("locked") as ctx:
    kind, exc = outcome(ctx, failing)
    print(kind, repr(exc), exc.code, repr(exc.__cause__), exc.__suppress_context__)
'''


def test_an_exception_kept_without_its_unpicklable_attributes_keeps_its_cause(tmp_path: Path) -> None:
    first, replay = twice(tmp_path, LOCKED_WITH_CAUSE)
    assert first == replay == ["raised Locked('locked 7') 7 KeyError('card') True"]


def test_a_failure_larger_than_the_store_holds_is_journaled_as_its_class_and_args() -> None:
    """A context holding a large object (now journaled with the exception) made a FAILED payload larger than
    ``max_payload``: a store cannot commit it (the call stayed PENDING, run again by a recovery). Its class and
    args are kept instead, so the replay takes the same ``except`` branch."""
    import durable_nb as dnb

    store = dnb.MemoryStore()
    store.max_payload = 20_000  # type: ignore[misc]

    class Big(Exception):
        pass

    def f() -> None:
        try:
            big = Big("big")
            big.blob = b"x" * 50_000  # type: ignore[attr-defined]
            raise big
        except Big:
            raise ValueError("the real error") from None

    def act(_: object, ctx: dnb.RunnerContext) -> str:
        try:
            ctx.durable_execute(f)
        except ValueError as exc:
            return str(exc)
        return "no error"

    runner = dnb.LocalRunner(store)
    assert runner.run(act, None, run_id="r") == "the real error"
    [call] = store.calls("r")
    assert call.status is dnb.Status.FAILED and len(call.payload or b"") <= 20_000
    assert runner.run(act, None, run_id="r") == "the real error"  # replayed: still a ValueError


SLOTTED = '''
class Declined(Exception):
    __slots__ = ("code",)

    def __init__(self, code):
        super().__init__("declined")
        self.code = code

    def __str__(self):
        return f"declined with code {self.code}"

def failing():
    raise Declined(51)

with dnb.LocalRunner(store).context("slots") as ctx:
    kind, exc = outcome(ctx, failing)
    print(kind, type(exc).__name__, repr(exc.code), str(exc))
'''


def test_a_replayed_exception_keeps_the_values_of_its_slots(tmp_path: Path) -> None:
    # Was: pickle's default keeps args and __dict__ only, so ``cls(*args)`` rebuilt the exception and
    # ``self.code`` (a slot) replayed as "declined", the message, instead of 51: wrong data, no error.
    first, replay = twice(tmp_path, SLOTTED)
    assert first == replay == ["raised Declined 51 declined with code 51"]
