"""PostgresStore under what a shared server does to its clients: sessions it ends, statements it cancels,
restarts and lost connections in the middle of a write, and a user who retries the call the error named.

Every server is real (tests/postgres_server.py); a connection lost after the server committed is made by a
small TCP proxy that drops the server's answer.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import durable_nb as dnb

pytestmark = pytest.mark.timeout(120)


def sql(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def dbname(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def retried(ctx: dnb.RunnerContext, func: Any, i: int) -> Any:
    """What a user who reads "the next call reconnects" writes: the same call again."""
    for _ in range(50):
        try:
            return ctx.durable_execute(func, i, reconciler=lambda: i * 10)
        except dnb.JournalUnavailableError:
            time.sleep(0.2)
    raise AssertionError("the call never went through")


def restart_later(pg_server: Any, mode: str = "fast") -> threading.Event:
    """Stop the server now and start it again from another thread: set when it accepts connections again.

    A restart that is over when the call returns is no fault any more: the store's lease watcher saw the
    sessions end and the next statement goes out on a new one. A call that ends while the server is still
    down cannot write its outcome.
    """
    back = threading.Event()
    pg_server.stop(mode)
    threading.Thread(target=lambda: (time.sleep(0.3), pg_server.start(), back.set()), daemon=True).start()
    return back


class DropAnswer:
    """A TCP proxy to the server; ``drop = True`` ends the connection when the server's next answer comes,
    without passing it on: the statement ran (and committed), the client only sees a lost connection."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.drop = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if answers and self.drop:
                    self.drop = False
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_a_database_that_ends_idle_sessions_ends_neither_a_runs_calls_nor_its_lock(pg_dsn):
    """idle_session_timeout (set by many managed servers) ended the store's sessions while a call ran:
    the next call failed as if the server had restarted, and the run's lock was free meanwhile."""
    sql(pg_dsn, f"ALTER DATABASE \"{dbname(pg_dsn)}\" SET idle_session_timeout = '300ms'")
    seen: list[str] = []

    def slow(i: int) -> int:
        time.sleep(0.8)  # longer than the server lets a session idle
        try:
            dnb.LocalRunner(dnb.PostgresStore(pg_dsn)).run(lambda _, ctx: ctx.durable_execute(pow, 2, 1), run_id="r")
            seen.append("taken")
        except dnb.RunBusyError:
            seen.append("busy")
        return i

    runner = dnb.LocalRunner(dnb.PostgresStore(pg_dsn))
    assert runner.run(lambda _, ctx: [ctx.durable_execute(slow, i) for i in range(2)], None, run_id="r") == [0, 1]
    assert seen == ["busy", "busy"]


def test_a_statement_cancelled_by_statement_timeout_says_so_not_that_the_connection_was_lost(pg_dsn):
    sql(pg_dsn, f"ALTER DATABASE \"{dbname(pg_dsn)}\" SET statement_timeout = '300ms'")
    runner = dnb.LocalRunner(dnb.PostgresStore(pg_dsn))
    runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 1), None, run_id="a")  # the tables exist
    with psycopg.connect(pg_dsn) as admin:  # another session holds the journal's table for a while
        admin.execute("SET statement_timeout = 0")
        admin.execute("LOCK TABLE calls IN EXCLUSIVE MODE")
        with pytest.raises(dnb.JournalUnavailableError) as err:
            runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 2), None, run_id="b")
    text = str(err.value)
    assert "statement_timeout" in text and 'ALTER ROLE "postgres" SET statement_timeout = 0' in text
    assert "connection was lost" not in text
    assert runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 2), None, run_id="b") == 4


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_retrying_a_call_whose_outcome_a_restart_kept_from_the_journal_reconciles_it_not_runs_it_again(
    pg_server, pg_dsn, mode
):
    """Under "transition" the outcome of call 1 cannot be written (the server restarted while it ran). The
    retry ran the function a second time as call 2, and every later call moved down one index (a recovery
    then discarded them and ran them again)."""
    store = dnb.PostgresStore(pg_dsn, durability="transition")
    executed: list[int] = []

    def step(i: int) -> int:
        executed.append(i)
        if i == 1 and executed.count(1) == 1:
            restart_later(pg_server, mode)
        return i * 10

    action = lambda _, ctx: [retried(ctx, step, i) for i in range(3)]  # noqa: E731
    assert dnb.LocalRunner(store).run(action, None, run_id="r") == [0, 10, 20]
    assert executed == [0, 1, 2]
    calls = dnb.PostgresStore(pg_dsn).calls("r")
    assert [(c.index, c.result(), c.origin) for c in calls] == [
        (0, 0, dnb.Origin.EXECUTED), (1, 10, dnb.Origin.RECONCILED), (2, 20, dnb.Origin.EXECUTED)]
    assert dnb.LocalRunner(dnb.PostgresStore(pg_dsn)).run(action, None, run_id="r") == [0, 10, 20]
    assert executed == [0, 1, 2] and dnb.PostgresStore(pg_dsn).discarded("r") == []


