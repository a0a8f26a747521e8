"""PostgresStore on a real server: schema, refusals, errors, leases across processes, restarts.

The store contract itself (replay rules, queries, fork, prune, inputs) runs on
PostgreSQL through the parametrized ``store`` fixture in tests/test_stores.py,
tests/test_replay.py and the others; this file covers what only a server has.
Every server is real (tests/postgres_server.py); processes are really killed.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg
import pytest
from IPython.core.error import UsageError

import durable_nb as dnb
from durable_nb.journal.context import open_run

pytestmark = pytest.mark.timeout(120)


def tables(dsn: str) -> dict[str, dict[str, str]]:
    """Every table of the database's public schema with its column types."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        ).fetchall()
    out: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        out.setdefault(table, {})[column] = kind
    return out


def sql(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def fill(store: dnb.Store) -> None:
    with dnb.LocalRunner(store).context("r0") as ctx:
        for i in range(3):
            ctx.durable_execute(pow, 2, i)


# ---------------------------------------------------------------- schema


def test_schema_is_created_on_first_use_with_its_version_bytea_payloads_and_text_previews(pg_dsn):
    store = dnb.PostgresStore(pg_dsn)
    fill(store)
    found = tables(pg_dsn)
    assert {"meta", "runs", "calls", "discarded"} <= set(found)
    assert found["calls"]["payload"] == "bytea"
    assert found["calls"]["result_preview"] == found["calls"]["error_preview"] == "text"
    assert dict(sql(pg_dsn, "SELECT key, value FROM meta")) == {"app": "durable_nb", "schema_version": "1"}
    assert [c.result() for c in dnb.PostgresStore(pg_dsn).calls("r0")] == [1, 2, 4]
    store.close()


CREATOR = textwrap.dedent("""
    import os, sys, time
    import durable_nb as dnb
    dsn, go, name = sys.argv[1], sys.argv[2], sys.argv[3]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    store = dnb.PostgresStore(dsn)
    with dnb.LocalRunner(store).context(name) as ctx:
        ctx.durable_execute(len, name)
    print("ok")
""")


def test_several_processes_creating_the_schema_at_once_do_not_race(pg_dsn, tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", CREATOR, pg_dsn, str(go), f"p{k}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(6)
    ]
    for p in procs:  # all imported and waiting at the start line
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["ok"] * 6
    assert sql(pg_dsn, "SELECT count(*) FROM meta") == [(2,)]
    assert sorted(r.run_id for r in dnb.PostgresStore(pg_dsn).runs()) == [f"p{k}" for k in range(6)]


def test_a_database_holding_other_tables_is_refused_and_left_unchanged(pg_dsn):
    sql(pg_dsn, "CREATE TABLE users (id integer)")
    with pytest.raises(dnb.JournalFormatError, match="not a durable_nb journal.*tables: users"):
        dnb.PostgresStore(pg_dsn)
    assert set(tables(pg_dsn)) == {"users"}


def test_a_table_named_like_ours_with_other_columns_is_refused_and_left_unchanged(pg_dsn):
    sql(pg_dsn, "CREATE TABLE runs (id integer, note text)")
    with pytest.raises(dnb.JournalFormatError, match="not a durable_nb journal.*tables: runs"):
        dnb.PostgresStore(pg_dsn)
    assert tables(pg_dsn) == {"runs": {"id": "integer", "note": "text"}}


def test_a_journal_can_live_in_its_own_schema_of_a_shared_database(pg_dsn):
    sql(pg_dsn, "CREATE TABLE users (id integer)")
    sql(pg_dsn, "CREATE SCHEMA journal")
    store = dnb.open_store(pg_dsn + "?options=-csearch_path%3Djournal")
    fill(store)
    assert store.schema == "journal" and set(tables(pg_dsn)) == {"users"}
    assert [c.result() for c in store.calls("r0")] == [1, 2, 4]


def test_options_naming_the_search_path_twice_open_the_journal_in_the_last_one_as_the_server_does(pg_dsn):
    """A DSN whose options were built by appending (-c search_path=public -c search_path=journal) was refused
    at open as if a pooler had dropped the path: the check read the first, the server applies the last."""
    sql(pg_dsn, "CREATE SCHEMA journal")
    store = dnb.PostgresStore(pg_dsn + "?options=-csearch_path%3Dpublic%20-csearch_path%3Djournal")
    fill(store)
    assert store.schema == "journal" and tables(pg_dsn) == {}
    store.close()


def test_a_journal_in_a_sql_ascii_database_opens_again_and_reads_text_as_text(pg_server, pg_dsn):
    """Old clusters (initdb without a locale) and some hosted ones make SQL_ASCII databases. psycopg hands
    their text columns back as bytes: current_schema() read as "b'public'" found no journal there, so the
    second open of the journal tried to create it again (DuplicateTable) and no one could open it again."""
    name = pg_dsn.rsplit("/", 1)[1][:50] + "_ascii"
    pg_server.admin(f'CREATE DATABASE "{name}" ENCODING \'SQL_ASCII\' LC_COLLATE \'C\' LC_CTYPE \'C\' '
                    f"TEMPLATE template0")
    try:
        dsn = pg_server.dsn(name)
        act = lambda _, ctx: [ctx.durable_execute(str.upper, s) for s in ("a", "é", "日本")]  # noqa: E731
        assert dnb.LocalRunner(dnb.PostgresStore(dsn)).run(act, None, run_id="ré") == ["A", "É", "日本"]
        store = dnb.PostgresStore(dsn)
        assert store.schema == "public"
        assert [r.run_id for r in store.runs()] == ["ré"]
        assert dnb.LocalRunner(store).run(act, None, run_id="ré") == ["A", "É", "日本"]
        assert [c.origin for c in store.calls("ré")] == [dnb.Origin.EXECUTED] * 3
        store.close()
    finally:
        pg_server.drop_database(name)


def test_a_database_in_a_single_language_encoding_is_refused_naming_a_utf8_database(pg_server, pg_dsn):
    """A LATIN1 database took a journal: the first preview or error message outside Latin-1 failed its write
    with psycopg's UntranslatableCharacter, and every later statement of the store (reads too) carried that
    held outcome again and failed alike."""
    name = pg_dsn.rsplit("/", 1)[1][:50] + "_latin1"
    pg_server.admin(f'CREATE DATABASE "{name}" ENCODING \'LATIN1\' LC_COLLATE \'C\' LC_CTYPE \'C\' '
                    f"TEMPLATE template0")
    try:
        with pytest.raises(dnb.JournalUnavailableError) as err:
            dnb.PostgresStore(pg_server.dsn(name))
        assert "encoded in LATIN1" in str(err.value) and "ENCODING 'UTF8' TEMPLATE template0" in str(err.value)
        assert tables(pg_server.dsn(name)) == {}
    finally:
        pg_server.drop_database(name)


def test_a_journal_missing_columns_or_from_a_newer_version_is_refused(pg_dsn):
    fill(dnb.PostgresStore(pg_dsn))
    sql(pg_dsn, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(dnb.JournalFormatError, match="version 99.*Upgrade"):
        dnb.PostgresStore(pg_dsn)
    sql(pg_dsn, "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    sql(pg_dsn, "ALTER TABLE calls DROP COLUMN payload")
    with pytest.raises(dnb.JournalFormatError, match="'calls' lacks columns payload"):
        dnb.PostgresStore(pg_dsn)


LOCK_OPEN = "durable_nb_lock_open_v1(bigint,bigint[],text)"


def has_lock_open(dsn: str) -> bool:
    return bool(sql(dsn, "SELECT to_regprocedure(%s) IS NOT NULL", (LOCK_OPEN,))[0][0])


def has_prefix_index(dsn: str) -> bool:
    return bool(sql(dsn, "SELECT to_regclass('runs_by_prefix') IS NOT NULL")[0][0])


def test_a_journal_made_without_the_one_round_trip_open_gets_it_and_replays_as_before(pg_dsn):
    """A journal from before the function and the prefix index (or whose were dropped) is given them at open."""
    fill(dnb.PostgresStore(pg_dsn))
    assert has_lock_open(pg_dsn) and has_prefix_index(pg_dsn)
    sql(pg_dsn, f"DROP FUNCTION {LOCK_OPEN}")
    sql(pg_dsn, "DROP INDEX runs_by_prefix")
    store = dnb.PostgresStore(pg_dsn)
    assert has_lock_open(pg_dsn) and has_prefix_index(pg_dsn)
    with dnb.LocalRunner(store).context("r0") as ctx:
        assert [ctx.durable_execute(pow, 2, i) for i in range(4)] == [1, 2, 4, 8]
        assert ctx.journal.replayed == 3
    store.close()


def test_a_role_that_may_not_create_functions_opens_runs_with_two_round_trips(pg_dsn):
    """Without CREATE on the schema the function (and the prefix index) is not made, and runs open, replay and
    are found by prefix all the same."""
    fill(dnb.PostgresStore(pg_dsn))
    sql(pg_dsn, f"DROP FUNCTION {LOCK_OPEN}")
    sql(pg_dsn, "DROP INDEX runs_by_prefix")
    sql(pg_dsn, "DROP ROLE IF EXISTS journal_user")
    sql(pg_dsn, "CREATE ROLE journal_user LOGIN PASSWORD 'pw'")
    try:
        sql(pg_dsn, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        sql(pg_dsn, "GRANT USAGE ON SCHEMA public TO journal_user")
        sql(pg_dsn, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO journal_user")
        sql(pg_dsn, "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO journal_user")
        store = dnb.PostgresStore(pg_dsn.replace("postgres:durable@", "journal_user:pw@"))
        assert not has_lock_open(pg_dsn) and not has_prefix_index(pg_dsn)
        assert store.run_ids_with_prefix("r") == ["r0"] and store.run_ids_with_prefix("r1") == []
        with dnb.LocalRunner(store).context("r0") as ctx:
            assert [ctx.durable_execute(pow, 2, i) for i in range(4)] == [1, 2, 4, 8]
            assert ctx.journal.replayed == 3
        with pytest.raises(dnb.RunBusyError), dnb.LocalRunner(store).context("r0"), open_run(
            dnb.PostgresStore(pg_dsn), "r0"
        ):
            pass  # another store's session is refused the run this one holds: its lock was taken
        store.close()
    finally:
        sql(pg_dsn, "DROP OWNED BY journal_user")
        sql(pg_dsn, "DROP ROLE journal_user")


def test_a_role_that_may_not_execute_the_open_function_opens_runs_with_two_round_trips(pg_dsn):
    """The function exists (its owner opened the journal first) but EXECUTE was revoked from PUBLIC (a hardened
    server's default privileges): a role with the table grants the hint names opens runs as before the function.

    Why: the open asked only whether the function existed, so after the owner's first open with a version that
    adds it, every run of every other role failed with 'permission denied for function', whose hint (GRANT on
    the tables) did not help; the same role had opened runs with the version before.
    """
    fill(dnb.PostgresStore(pg_dsn))
    sql(pg_dsn, f"REVOKE EXECUTE ON FUNCTION {LOCK_OPEN} FROM PUBLIC")
    sql(pg_dsn, "DROP ROLE IF EXISTS journal_worker")
    sql(pg_dsn, "CREATE ROLE journal_worker LOGIN PASSWORD 'pw'")
    try:
        sql(pg_dsn, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        sql(pg_dsn, "GRANT USAGE ON SCHEMA public TO journal_worker")
        sql(pg_dsn, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO journal_worker")
        store = dnb.PostgresStore(pg_dsn.replace("postgres:durable@", "journal_worker:pw@"))
        with dnb.LocalRunner(store).context("r0") as ctx:
            assert [ctx.durable_execute(pow, 2, i) for i in range(4)] == [1, 2, 4, 8]
            assert ctx.journal.replayed == 3
        with pytest.raises(dnb.RunBusyError), dnb.LocalRunner(store).context("r0"), open_run(
            dnb.PostgresStore(pg_dsn), "r0"
        ):
            pass  # the owner's store (one round trip) is refused the run the worker holds (two round trips)
        store.close()
    finally:
        sql(pg_dsn, "DROP OWNED BY journal_worker")
        sql(pg_dsn, "DROP ROLE journal_worker")


# ---------------------------------------------------------------- errors that say what to do


def test_a_server_that_is_down_is_named_with_host_port_database_and_what_to_do(pg_server):
    from postgres_server import free_port

    port = free_port()
    dsn = f"postgresql://someone:pw@127.0.0.1:{port}/orders"
    with pytest.raises(dnb.JournalUnavailableError) as err:
        dnb.PostgresStore(dsn)
    text = str(err.value)
    assert f"127.0.0.1:{port}" in text and "'orders'" in text and "./dev pg" in text
    assert "pw" not in text.replace("pw@", "")  # the password is never shown
    assert isinstance(err.value, ConnectionError) and isinstance(err.value, dnb.DurableError)
    assert pickle.loads(pickle.dumps(err.value)).args == err.value.args


def test_a_wrong_password_says_to_check_the_credentials(pg_server, pg_dsn):
    dsn = pg_dsn.replace(":durable@", ":wrong@")
    with pytest.raises(dnb.JournalUnavailableError, match="refused user 'postgres': check the user and password"):
        dnb.PostgresStore(dsn)


def test_a_missing_database_says_to_create_it(pg_server):
    with pytest.raises(dnb.JournalUnavailableError, match="'nosuchdb'.*createdb .*nosuchdb"):
        dnb.PostgresStore(pg_server.dsn("nosuchdb"))


@pytest.mark.parametrize("user, password, dbname, hint", [
    ("u", "wrong", "postgres", "check the user and password"),
    ("auth", "wrong", "postgres", "check the user and password"),
    ("postgres", None, "data", "create the database first"),
])
def test_a_user_or_database_named_like_a_word_of_the_message_gets_the_right_hint(pg_server, user, password,
                                                                                dbname, hint):
    """The names were taken out of the server's message unquoted: user ``u`` took every 'u' out of "password
    authentication failed", and the hint asked whether a server runs at an address where one had answered."""
    from postgres_server import PASSWORD

    dsn = f"postgresql://{user}:{password or PASSWORD}@{pg_server.host}:{pg_server.port}/{dbname}"
    with pytest.raises(dnb.JournalUnavailableError) as err:
        dnb.PostgresStore(dsn)
    assert hint in str(err.value) and "Is a PostgreSQL server running" not in str(err.value)


def test_a_user_who_may_not_create_tables_is_told_how_to_grant_it(pg_server, pg_dsn):
    sql(pg_dsn, "DROP ROLE IF EXISTS reader")
    sql(pg_dsn, "CREATE ROLE reader LOGIN PASSWORD 'pw'")
    try:
        dsn = pg_dsn.replace("postgres:durable@", "reader:pw@")
        with pytest.raises(dnb.JournalUnavailableError, match="GRANT CREATE, USAGE ON SCHEMA public"):
            dnb.PostgresStore(dsn)
        assert tables(pg_dsn) == {}
    finally:
        sql(pg_dsn, "DROP OWNED BY reader")
        sql(pg_dsn, "DROP ROLE reader")


def test_a_user_without_rights_on_the_journals_own_schema_is_told_to_grant_on_that_schema(pg_server, pg_dsn):
    """The journal lives in ``options=-csearch_path=journal``: a hint naming schema public fixes nothing."""
    dbname = pg_dsn.rsplit("/", 1)[1]
    role = "guest_" + dbname[-20:]
    sql(pg_dsn, "CREATE SCHEMA journal")
    sql(pg_dsn, f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    dsn = (f"postgresql://{role}:pw@{pg_server.host}:{pg_server.port}/{dbname}"
           "?options=-csearch_path%3Djournal")
    try:
        # No USAGE: PostgreSQL leaves the schema out of the path, which looked like "no such schema".
        refused = f"lacks USAGE.*GRANT USAGE, CREATE ON SCHEMA journal TO {role}"
        with pytest.raises(dnb.JournalFormatError, match=refused):
            dnb.PostgresStore(dsn)
        sql(pg_dsn, f"GRANT USAGE ON SCHEMA journal TO {role}")
        with pytest.raises(dnb.JournalUnavailableError) as err:  # may use it, may not create tables in it
            dnb.PostgresStore(dsn)
        assert f'GRANT CREATE, USAGE ON SCHEMA journal TO "{role}"' in str(err.value)
        assert "SCHEMA public" not in str(err.value)
        dnb.PostgresStore(pg_dsn + "?options=-csearch_path%3Djournal").close()  # the owner creates the journal
        with pytest.raises(dnb.JournalUnavailableError) as err:
            dnb.PostgresStore(dsn)
        assert f'ON ALL TABLES IN SCHEMA journal TO "{role}"' in str(err.value)
        sql(pg_dsn, f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA journal TO {role}")  # the fix
        store = dnb.PostgresStore(dsn)
        assert dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(pow, 2, 3), None, run_id="g") == 8
        store.close()
    finally:
        sql(pg_dsn, f"DROP OWNED BY {role}")
        sql(pg_dsn, f"DROP ROLE {role}")


def test_a_connection_limit_reached_says_so_not_that_the_server_is_down(pg_server, pg_dsn):
    dbname = pg_dsn.rsplit("/", 1)[1]
    role = "few_" + dbname[-20:]
    sql(pg_dsn, f"CREATE ROLE {role} LOGIN PASSWORD 'pw' CONNECTION LIMIT 2")
    sql(pg_dsn, f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
    dsn = f"postgresql://{role}:pw@{pg_server.host}:{pg_server.port}/{dbname}"
    try:
        store = dnb.PostgresStore(dsn)  # its write connection; a run takes its lease connection too
        with pytest.raises(dnb.JournalUnavailableError) as err, dnb.LocalRunner(store).context("r"):
            dnb.PostgresStore(dsn)
        text = str(err.value)
        assert "no connection left" in text and "CONNECTION LIMIT" in text and "store.close()" in text, text
        assert "Is a PostgreSQL server running" not in text
        store.close()
    finally:
        sql(pg_dsn, f"DROP OWNED BY {role}")
        sql(pg_dsn, f"DROP ROLE {role}")


# ---------------------------------------------------------------- opening, pickling


def test_open_store_opens_postgresql_urls_and_the_store_pickles_without_showing_the_password(pg_dsn):
    store = dnb.open_store(pg_dsn)
    assert isinstance(store, dnb.PostgresStore)
    assert "durable" not in repr(store).replace("durable_nb", "") and "***" in repr(store)
    fill(store)
    again = pickle.loads(pickle.dumps(store))
    assert [c.result() for c in again.calls("r0")] == [1, 2, 4]
    with pytest.raises(ValueError, match="durability must be one of"):
        dnb.PostgresStore(pg_dsn, durability="sometimes")
    transition = dnb.open_store(pg_dsn + "?durability=transition&application_name=journal_test")
    assert transition.durability == "transition" and "durability" not in transition.dsn
    assert [c.result() for c in transition.calls("r0")] == [1, 2, 4]


def test_durability_in_the_url_given_to_the_constructor_is_refused_saying_where_it_goes():
    """The hint said URL parameters were libpq's keywords "and durability=", then refused durability= in the URL:
    only open_store reads it there. No server needed: the DSN is read before any connection."""
    with pytest.raises(ValueError, match="durability") as refused:
        dnb.PostgresStore("postgresql://app:secret@db-host/journal?durability=transition")
    text = str(refused.value)
    assert "PostgresStore(dsn, durability='transition')" in text and "open_store(" in text
    assert "and durability=" not in text and "\n" not in text and "secret" not in text


@pytest.mark.parametrize("durability", ["call", "transition", "relaxed"])
def test_every_durability_level_journals_the_same_calls(pg_dsn, durability):
    store = dnb.PostgresStore(pg_dsn, durability=durability)
    fill(store)
    other = dnb.PostgresStore(pg_dsn)  # another connection sees everything once the run ended
    assert [(c.status, c.result()) for c in other.calls("r0")] == [(dnb.Status.SUCCEEDED, v) for v in (1, 2, 4)]
    assert other.run("r0").status is dnb.RunStatus.COMPLETED


def test_a_held_back_outcome_reaches_the_server_within_a_short_delay(pg_dsn):
    store, other = dnb.PostgresStore(pg_dsn), dnb.PostgresStore(pg_dsn)
    with dnb.LocalRunner(store).context("slow") as ctx:
        ctx.durable_execute(pow, 3, 2)
        deadline = time.monotonic() + 10
        while other.calls("slow")[0].status is dnb.Status.PENDING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert other.calls("slow")[0].status is dnb.Status.SUCCEEDED


def test_outcomes_held_while_the_flusher_waits_for_an_older_one_reach_the_server_too(pg_dsn):
    """The flusher is not woken by each held outcome (only when nothing was held): later ones still commit."""
    store, other = dnb.PostgresStore(pg_dsn), dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    with runner.context("first") as a, runner.context("second") as b, runner.context("third") as c:
        a.durable_execute(pow, 3, 2)  # the flusher starts and waits for this one's deadline
        time.sleep(0.005)
        b.durable_execute(pow, 3, 3)  # held while it waits: no wake-up
        c.durable_execute(pow, 3, 4)
        deadline = time.monotonic() + 10
        runs = ("first", "second", "third")
        while time.monotonic() < deadline and any(other.calls(r)[0].status is dnb.Status.PENDING for r in runs):
            time.sleep(0.01)
        assert [other.calls(r)[0].result() for r in runs] == [9, 27, 81]

@pytest.mark.parametrize("run_id", ["order\x00-1", "order-\udcff"])
def test_a_run_id_postgresql_cannot_hold_is_refused_naming_the_fix_and_the_store_stays_usable(pg_dsn, run_id):
    store = dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    with pytest.raises(ValueError, match=r"cannot hold NUL characters .* Nothing was written.*key= a function"):
        runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 3), run_id=run_id)
    # A map keyed by such text: that record is a FAILED row saying why, the others run.
    frame = runner.map(lambda rec, ctx: ctx.durable_execute(len, rec), [run_id, "b"], key=lambda rec: rec)
    assert list(frame.status) == ["FAILED", "COMPLETED"] and "text type cannot hold" in frame.error[0]
    assert [r.run_id for r in store.runs()] == [frame.run_id[1]]
    assert runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 3), run_id="order-1") == 8


def test_a_replay_of_a_finished_run_writes_nothing(pg_dsn):
    store = dnb.PostgresStore(pg_dsn)
    fill(store)
    before = sql(pg_dsn, "SELECT xmin::text, attempts, updated_at FROM runs")
    calls_before = sql(pg_dsn, "SELECT xmin::text FROM calls ORDER BY idx")
    with dnb.LocalRunner(dnb.PostgresStore(pg_dsn)).context("r0") as ctx:
        assert [ctx.durable_execute(pow, 2, i) for i in range(3)] == [1, 2, 4]
    assert sql(pg_dsn, "SELECT xmin::text, attempts, updated_at FROM runs") == before
    assert sql(pg_dsn, "SELECT xmin::text FROM calls ORDER BY idx") == calls_before


def test_pruning_tens_of_thousands_of_runs_does_not_run_out_of_the_servers_lock_table(pg_dsn):
    """Every pruned run's advisory lock was held by one transaction: 60,000 old runs (a year of a daily map)
    failed with "out of shared memory ... max_locks_per_transaction", reported as a lost connection, and
    nothing was removed. A run a live context holds still stays."""
    store = dnb.PostgresStore(pg_dsn)
    fill(store)
    sql(pg_dsn, "INSERT INTO runs (run_id, status, created_at, updated_at, attempts) "
                "SELECT 'old-' || g, 'COMPLETED', 1, 1, 1 FROM generate_series(1, 60000) g")
    runner = dnb.LocalRunner(dnb.PostgresStore(pg_dsn))
    with runner.context("old-7"):
        removed = store.prune(keep_last=0)
    assert len(removed) == 60000  # 59,999 old runs and r0; old-7 was open
    assert sql(pg_dsn, "SELECT run_id FROM runs") == [("old-7",)]
    store.close()


def test_a_prune_that_fails_midway_says_the_runs_of_the_batches_before_are_gone(pg_dsn, monkeypatch):
    """Pruned in batches, a connection lost at the third batch leaves the first two deleted; the error said
    only "could not prune runs", which a user reads as "nothing was removed" (true before the batches)."""
    from durable_nb.journal import history
    from durable_nb.stores import postgres

    store = dnb.PostgresStore(pg_dsn)
    sql(pg_dsn, "INSERT INTO runs (run_id, status, created_at, updated_at, attempts) "
                "SELECT 'old-' || g, 'COMPLETED', g, g, 1 FROM generate_series(1, 5) g")
    monkeypatch.setattr(history, "PRUNE_BATCH", 2)
    batch = postgres.PostgresStore._prune_batch
    done = []

    def failing(self, conn, rule, runs):
        if len(done) == 2:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        done.append(runs)
        return batch(self, conn, rule, runs)

    monkeypatch.setattr(postgres.PostgresStore, "_prune_batch", failing)
    with pytest.raises(dnb.JournalUnavailableError, match=r"could not prune runs \(4 of the 5 selected were "
                                                           r"removed before this; prune again to remove the rest\)"):
        store.prune(keep_last=0)
    assert sql(pg_dsn, "SELECT run_id FROM runs") == [("old-5",)]
    monkeypatch.setattr(postgres.PostgresStore, "_prune_batch", batch)
    assert [r.run_id for r in store.prune(keep_last=0)] == ["old-5"]
    store.close()


def test_asking_whether_a_run_is_open_never_makes_it_busy_for_a_process_opening_it(pg_dsn):
    """JournalView asks ``run_is_open`` for every shown run, every refresh, while a recovery opens them.
    Asked with a try-lock, the question held the lock for a moment: 49 of 3,000 opens were RunBusyError."""
    watcher, store = dnb.PostgresStore(pg_dsn), dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    runner.run(lambda _v, ctx: ctx.durable_execute(abs, -1), None, run_id="watched")
    stop = threading.Event()
    answers: list[bool] = []

    def watch() -> None:
        while not stop.is_set():
            answers.append(watcher.run_is_open("watched"))

    thread = threading.Thread(target=watch)
    thread.start()
    busy = 0
    try:
        for _ in range(3000):
            try:
                with runner.context("watched"):
                    pass
            except dnb.RunBusyError:
                busy += 1
    finally:
        stop.set()
        thread.join()
    assert busy == 0 and len(answers) > 100
    with runner.context("watched"):
        assert watcher.run_is_open("watched")  # the lock held elsewhere is seen
    assert not watcher.run_is_open("watched")
    watcher.close()
    store.close()


def test_threads_share_one_store(pg_dsn):
    import threading

    store = dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            with runner.context(f"t{k}") as ctx:
                for i in range(10):
                    assert ctx.durable_execute(pow, k, i) == k**i
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_calls(status="SUCCEEDED") == 80


WRITER = textwrap.dedent("""
    import sys
    import durable_nb as dnb
    dsn, who = sys.argv[1], sys.argv[2]
    runner = dnb.LocalRunner(dnb.PostgresStore(dsn))
    for r in range(20):
        with runner.context(f"{who}-{r}") as ctx:
            for i in range(5):
                assert ctx.durable_execute(pow, r, i) == r ** i
    with runner.context("shared") as ctx:  # one run, four processes: taken in turn, never at once
        pass
    print("ok")
""")


def test_four_processes_write_one_journal_at_once(pg_dsn):
    dnb.PostgresStore(pg_dsn).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, pg_dsn, f"p{k}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    failed = [err for (out, err) in outs if out.strip() != "ok" and "RunBusyError" not in err]
    assert failed == []
    store = dnb.PostgresStore(pg_dsn)
    assert store.count_calls(status="SUCCEEDED") == 4 * 20 * 5
    assert store.count_calls() == 400 and store.pending() == []
    assert sorted(r.attempts for r in store.runs() if r.run_id != "shared") == [1] * 80


# ---------------------------------------------------------------- leases across processes

HOLDER = textwrap.dedent("""
    import os, sys, time
    import durable_nb as dnb
    dsn, run_id, release = sys.argv[1], sys.argv[2], sys.argv[3]
    store = dnb.PostgresStore(dsn)

    @dnb.durable(name="hold")
    def wait_for_release(i):
        print("holding", flush=True)
        while not os.path.exists(release):
            time.sleep(0.01)
        return i

    try:
        with dnb.LocalRunner(store).context(run_id) as ctx:
            ctx.durable_execute(pow, 2, 5)
            ctx.durable_execute(wait_for_release, 1)
            ctx.durable_execute(pow, 2, 6)
        print("done", flush=True)
    except dnb.DurableError as exc:
        print(type(exc).__name__, exc, flush=True)
""")


@dnb.durable(name="hold")
def hold(i: int) -> int:
    raise AssertionError("the holder's PENDING call is recovered by its reconciler, never re-executed")


def recover(ctx: dnb.RunnerContext) -> list[int]:
    """What the holder does, recovered: call 0 replays, the PENDING ``hold`` call is reconciled."""
    return [ctx.durable_execute(pow, 2, 5), ctx.durable_execute(hold, 1, reconciler=lambda: 1),
            ctx.durable_execute(pow, 2, 6)]


def start_holder(dsn: str, run_id: str, release: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, dsn, run_id, str(release)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "holding", proc.stderr.read() if proc.stderr else line
    return proc


def test_a_run_held_by_a_process_that_is_killed_is_taken_over_within_30_seconds(pg_dsn, tmp_path):
    holder = start_holder(pg_dsn, "order-1", tmp_path / "never")
    store = dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.RunBusyError, match="order-1"), runner.context("order-1"):
        pass
    assert store.run_is_open("order-1")
    with pytest.raises(dnb.RunBusyError, match=f"by process {holder.pid} on "):  # who holds it, as SQLite says
        store.delete_run("order-1")

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    deadline = time.monotonic() + 30  # the promise: taken over within 30 s
    while True:
        try:
            with runner.context("order-1") as ctx:
                out = recover(ctx)
            break
        except dnb.RunBusyError:
            assert time.monotonic() < deadline, "the killed process's lease was not released within 30 s"
            time.sleep(0.1)
    assert out == [32, 1, 64]
    calls = store.calls("order-1")
    assert [c.origin for c in calls] == [dnb.Origin.EXECUTED, dnb.Origin.RECONCILED, dnb.Origin.EXECUTED]
    assert store.run("order-1").status is dnb.RunStatus.COMPLETED and not store.run_is_open("order-1")
    assert store.run("order-1").attempts == 2


def test_the_lease_connection_makes_the_server_drop_a_vanished_machine_within_30_seconds(pg_dsn):
    # A killed process closes its sockets (tested above); a machine that vanishes does not, so the
    # server must probe: 10 s idle + 3 probes 5 s apart, 25 s for unacknowledged data.
    store = dnb.PostgresStore(pg_dsn)
    with dnb.LocalRunner(store).context("probe"):
        conn = store._locks._conn
        settings = [conn.execute(f"SHOW {name}").fetchone()[0] for name in (
            "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout")]
    idle, interval, count, user_timeout = (int(v) for v in settings)
    assert idle + interval * count <= 30 and user_timeout <= 30_000


def test_a_context_whose_run_was_taken_over_writes_nothing(pg_dsn, tmp_path):
    release = tmp_path / "release"
    holder = start_holder(pg_dsn, "order-2", release)
    store = dnb.PostgresStore(pg_dsn)
    with open_run(store, "order-2", steal=True) as ctx:
        assert ctx.durable_execute(pow, 2, 5) == 32  # replayed from the holder's journal
        assert ctx.durable_execute(hold, 1, reconciler=lambda: 1) == 1
        release.touch()  # the holder's call returns now; its writes must be fenced off
        out, err = holder.communicate(timeout=60)
        assert out.splitlines()[-1].startswith("LeaseLostError"), err
        assert ctx.durable_execute(pow, 2, 6) == 64
    calls = store.calls("order-2")
    assert [(c.result(), c.origin) for c in calls] == [
        (32, dnb.Origin.EXECUTED), (1, dnb.Origin.RECONCILED), (64, dnb.Origin.EXECUTED)
    ]


# ---------------------------------------------------------------- the server restarts mid-run


@pytest.mark.parametrize("durability", ["call", "transition"])
def test_a_server_restart_mid_run_fails_clearly_loses_nothing_acknowledged_and_the_next_run_recovers(
    pg_server, pg_dsn, durability
):
    store = dnb.PostgresStore(pg_dsn, durability=durability)
    runner = dnb.LocalRunner(store)
    executed: list[int] = []
    acknowledged: list[int] = []

    def step(i: int) -> int:
        executed.append(i)
        if i == 2 and len(executed) == 3:
            pg_server.stop()  # the server goes away while call 2 runs
        return i * 10

    def action(_: Any, ctx: dnb.RunnerContext) -> list[int]:
        out = []
        for i in range(5):
            out.append(ctx.durable_execute(step, i, reconciler=lambda i=i: i * 10))
            acknowledged.append(i)
        return out

    try:
        with pytest.raises(dnb.JournalUnavailableError) as err:
            runner.run(action, None, run_id="restart")
        text = str(err.value)
        assert f"{pg_server.host}:{pg_server.port}" in text and "run 'restart'" in text
        # "call": call 2's outcome is held back, so call 2 returns and call 3's PENDING fails;
        # "transition": call 2's own outcome cannot be written, and call 2 fails.
        assert acknowledged == ([0, 1, 2] if durability == "call" else [0, 1])
        assert executed == [0, 1, 2]
        kept = len(acknowledged)
    finally:
        pg_server.start()

    assert runner.run(action, None, run_id="restart") == [0, 10, 20, 30, 40]
    assert executed == [0, 1, 2, 3, 4]  # nothing acknowledged (nor call 2) ran again
    calls = dnb.PostgresStore(pg_dsn).calls("restart")
    assert [c.result() for c in calls] == [0, 10, 20, 30, 40]
    # every acknowledged outcome survived the restart as executed
    assert [c.origin for c in calls[:kept]] == [dnb.Origin.EXECUTED] * kept
    assert [c.origin for c in calls[kept:3]] == [dnb.Origin.RECONCILED] * (3 - kept)
    assert dnb.PostgresStore(pg_dsn).run("restart").status is dnb.RunStatus.COMPLETED


def test_a_missing_psycopg_names_the_extra_to_install(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["psycopg"] = None  # as if it were not installed
        import durable_nb as dnb
        try:
            dnb.PostgresStore
        except ImportError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(dnb.__file__).parents[1])})
    assert "pip install 'durable_nb[postgres]'" in out.stdout, out.stderr


def test_the_dev_pg_helper_starts_a_server_and_prints_a_dsn_that_opens_a_journal(pg_server):
    from postgres_server import PostgresServer, free_port

    folder, port = Path(f"/tmp/durable_nb_pg_test_{os.getpid()}"), free_port()
    helper = Path(__file__).with_name("postgres_server.py")
    try:
        out = subprocess.run([sys.executable, str(helper), "--dir", str(folder), "--port", str(port)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        dsn = out.stdout.strip().splitlines()[-1]
        assert dsn.startswith("postgresql://") and f":{port}/" in dsn
        store = dnb.open_store(dsn)
        fill(store)
        assert json.loads(json.dumps([r.run_id for r in store.runs()])) == ["r0"]
        store.close()
    finally:
        PostgresServer(folder, port).stop("immediate")
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_in_a_boundary_a_runs_end_rides_with_the_next_pending_and_its_lock_is_kept_until_then(pg_dsn, monkeypatch):
    """A map's record costs one commit: its end waits for the next record's PENDING, and meanwhile no
    other context can open the run (it would see it unfinished and run its call again)."""
    from durable_nb.stores import postgres_commit

    monkeypatch.setattr(postgres_commit, "FLUSH_DELAY", 3600.0)  # only the rules' commit points here
    store, other = dnb.PostgresStore(pg_dsn), dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    ran: list[int] = []

    def power(x: int) -> int:
        ran.append(x)
        return 2**x

    with store.boundary():
        with runner.context("a") as ctx:
            assert ctx.durable_execute(power, 1) == 2
        assert other.run("a").status is dnb.RunStatus.RUNNING  # its end is held, not durable yet
        assert other.calls("a")[0].status is dnb.Status.PENDING
        with pytest.raises(dnb.RunBusyError), dnb.LocalRunner(other).context("a"):
            pass
        with runner.context("b") as ctx:
            assert ctx.durable_execute(power, 2) == 4
            # b's PENDING carried a's end, in one transaction
            assert other.run("a").status is dnb.RunStatus.COMPLETED
            assert other.calls("a")[0].status is dnb.Status.SUCCEEDED
            assert other.calls("b")[0].status is dnb.Status.PENDING
    # The boundary's end commits b's end and releases both runs.
    assert other.run("b").status is dnb.RunStatus.COMPLETED
    for run_id, x in (("a", 1), ("b", 2)):
        with dnb.LocalRunner(other).context(run_id) as ctx:
            assert ctx.durable_execute(power, x) == 2**x
    assert ran == [1, 2]  # both replayed: neither ran again
    store.close()
    other.close()


def test_a_large_outcome_is_committed_at_once_not_held_with_others_in_one_statement(pg_dsn, monkeypatch):
    """Held outcomes ride together in one statement, which PostgreSQL caps at 1 GiB: a large one goes alone."""
    from durable_nb.stores import postgres, postgres_commit

    monkeypatch.setattr(postgres_commit, "FLUSH_DELAY", 3600.0)  # only the rules' commit points here
    store, other = dnb.PostgresStore(pg_dsn), dnb.PostgresStore(pg_dsn)
    with dnb.LocalRunner(store).context("sizes") as ctx:
        assert ctx.durable_execute(bytes, 10) == bytes(10)
        assert other.calls("sizes")[0].status is dnb.Status.PENDING  # small: held for the next commit
        assert len(ctx.durable_execute(bytes, postgres.HOLD_MAX + 1)) == postgres.HOLD_MAX + 1
        # large: committed at once (its PENDING carried the small one)
        assert [c.status for c in other.calls("sizes")] == [dnb.Status.SUCCEEDED, dnb.Status.SUCCEEDED]


def test_a_run_id_too_long_for_an_index_key_is_a_value_error_not_a_lost_connection(pg_dsn):
    """PostgreSQL's btree keys hold ~2.7 kB: a run id built from a whole record exceeds it. That is the
    caller's to fix (a ValueError saying so), not a network failure; nothing runs and nothing is written."""
    import random
    import string

    store = dnb.PostgresStore(pg_dsn)
    ran = []
    huge = "".join(random.Random(1).choices(string.ascii_letters, k=20_000))  # does not compress away
    with pytest.raises(ValueError, match="index row.*Run ids and call ids are index keys"):
        dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(ran.append, v), 1, run_id=huge)
    assert ran == [] and store.runs() == []
    assert dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id="short") == "1"
    store.close()


def another_process_tries(pg_dsn: str, run_id: str, executed: list[str]) -> None:
    """Another store (another session, as another process) tries to run call 1 of the run: "B: busy" if refused."""
    def other_step(i: int) -> int:
        executed.append(f"B:{i}")
        return i

    try:
        dnb.LocalRunner(dnb.PostgresStore(pg_dsn)).run(lambda _, ctx: ctx.durable_execute(other_step, 1), run_id=run_id)
    except dnb.RunBusyError:
        executed.append("B: busy")


def test_a_context_that_outlived_a_server_restart_takes_its_lock_again_before_its_next_call(pg_server, pg_dsn):
    """The run's advisory lock went with the server; the context goes on after a retry. Its next PENDING must
    not be written without the lock: another process (here another store: another session) could take the run
    meanwhile and execute that call a second time."""
    store = dnb.PostgresStore(pg_dsn)
    executed: list[str] = []

    def step(i: int) -> int:
        executed.append(f"A:{i}")
        if i == 0:
            pg_server.restart()
        if i == 1:  # while call 1 runs, another process tries the run
            another_process_tries(pg_dsn, "outlived", executed)
        return i

    def call(ctx: dnb.RunnerContext, i: int) -> int:
        for _ in range(3):  # what a user who reads "the next call reconnects" writes
            try:
                return ctx.durable_execute(step, i)
            except dnb.JournalUnavailableError:
                time.sleep(0.2)
        raise AssertionError("the server did not come back")

    result = dnb.LocalRunner(store).run(lambda _, ctx: [call(ctx, i) for i in range(3)], None, run_id="outlived")
    assert result == [0, 1, 2]
    assert executed == ["A:0", "A:1", "B: busy", "A:2"], executed
    assert [c.result() for c in dnb.PostgresStore(pg_dsn).calls("outlived")] == [0, 1, 2]


# ---------------------------------------------------------------- DSNs as users write them, secrets never shown

SECRET = "Zq9@x/y%Secret#?"


@pytest.fixture
def alice_dsn(pg_server: Any, pg_dsn: str) -> str:
    """The test database, owned by a user whose password has every character a URL must percent-encode."""
    from urllib.parse import quote

    dbname = pg_dsn.rsplit("/", 1)[1]
    pg_server.admin("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'alice') THEN "
                    "CREATE ROLE alice LOGIN; END IF; END $$")
    pg_server.admin(f"ALTER ROLE alice PASSWORD '{SECRET}'")
    pg_server.admin(f'ALTER DATABASE "{dbname}" OWNER TO alice')
    return f"postgresql://alice:{quote(SECRET, safe='')}@{pg_server.host}:{pg_server.port}/{dbname}"


def test_mask_dsn_hides_every_password_form() -> None:
    from durable_nb.stores.dsn import mask_dsn

    shown = [
        mask_dsn("postgresql://alice:pa%40ss@h:5/db?sslmode=require"),
        mask_dsn("postgresql://alice:pa/ss@h/db"),  # a raw '/' libpq would refuse: masked all the same
        mask_dsn("postgresql://alice@h/db?sslpassword=KeyPw&password=Secret"),
        mask_dsn("host=h dbname=db user=alice password='se cret' sslpassword=KeyPw"),
        mask_dsn("host=h PASSWORD = Secret port=5"),
        mask_dsn("host=h user=alice password=se\\ cret port=5"),  # libpq's escaped space
        mask_dsn("postgresql://bob:pa?ss@host/db"),  # a raw '?' libpq takes as part of the password
    ]
    assert shown[0] == "postgresql://alice:***@h:5/db?sslmode=require"
    assert not any(word in text for text in shown
                   for word in ("pa%40ss", "ss@", "KeyPw", "Secret", "se cret", "cret", "pa?ss"))
    assert "dbname=db" in shown[3] and "port=5" in shown[4] and shown[5].endswith("password=*** port=5")
    assert shown[6] == "postgresql://bob:***@host/db"



def test_mask_dsn_hides_a_query_password_holding_an_at_sign() -> None:
    """libpq reads a raw '@' in a query value (the authority ends at the first '/'); masking up to the last
    '@' took ``host/db?password=p`` for the user name, found no ':' in it, and showed the whole password,
    in the refusal of a misspelt scheme too."""
    from durable_nb.stores.dsn import mask_dsn

    shown = [
        mask_dsn("postgresql://host/db?password=Se@cret"),
        mask_dsn("postgresql://alice@host/db?sslmode=require&password=Se@cret&port=5"),
        mask_dsn("postgresql://alice:pw@host/db?sslpassword=Se@cret"),
        mask_dsn("postgres://host/db?pass%77ord=Se@cret"),
        mask_dsn("host/db?password=Se@cret"),  # no scheme: the refusal of a URL without one shows it
    ]
    assert not any("cret" in text for text in shown), shown
    assert shown[0] == "postgresql://host/db?password=***"
    assert shown[1] == "postgresql://alice@host/db?sslmode=require&password=***&port=5"
    for dsn in ("postgresqll://host/db?password=Se@cret", "mysql://host/db?password=Se@cret"):
        with pytest.raises(ValueError) as refused:
            dnb.PostgresStore(dsn)
        assert "cret" not in str(refused.value)

def test_open_store_reads_what_libpq_reads(alice_dsn: str, tmp_path: Path, monkeypatch: Any) -> None:
    from psycopg.conninfo import conninfo_to_dict

    pg_dsn = alice_dsn
    monkeypatch.chdir(tmp_path)
    d = conninfo_to_dict(pg_dsn)
    keyvalue = (f"application_name=mine host={d['host']} port={d['port']} dbname={d['dbname']} "
                f"user={d['user']} password='{d['password']}'")
    # A DSN starting with any libpq keyword (not only host=): as a file name it would put the password on disk.
    assert isinstance(dnb.open_store(keyvalue), dnb.PostgresStore)
    assert list(tmp_path.iterdir()) == []
    # No host in the authority (libpq takes it from the query); a space written %20 in options stays a space.
    url = (f"postgresql://{pg_dsn.split('//', 1)[1].split('@', 1)[0]}@/{d['dbname']}?host={d['host']}&port={d['port']}"
           f"&options=-c%20statement_timeout%3D4321&durability=transition")
    store = dnb.open_store(url)
    assert store.durability == "transition"
    assert dnb.open_store("  " + pg_dsn + "\n").run("none") is None  # pasted with spaces around
    with store._conn.cursor() as cur:
        assert cur.execute("SHOW statement_timeout").fetchone()[0] == "4321ms"


def test_no_message_or_repr_shows_the_password(alice_dsn: str, ip: Any) -> None:
    from durable_nb.notebook.magics import magics_of
    from durable_nb.runners.flink_env import store_spec

    pg_dsn, password = alice_dsn, alice_dsn.split("@", 1)[0].rsplit(":", 1)[1]  # percent-encoded
    shown: list[str] = []
    for bad in (pg_dsn.replace("postgresql://", "postgresql+psycopg://"), " " + pg_dsn.replace("postgresql", "pg")):
        with pytest.raises(ValueError) as err:
            dnb.open_store(bad)
        shown.append(str(err.value))
    with pytest.raises(ValueError) as err:  # a stray '%' in the password: libpq's own message quotes it
        dnb.PostgresStore(pg_dsn.replace(f":{password}@", f":{password}%zz@"))
    shown.append(str(err.value))
    assert "percent-encode" in shown[-1]
    m = magics_of(ip)
    assert m is not None
    with pytest.raises(UsageError) as usage:  # the server refuses: no such database
        ip.run_line_magic("durable_store", pg_dsn.rsplit("/", 1)[0] + "/no_such_db")
    shown.append(str(usage.value))
    store = dnb.PostgresStore(pg_dsn + "?sslpassword=KeyPw")
    shown += [repr(store), repr(store_spec(store))]
    assert "no_such_db" in shown[3] and "PostgresStore(" in shown[4]
    for text in shown:
        assert password not in text and "Secret" not in text and "KeyPw" not in text, text


def test_a_dsn_libpq_cannot_read_keeps_no_error_quoting_the_password_in_its_chain() -> None:
    """``from None`` only hides the context from tracebacks: anything that walks ``__context__`` (an error
    reporter, a debugger) read psycopg's message, ``invalid percent-encoded token: "Secret9%zz"``."""
    with pytest.raises(ValueError) as err:
        dnb.PostgresStore("postgresql://alice:Secret9%zz@127.0.0.1:1/db")
    seen, exc = [], err.value
    while exc is not None:
        seen.append(f"{exc} {exc.args!r}")
        exc = exc.__cause__ or exc.__context__
    assert "percent-encode" in seen[0] and not any("Secret9" in text for text in seen), seen


def secrets_in_chain(exc: BaseException | None, secret: str) -> list[str]:
    """What of ``exc``'s ``__cause__``/``__context__`` chain shows ``secret``: messages, args, and a psycopg
    error's ``pgconn.info`` (a failed connection keeps libpq's, password included)."""
    found = []
    while exc is not None:
        pgconn = getattr(exc, "pgconn", None)
        info = [] if pgconn is None else [(o.keyword, o.val) for o in pgconn.info]
        if secret in f"{exc} {exc.args!r} {info!r}":
            found.append(type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    return found


@pytest.mark.parametrize("fault", ["wrong password", "missing database", "server down"])
def test_a_refused_connection_keeps_no_psycopg_error_holding_the_password_in_its_chain(pg_server, fault):
    """``from None`` hid psycopg's error from tracebacks only: it stayed the ``__context__``, and its
    ``pgconn.info`` gave the DSN's password to any error reporter or debugger walking the chain."""
    from postgres_server import PASSWORD, free_port

    dsn = {"wrong password": pg_server.dsn(password="Hunter2wrong"),
           "missing database": pg_server.dsn("no_such_db"),  # the right password
           "server down": f"postgresql://postgres:Hunter2wrong@127.0.0.1:{free_port()}/db"}[fault]
    secret = PASSWORD if fault == "missing database" else "Hunter2wrong"
    with pytest.raises(dnb.JournalUnavailableError) as err:
        dnb.PostgresStore(dsn)
    assert secrets_in_chain(err.value, secret) == []
    assert err.value.__context__ is None and err.value.__cause__ is None
    try:  # what the caller was handling stays the context, as before (shown no more than before)
        raise KeyError("the user's own")
    except KeyError:
        with pytest.raises(dnb.JournalUnavailableError) as err:
            dnb.PostgresStore(dsn)
    assert repr(err.value.__context__) == "KeyError(\"the user's own\")" and err.value.__suppress_context__
    assert "?." not in str(err.value)  # libpq's "accepting TCP/IP connections?" ends its own sentence


def test_a_raw_at_or_slash_in_a_url_password_is_refused_without_showing_any_piece_of_it(pg_dsn: str) -> None:
    """libpq ends ``user:password`` at the first '@' or '/': the rest of the password became the host, the
    port or the database name, and the connection error showed it (``host 'ble@127.0.0.1'``)."""
    host_part = pg_dsn.split("@", 1)[1]
    for password, pieces in (("Sec@ret9x", ("ret9x",)), ("Sec/ret9x", ("Sec", "ret9x")), ("1234/5678", ("5678",))):
        with pytest.raises(ValueError) as err:
            dnb.PostgresStore(f"postgresql://postgres:{password}@{host_part}")
        text = str(err.value)
        assert "percent-encode" in text.lower() and "urllib.parse.quote" in text
        for piece in pieces:
            assert piece not in text, text
    quoted = urllib.parse.quote("Sec@ret9x", safe="")  # the fix the message names reaches the server
    with pytest.raises(dnb.JournalUnavailableError) as refused:
        dnb.PostgresStore(f"postgresql://postgres:{quoted}@{host_part}")
    assert "password" in str(refused.value) and "ret9x" not in str(refused.value)


def test_a_user_who_may_only_read_is_told_about_the_write_that_was_refused(pg_server: Any, pg_dsn: str) -> None:
    """Not about the run's close failing the same way afterwards (that error hid the first one)."""
    dnb.PostgresStore(pg_dsn).close()  # the journal's tables, created by their owner
    dbname = pg_dsn.rsplit("/", 1)[1]
    reader = "reader_" + dbname[-20:]
    admin = psycopg.connect(pg_dsn, autocommit=True)
    admin.execute(f"CREATE ROLE {reader} LOGIN PASSWORD 'r'")
    admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}")
    admin.close()
    ran: list[int] = []
    store = dnb.PostgresStore(f"postgresql://{reader}:r@{pg_server.host}:{pg_server.port}/{dbname}")
    with pytest.raises(dnb.JournalUnavailableError) as err:
        dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(ran.append, 1), None, run_id="read-only")
    assert "write call 0" in str(err.value) and "GRANT" in str(err.value), str(err.value)
    assert ran == []


def test_a_call_made_from_a_new_thread_after_a_server_restart_takes_the_lock_again(pg_server, pg_dsn):
    """The new thread's connection is fresh (nothing failed in it), yet the lease session died with the
    server: its next PENDING must not go out without the run's lock."""
    import threading

    store = dnb.PostgresStore(pg_dsn)
    executed: list[str] = []

    def step(i: int) -> int:
        executed.append(f"A:{i}")
        if i == 1:
            another_process_tries(pg_dsn, "threaded", executed)
        return i

    results: list[Any] = []
    with dnb.LocalRunner(store).context("threaded") as ctx:
        assert ctx.durable_execute(step, 0) == 0
        pg_server.restart()
        worker = threading.Thread(target=lambda: results.append(ctx.durable_execute(step, 1)))
        worker.start()
        worker.join(60)
    assert results == [1]
    assert executed == ["A:0", "A:1", "B: busy"], executed
    # the context's own thread closes the run on a new session (the lease watcher saw the old ones end)
    assert store.run("threaded").status is dnb.RunStatus.COMPLETED


@pytest.mark.parametrize("how", ["restart", "kill -9 the postmaster"])
def test_after_a_server_restart_between_cells_the_next_run_and_read_just_work(pg_server, pg_dsn, how):
    """Every connection of the store died with the server while it sat idle. The first run used to fail on the
    lease session ("the next call reconnects"), the next on the thread's write connection, then each thread's
    read on its own: three failures for one restart. A dead session holds no lock, so the run takes it on a
    new one, and the other connections are renewed before their next statement."""
    import threading

    store = dnb.PostgresStore(pg_dsn)
    runner = dnb.LocalRunner(store)
    runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 1), None, run_id="before")
    other: list[Any] = []
    reader = threading.Thread(target=lambda: other.append(store.runs()))  # a second thread's connection
    reader.start()
    reader.join()
    if how == "restart":
        pg_server.restart()
    else:
        pid = int((pg_server.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:  # the orphaned backends need a moment to leave before a new server may start
            try:
                pg_server.start()
                break
            except RuntimeError:
                assert time.monotonic() < deadline
                time.sleep(0.2)

    assert runner.run(lambda _, ctx: ctx.durable_execute(pow, 2, 5), None, run_id="after") == 32
    reader = threading.Thread(target=lambda: other.append(store.runs()))
    reader.start()
    reader.join()
    assert [r.run_id for r in other[-1]] == ["before", "after"]
    assert store.run("after").status is dnb.RunStatus.COMPLETED and not store.run_is_open("after")


@pytest.mark.parametrize("how", ["restart", "pg_terminate_backend"])
@pytest.mark.parametrize("first", ["runs", "to_pandas", "fork", "delete_run"])
def test_the_first_read_or_write_after_the_stores_idle_sessions_ended_just_works(pg_server, pg_dsn, how, first):
    """A notebook reads the journal (``store.runs()``, a JournalView refresh) after the server restarted or an
    admin ended idle sessions: the first statement went out on the dead session and failed ("terminating
    connection due to administrator command ... the next call reconnects"), though nothing had been sent yet.
    The server says so on the idle socket: the store now sees it and reconnects before the statement."""
    store = dnb.PostgresStore(pg_dsn)
    dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(pow, 2, 3), None, run_id="before")
    if how == "restart":
        pg_server.restart()
    else:
        sql(pg_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        time.sleep(0.2)  # the FATAL message reaches the store's sockets
    do = {"runs": lambda: [r.run_id for r in store.runs()], "calls": lambda: len(store.calls("before")),
          "to_pandas": lambda: len(store.to_pandas()), "run_ids_with_prefix": lambda: store.run_ids_with_prefix("be"),
          "fork": lambda: store.fork("before", at=1, new_run_id="f"), "delete_run": lambda: store.delete_run("before")}
    assert do[first]() == {"runs": ["before"], "calls": 1, "to_pandas": 1, "run_ids_with_prefix": ["before"],
                           "fork": "f", "delete_run": None}[first]
    assert dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(pow, 2, 4), None, run_id="after") == 16
    store.close()


@pytest.mark.parametrize("dsn, dbname, host", [
    ("postgresql:///my%40db", "my@db", None),  # a percent-encoded '@' in the database name: what the fix says
    ("postgresql://h/db?dbname=a@b", "a@b", "h"),  # a query parameter is read as written
    ("postgresql://u@%2Frun%2Fa%40b/db", "db", "/run/a@b"),  # a socket folder with an (encoded) '@'
    ("postgresql://u:p@[::1]:5432/db", "db", "::1"),
    ("postgresql://h1:5432,h2:5433/db", "db", "h1,h2"),
    ("postgresql://%2Fvar%2Frun%2Fpostgresql/db", "db", "/var/run/postgresql"),
    ("postgresql:///db?host=/tmp", "db", "/tmp"),
])
def test_a_valid_url_with_an_at_sign_where_no_password_split_it_is_read(dsn: str, dbname: str,
                                                                        host: str | None) -> None:
    """Only a raw '@' before the query can be the rest of a password: an encoded one is the user's own."""
    from durable_nb.stores.postgres_schema import parse_dsn

    parsed = parse_dsn(dsn)
    assert (parsed.get("dbname"), parsed.get("host")) == (dbname, host)


@pytest.mark.parametrize("dsn", ["postgresql://postgres:Sec@ret9x@h/db", "postgresql://postgres:1234/5678@h/db",
                                 "postgresql://postgres:Sec/ret9x@h/db",
                                 # a unix socket (Cloud SQL's /cloudsql/...): the split host was replaced by
                                 # ?host=, and libpq silently sent 'Sec' as the password
                                 "postgresql://postgres:Sec@ret9x@/db?host=/cloudsql/p:r:i",
                                 "postgresql://postgres:Sec@ret9x@h/db?host=/tmp"])
def test_a_url_split_inside_its_password_is_still_refused_without_a_server(dsn: str) -> None:
    from durable_nb.stores.postgres_schema import parse_dsn

    with pytest.raises(ValueError, match="Percent-encode"):
        parse_dsn(dsn)


def test_an_empty_dsn_is_a_value_error_as_an_empty_sqlite_path_is_and_still_a_type_error() -> None:
    for make in (dnb.SqliteStore, dnb.PostgresStore):
        with pytest.raises(ValueError, match="MemoryStore"):
            make("")
    with pytest.raises(TypeError, match=r"the DSN is empty.*'postgresql://' for libpq's defaults"):
        dnb.PostgresStore("  ")  # libpq would read blanks as "every default" and connect somewhere
    with pytest.raises(TypeError, match="got NoneType None"):
        dnb.PostgresStore(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("dsn", "said"), [
    ("sqlite:///x.db", r"'sqlite:///x.db' is the URL of a SQLite journal.*open_store\(url\).*SqliteStore\(path\)"),
    ("file:///tmp/x.db", r"SQLite journal"),
    ("x.db", r"'x.db' is neither a URL nor key=value pairs.*SqliteStore\(path\)"),
    ("/data/journal.db", r"neither a URL nor key=value pairs.*SqliteStore\(path\)"),
    ("memory://", r"memory store's URL.*MemoryStore\(\)"),
    ("mysql://bob:Zq9Secret@h/db", r"'mysql://bob:\*\*\*@h/db' is a 'mysql' URL, not a PostgreSQL one.*open_store"),
    ("postgressql://bob:Zq9Secret@h/db", r"did you mean 'postgresql://'"),
    ("postgresql+psycopg://bob:Zq9Secret@h/db", r"SQLAlchemy URL: drop the driver suffix"),
    ("jdbc:postgresql://h/db?user=bob&password=Zq9Secret", r"JDBC URL: drop 'jdbc:'"),
    ("postgresql:bob:Zq9Secret@h/db", r"a PostgreSQL URL starts 'postgresql://'"),
    ("bob:Zq9Secret@h/db", r"a URL without its scheme"),
    ("POSTGRESQL://bob:Zq9Secret@h/db", r"lower case.*open_store"),
    ("host=h passwd=Zq9Secret", r"not one of libpq's keywords.*check the spelling"),
])
def test_a_dsn_for_another_store_or_no_dsn_at_all_is_refused_naming_it_and_the_fix_never_the_password(
        dsn: str, said: str) -> None:
    """``PostgresStore("sqlite:///x.db")`` (a path, ``memory://``, ``mysql://``) said "cannot read the DSN: missing;
    percent-encode special characters of a password", which sent the user to a password they never wrote; a
    URL without its scheme, or a misspelt ``passwd=``, showed the password itself."""
    with pytest.raises(ValueError, match=said) as err:
        dnb.PostgresStore(dsn)
    assert "Zq9Secret" not in str(err.value) and "percent-encode" not in str(err.value).split(";")[0]


def test_key_value_pairs_with_a_url_in_a_value_are_read_by_libpq_not_refused_as_another_stores_url() -> None:
    from durable_nb.stores.dsn import refuse_foreign

    refuse_foreign("host=h dbname=db sslrootcert=file:///etc/ca.pem")
    refuse_foreign("  host=h password=a@b:c")