@pytest.mark.parametrize("durability", ["call", "transition"])
@pytest.mark.parametrize("lost", [0, 1])
def test_a_pending_committed_before_its_connection_was_lost_does_not_refuse_the_retry(pg_server, pg_dsn,
                                                                                      durability, lost):
    """The server committed call ``lost``'s PENDING (call 0: with the run's claim), the answer never came.
    The retry was refused with psycopg's UniqueViolation on every try (call 0: LeaseLostError, "another
    context wrote to the run"), though no other context had."""
    proxy = DropAnswer(pg_server.port)
    store = dnb.PostgresStore(pg_dsn.replace(f":{pg_server.port}/", f":{proxy.port}/"), durability=durability)
    executed: list[int] = []

    def step(i: int) -> int:
        executed.append(i)
        return i * 10

    def action(_: Any, ctx: dnb.RunnerContext) -> list[int]:
        out = []
        for i in range(3):
            proxy.drop = i == lost
            out.append(retried(ctx, step, i))
        return out

    assert dnb.LocalRunner(store).run(action, None, run_id="r") == [0, 10, 20]
    assert executed == [0, 1, 2]
    calls = dnb.PostgresStore(pg_dsn).calls("r")
    assert [(c.index, c.result(), c.origin) for c in calls] == [(i, i * 10, dnb.Origin.EXECUTED) for i in range(3)]
    assert dnb.PostgresStore(pg_dsn).run("r").status is dnb.RunStatus.COMPLETED


@pytest.mark.parametrize("sslmode", ["prefer", "disable"])
def test_a_port_where_something_else_than_postgresql_answers_is_named_not_called_a_malformed_dsn(sslmode):
    """An HTTP server on the DSN's port made libpq say "received invalid response to SSL negotiation", and
    the hint, matching "invalid", told the user to fix the syntax of a DSN that was well formed."""
    def answer(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    listener = _fake_server(answer)
    port = listener.getsockname()[1]
    text = _refusal_at(listener, f"?sslmode={sslmode}")
    assert f"not PostgreSQL answers at 127.0.0.1:{port}" in text and "malformed" not in text


def test_an_action_that_logs_a_calls_lost_outcome_and_moves_on_leaves_it_for_the_recovery(pg_server, pg_dsn):
    """The next call is another one (the action logs the failure and goes on to the next order): it goes after
    the call whose outcome the restart kept from the journal, which stays PENDING, and a recovery reconciles it
    once; the call after it replays. (Treating any next call as that call's retry discarded it, so the
    recovery sent the first order again and executed the second again.)"""
    store = dnb.PostgresStore(pg_dsn, durability="transition")
    sent: list[int] = []

    back: list[threading.Event] = []

    def send(i: int) -> int:
        sent.append(i)
        if i == 1 and sent.count(1) == 1:
            back.append(restart_later(pg_server))
        return i * 10

    def action(_: Any, ctx: dnb.RunnerContext) -> list[Any]:
        out: list[Any] = []
        for i in range(3):
            try:
                out.append(ctx.durable_execute(send, i, reconciler=lambda i=i: i * 10))
            except dnb.JournalUnavailableError:
                out.append("later")
                assert back[0].wait(60)
        return out

    assert dnb.LocalRunner(store).run(action, None, run_id="r") == [0, "later", 20]
    calls = dnb.PostgresStore(pg_dsn).calls("r")
    assert [(c.index, c.call_id.rsplit(".", 1)[-1], c.status) for c in calls] == [
        (0, "send", dnb.Status.SUCCEEDED), (1, "send", dnb.Status.PENDING), (2, "send", dnb.Status.SUCCEEDED)]
    assert dnb.LocalRunner(dnb.PostgresStore(pg_dsn)).run(action, None, run_id="r") == [0, 10, 20]
    assert sent == [0, 1, 2] and dnb.PostgresStore(pg_dsn).discarded("r") == []


@pytest.mark.parametrize("host", ["db.invalid", "missing-host.example.invalid"])
def test_a_host_whose_name_holds_a_word_the_hints_look_for_is_not_called_a_malformed_dsn(host):
    """libpq quotes the host ('could not translate host name "db.invalid"'): the hint matched 'invalid' in it."""
    with pytest.raises(dnb.JournalUnavailableError) as err:
        dnb.PostgresStore(f"postgresql://u@{host}:5432/journal")
    text = str(err.value)
    assert "malformed" not in text
    assert f"reachable at {host}:5432" in text


# ---------------------------------------------------------------- a live holder whose lock the server dropped

LIVE_HOLDER = """
import os, sys, time
import durable_nb as dnb
dsn, run_id, release, effects = sys.argv[1:5]

@dnb.durable(name="charge")
def charge(i):
    with open(effects, "a") as f:
        f.write(f"A:{i}\\n")
    if i == 1:  # a long call: its lock is lost while it runs
        print("inside", flush=True)
        while not os.path.exists(release):
            time.sleep(0.01)
    return i

try:
    dnb.LocalRunner(dnb.PostgresStore(dsn)).run(lambda _, ctx: [ctx.durable_execute(charge, i) for i in range(3)],
                                                None, run_id=run_id)
    print("done", flush=True)
except dnb.DurableError as exc:
    print(type(exc).__name__, exc, flush=True)
"""


def refused_while_held(dsn: str, holder: Any, effects: Path, release: Path, calls: int) -> None:
    """A second process running the held run ``order`` is refused; released, the holder finishes it, each call once."""

    @dnb.durable(name="charge")
    def charge(i: int) -> int:
        with effects.open("a") as f:
            f.write(f"B:{i}\n")
        return i

    with pytest.raises(dnb.RunBusyError, match="order"):
        dnb.LocalRunner(dnb.PostgresStore(dsn)).run(
            lambda _, ctx: [ctx.durable_execute(charge, i) for i in range(calls)], None, run_id="order")
    release.touch()
    out, err = holder.communicate(timeout=60)
    assert out.splitlines()[-1] == "done", out + err
    assert effects.read_text().split() == [f"A:{i}" for i in range(calls)]


@pytest.mark.parametrize("how", ["terminate its lease session", "restart the server"])
def test_a_run_whose_live_holder_lost_its_lock_to_the_server_is_not_taken_over_mid_call(pg_server, pg_dsn,
                                                                                       tmp_path, how):
    """The holder's advisory lock went with its session while call 1 ran. Another process found the lock
    free, took the run over and ran the PENDING call 1 again (the charge twice) while the holder still ran
    it. The holder takes its lock back at once (its lease watcher); the other process waits for that and is
    refused, and the holder finishes the run."""
    import subprocess
    import sys

    effects, release = tmp_path / "effects", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", LIVE_HOLDER, pg_dsn, "order", str(release), str(effects)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "inside", holder.communicate()
    if how == "restart the server":
        pg_server.restart()
    else:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'")

    refused_while_held(pg_dsn, holder, effects, release, 3)
    calls = dnb.PostgresStore(pg_dsn).calls("order")
    assert [(c.result(), c.origin) for c in calls] == [(i, dnb.Origin.EXECUTED) for i in range(3)]


def test_a_run_claimed_by_a_context_that_never_takes_its_lock_back_is_taken_over_after_the_grace(pg_dsn):
    """What the wait for a live holder must not break: a context on another machine that crashed (or whose
    machine is gone) never takes the lock back, and the run is recovered after the grace."""
    from durable_nb.stores.postgres_lease import RELOCK_GRACE

    store = dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="builtins.pow", point="after_call"):
        runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 5), None, run_id="abandoned")
    sql(pg_dsn, "UPDATE runs SET owner = 'elsewhere:4242:1.00:1' WHERE run_id = 'abandoned'")
    start = time.monotonic()
    assert runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 5, reconciler=lambda: 32), None,
                      run_id="abandoned") == 32
    assert time.monotonic() - start >= RELOCK_GRACE
    assert store.calls("abandoned")[0].origin is dnb.Origin.RECONCILED
    assert store.run("abandoned").attempts == 2


def test_the_lease_watcher_keeps_a_live_session_in_a_process_with_over_1024_files_open(pg_dsn):
    """select() refuses a descriptor numbered 1024 or more (a kernel with many files and sockets open): the
    watcher took that for an ended session, closed the live lease session and took the locks back on a new
    one, four times a second, the run's lock free each time."""
    import os

    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this process may not open 1,200 files (hard limit {hard})")
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200 if hard == resource.RLIM_INFINITY else min(hard, 4096), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # the store's sockets come after them
    store = dnb.PostgresStore(pg_dsn)
    try:
        holders: set[int] = set()
        with dnb.LocalRunner(store).context("r") as ctx:
            ctx.durable_execute(pow, 2, 1)
            for _ in range(8):  # two seconds' worth of the watcher's looks
                time.sleep(0.25)
                with psycopg.connect(pg_dsn) as admin:
                    holders.update(pid for (pid,) in admin.execute(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchall())
        assert len(holders) == 1  # one lease session all along
    finally:
        store.close()
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_store_used_again_after_close_still_takes_a_lost_lock_back(pg_dsn):
    """close() left its lease watcher stopped for good, while the store reconnects and runs on: a run opened
    after it lost its lock with its session and never took it back, so another process took the run over
    mid-call (after the grace) and ran the call again."""
    store = dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 1), None, run_id="before")
    store.close()
    other = dnb.PostgresStore(pg_dsn)
    try:
        with runner.context("after") as ctx:
            ctx.durable_execute(pow, 2, 2)
            sql(pg_dsn, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'")
            with pytest.raises(dnb.RunBusyError, match="after"):  # the holder took its lock back within the grace
                dnb.LocalRunner(other).run(lambda _, ctx: ctx.durable_execute(pow, 2, 2), None, run_id="after")
            ctx.durable_execute(pow, 2, 3)
    finally:
        other.close()
        store.close()
    assert [c.result() for c in dnb.PostgresStore(pg_dsn).calls("after")] == [4, 8]


@pytest.mark.parametrize("durability", ["call", "transition"])
def test_sessions_ended_quicker_than_the_watcher_looks_do_not_fail_the_next_call(pg_dsn, monkeypatch, durability):
    """A restart over within the lease watcher's poll interval (0.25 s), and a call that returns right away:
    the next write went out on the dead session and failed with JournalUnavailableError ("the next call
    reconnects"). The store looks at its lease session's socket before a write (no statement): the message
    that ended it is there, so the write goes out on new sessions. Here the watcher is made slow so that the
    sessions' end (all of them ended at once, as a restart does) always falls between two of its looks."""
    from durable_nb.stores import postgres_lease

    monkeypatch.setattr(postgres_lease, "_WATCH_EVERY", 60.0)
    store = dnb.PostgresStore(pg_dsn, durability=durability)
    runner = dnb.LocalRunner(store)
    runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 1), None, run_id="warm")  # the watcher sleeps now

    def cut(i: int) -> int:
        sql(pg_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        time.sleep(0.05)  # the server's goodbye reaches the sockets
        return i

    assert runner.run(lambda _, ctx: [ctx.durable_execute(cut, 1), ctx.durable_execute(pow, 2, 3)], None,
                      run_id="r") == [1, 8]
    assert [(c.result(), c.origin) for c in store.calls("r")] == [(1, dnb.Origin.EXECUTED), (8, dnb.Origin.EXECUTED)]


def _chain(err: BaseException) -> list[BaseException]:
    """Every exception reachable from ``err`` by ``__context__``/``__cause__`` (what a debugger walks)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [err.__context__, err.__cause__]
    while todo:
        e = todo.pop()
        if e is not None and e not in seen:
            seen.append(e)
            todo += [e.__context__, e.__cause__]
    return seen


def test_a_database_that_only_lets_sessions_read_says_so_and_still_replays(pg_dsn):
    """A read replica (hot standby) or ``default_transaction_read_only = on``: psycopg's ReadOnlySqlTransaction
    came out raw, chained to itself, for the open of a new journal and for every first write."""

    def read_only(on: str) -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = off")  # this session may alter the database
            conn.execute(f"ALTER DATABASE \"{dbname(pg_dsn)}\" SET default_transaction_read_only = {on}")  # type: ignore[arg-type]

    read_only("on")
    with pytest.raises(dnb.JournalUnavailableError) as err:
        dnb.PostgresStore(pg_dsn)  # a new journal: its tables cannot be created
    assert "read-only" in str(err.value) and "default_transaction_read_only" in str(err.value), str(err.value)
    read_only("off")
    dnb.LocalRunner(dnb.PostgresStore(pg_dsn)).run(lambda _, ctx: ctx.durable_execute(pow, 2, 3), run_id="done")
    read_only("on")
    runner = dnb.LocalRunner(dnb.PostgresStore(pg_dsn))
    assert runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 3), run_id="done") == 8  # a replay writes nothing
    ran: list[int] = []
    with pytest.raises(dnb.JournalUnavailableError) as err:
        runner.run(lambda _, ctx: ctx.durable_execute(ran.append, 1), run_id="new")
    text = str(err.value)
    assert "write call 0" in text and "primary" in text and "default_transaction_read_only = off" in text, text
    assert ran == [] and not [e for e in _chain(err.value) if isinstance(e, psycopg.Error)]
    def square(r: int, ctx: dnb.RunnerContext) -> int:
        return ctx.durable_execute(pow, r, 2)

    row = runner.map(square, [3]).iloc[0]
    assert row.status == "FAILED" and row.error.startswith("JournalUnavailableError") and "ReadOnly" not in row.error


def test_a_server_whose_default_isolation_is_serializable_fails_no_write_of_concurrent_runs(pg_dsn):
    """default_transaction_isolation = serializable (or repeatable read) on the server: the journal's fenced
    writes of different runs at once failed with "could not serialize access", called a lost connection."""
    sql(pg_dsn, f"ALTER DATABASE \"{dbname(pg_dsn)}\" SET default_transaction_isolation = serializable")
    store = dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    errors: list[BaseException] = []

    def action(i: int, ctx: dnb.RunnerContext) -> list[int]:
        return [ctx.durable_execute(pow, i, k) for k in range(3)]

    def worker(w: int) -> None:
        for i in range(25):
            try:
                runner.run(action, i, run_id=f"w{w}-{i}")
            except Exception as exc:  # collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_calls(status="SUCCEEDED") == 6 * 25 * 3


def _refusing_server(message: str) -> socket.socket:
    """A port where a PostgreSQL server answers every connection with a FATAL error (as one that is starting
    up, shutting down or ending sessions does): refuses SSL, reads the startup message, sends ``message``."""
    fields = b"".join(k + v.encode() + b"\0" for k, v in [(b"S", "FATAL"), (b"V", "FATAL"), (b"C", "57P03"),
                                                           (b"M", message)]) + b"\0"

    def answer(conn: socket.socket) -> None:
        first = conn.recv(1024)
        if first[4:8] == (80877103).to_bytes(4, "big"):  # SSLRequest: "N", then the startup message
            conn.sendall(b"N")
            conn.recv(1024)
        conn.sendall(b"E" + (len(fields) + 4).to_bytes(4, "big") + fields)

    return _fake_server(answer)


def _refusal_at(listener: socket.socket, query: str = "") -> str:
    """The JournalUnavailableError a PostgresStore opened on ``listener``'s port says (the port closed after)."""
    port = listener.getsockname()[1]
    try:
        with pytest.raises(dnb.JournalUnavailableError) as err:
            dnb.PostgresStore(f"postgresql://someone:pw@127.0.0.1:{port}/orders{query}")
    finally:
        listener.close()
    return str(err.value)


def _fake_server(answer: Callable[[socket.socket], None]) -> socket.socket:
    """A loopback port whose every connection ``answer`` handles (in a daemon thread), until the port is closed."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                answer(conn)

    threading.Thread(target=serve, daemon=True).start()
    return listener


@pytest.mark.parametrize("message", ["the database system is starting up", "the database system is shutting down",
                                     "the database system is in recovery mode",
                                     "terminating connection due to administrator command"])
def test_a_server_that_is_restarting_is_not_called_down_or_missing(message):
    """During a restart mid-map every record's open failed with "Is a PostgreSQL server running and reachable?
    Start one (./dev pg)": the server was running, and the fix is to wait for it, not to start another."""
    text = _refusal_at(_refusing_server(message))
    assert message in text and "./dev pg" not in text and "Start one" not in text, text
    assert "wait" in text and "again" in text, text


def test_the_statements_a_hint_names_work_for_a_database_named_with_quotes(pg_server):
    """The read-only hint wrote ``ALTER DATABASE "{db}"``: a name holding ``"`` made the pasted statement a
    syntax error (or another statement); the name is quoted as SQL quotes it, ``"`` doubled."""
    import re
    import urllib.parse

    name = 'q"db\'x'
    quoted = '"' + name.replace('"', '""') + '"'
    pg_server.admin(f"CREATE DATABASE {quoted}")
    dsn = pg_server.dsn(urllib.parse.quote(name, safe=""))
    try:
        sql(dsn, f"ALTER DATABASE {quoted} SET default_transaction_read_only = on")
        with pytest.raises(dnb.JournalUnavailableError) as err:
            dnb.PostgresStore(dsn)
        fix = re.search(r"ALTER DATABASE .* SET default_transaction_read_only = off(?=, or ALTER ROLE)", str(err.value))
        assert fix is not None, str(err.value)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = off")  # this session may alter the database
            conn.execute(fix.group())  # type: ignore[arg-type]
        with dnb.PostgresStore(dsn) as store:  # writable again: the statement named this database
            assert dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(pow, 2, 3), run_id="r") == 8
    finally:
        pg_server.drop_database(name.replace('"', '""'))
