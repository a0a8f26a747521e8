"""``durable_nb.flink.durable_process``: a durable action inside the user's own PyFlink pipeline."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import _orders
import pytest

import durable_nb as dnb
from durable_nb.flink import FlinkRunner, FlinkSetupError, MapRow, durable_process, environment

pytestmark = pytest.mark.flink


def _parsed(records: list[dict[str, Any]], folder: Path) -> Any:
    """A file of JSON lines in ``folder`` (a test's tmp_path: not left in the temp folder), parsed, in one
    ordered stream (stable seq per key), from a source that rewinds."""
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    fd, path = tempfile.mkstemp(suffix=".jsonl", dir=folder)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    env = environment(parallelism=1)
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), path).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "orders")
    return lines.map(json.loads, output_type=Types.PICKLED_BYTE_ARRAY())


def test_a_source_that_does_not_rewind_with_checkpoints_is_named_when_the_pipeline_is_built(
    flink: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyFlink's from_collection starts again from its first element after a failover while keyed state keeps
    the counts: records already processed came back as new runs (key#1) and ran their side effects again."""
    from pyflink.common import Types

    env = environment(parallelism=1)
    with monkeypatch.context() as patch:  # PyFlink leaves the temp folder of the elements it pickles: in tmp_path
        patch.setattr(tempfile, "tempdir", str(tmp_path))
        lines = env.from_collection([json.dumps(r) for r in _orders.orders(2)], type_info=Types.STRING())
    orders = lines.map(json.loads, output_type=Types.PICKLED_BYTE_ARRAY())
    with pytest.warns(UserWarning, match="'Collection Source' keeps no position in Flink's checkpoints"):
        durable_process(orders, _orders.make_action(tmp_path), key="customer", store=dnb.SqliteStore(tmp_path / "j.db"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a FileSource rewinds: nothing to say
        durable_process(_parsed(_orders.orders(2), tmp_path), _orders.make_action(tmp_path), key="customer",
                        store=dnb.SqliteStore(tmp_path / "j.db"))


def _collect(results: Any) -> list[MapRow]:
    with results.execute_and_collect("orders pipeline") as rows:
        return list(rows)


def _pipeline(records: list[dict[str, Any]], action: Any, journal: Path) -> list[MapRow]:
    """The parsed source, the durable action on 2 slots, and a collect sink."""
    results = durable_process(_parsed(records, journal.parent), action, key="customer", store=dnb.SqliteStore(journal))
    results.set_parallelism(2)
    return _collect(results)


@pytest.mark.timeout(180)
def test_durable_process_gives_local_runner_run_ids_and_replays_on_a_second_pipeline(
    flink: None, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.db"
    action = _orders.make_action(tmp_path)
    records = _orders.orders(30)

    first = _pipeline(records, action, journal)
    work_after_first = (tmp_path / "work.txt").read_text()
    again = _pipeline(records, action, journal)
    local = dnb.LocalRunner(dnb.SqliteStore(journal)).map(action, records, key="customer")

    assert all(isinstance(row, MapRow) for row in first)
    by_run = {row.run_id: row for row in first}
    assert set(by_run) == set(local["run_id"]) == {row.run_id for row in again}
    for run_id, result in zip(local["run_id"], local["result"], strict=True):
        assert by_run[run_id].status is dnb.RunStatus.COMPLETED
        assert by_run[run_id].result == result
    assert (tmp_path / "work.txt").read_text() == work_after_first, "a replay re-ran a durable call"
    assert sum(_orders.ledger_counts(tmp_path).values()) == 30
    # The actions ran in Python worker processes, not in threads of this one (PyFlink's loopback mode, which
    # also leaves PYFLINK_GATEWAY_DISABLED here: a notebook kernel started from this process could not start
    # Flink, and a crashing action would kill the notebook's kernel).
    assert "PYFLINK_GATEWAY_DISABLED" not in os.environ


@pytest.mark.timeout(180)
def test_durable_process_with_concurrency_overlaps_keys_keeps_each_keys_order_and_replays(
    flink: None, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.db"
    action = _orders.make_action(tmp_path, delay=0.05, timed=True)
    n = 42
    records = _orders.orders(n)

    def concurrent() -> list[MapRow]:
        return _collect(durable_process(_parsed(records, tmp_path), action, key="customer",
                                        store=dnb.SqliteStore(journal), concurrency=4, parallelism=2))

    first = concurrent()
    _orders.check_concurrent_and_in_key_order(tmp_path, n)
    work = (tmp_path / "work.txt").read_text()
    again = concurrent()
    local = dnb.LocalRunner(dnb.SqliteStore(journal)).map(action, records, key="customer")

    assert {row.run_id for row in first} == {row.run_id for row in again} == set(local["run_id"])
    by_run = {row.run_id: row.result for row in first}
    assert [by_run[run_id] for run_id in local["run_id"]] == list(local["result"])
    assert (tmp_path / "work.txt").read_text() == work, "a replay re-ran a durable call"
    assert set(_orders.ledger_counts(tmp_path).values()) == {1} and len(_orders.ledger_counts(tmp_path)) == n


def test_a_parallelism_set_on_the_returned_concurrent_stream_alone_is_refused_at_build(
    flink: None, tmp_path: Path
) -> None:
    """Two chained operators: another parallelism on the second would split a key's records between instances."""
    results = durable_process(_parsed(_orders.orders(3), tmp_path), _orders.make_action(tmp_path), key="customer",
                              store=dnb.SqliteStore(tmp_path / "journal.db"), concurrency=4)
    results.set_parallelism(2)
    with pytest.raises(Exception, match="Forward partitioning does not allow change of parallelism"):
        _collect(results)
    assert not (tmp_path / "ledger.txt").read_text(), "nothing ran"


@pytest.mark.parametrize("options", [{"concurrency": 0}, {"concurrency": "4"}, {"parallelism": 0},
                                     {"parallelism": 1.5}])
def test_durable_process_refuses_a_bad_concurrency_or_parallelism_before_building_anything(
    flink: None, tmp_path: Path, options: dict[str, Any]
) -> None:
    name = next(iter(options))
    with pytest.raises(ValueError, match=f"{name} must be an int >= 1"):
        durable_process(_parsed([], tmp_path), _orders.make_action(tmp_path), key="customer",
                        store=dnb.SqliteStore(tmp_path / "journal.db"), **options)


def test_a_sqlite_journal_for_a_cluster_on_another_machine_is_refused_naming_postgresql(
    flink: None, tmp_path: Path
) -> None:
    with pytest.raises(FlinkSetupError, match="PostgreSQL") as refused:
        FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"), jobmanager="flink.example.com:8081")
    assert "network filesystem" in str(refused.value)
    assert "shared filesystem" not in str(refused.value) and "every TaskManager sees" not in str(refused.value)


def test_a_sqlite_journal_for_a_pipeline_submitted_to_another_machine_is_refused_when_it_is_built(
    flink: None, tmp_path: Path
) -> None:
    """FlinkRunner refused it from its jobmanager=; durable_process on an environment submitting to another
    host built the job, whose workers there then failed (or journaled into a network share's SQLite file)."""
    from pyflink.common import Configuration

    stream = _parsed(_orders.orders(2), tmp_path)
    remote = Configuration()
    remote.set_string("execution.target", "remote")
    remote.set_string("rest.address", "flink.example.com")
    stream.get_execution_environment().configure(remote)  # what environment(jobmanager=...) sets
    with pytest.raises(FlinkSetupError, match="flink.example.com runs on another machine.*PostgreSQL"):
        durable_process(stream, _orders.make_action(tmp_path), key="customer", store=tmp_path / "journal.db")
    remote.set_string("rest.address", "127.0.0.1")  # a cluster on this machine shares its disk
    stream.get_execution_environment().configure(remote)
    durable_process(stream, _orders.make_action(tmp_path), key="customer", store=tmp_path / "journal.db")


def test_an_inject_crash_around_the_pipeline_says_it_reaches_no_worker_when_it_is_built(
    flink: None, tmp_path: Path
) -> None:
    """The pipeline's calls run in Flink's worker processes at env.execute(): the block crashed nothing, silently."""
    with dnb.inject_crash(call="x.charge"), pytest.warns(UserWarning, match="durable_process runs the actions in "
                                                                           "Flink worker processes"):
        durable_process(_parsed(_orders.orders(2), tmp_path), _orders.make_action(tmp_path), key="customer",
                        store=dnb.SqliteStore(tmp_path / "journal.db"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no block active: nothing to say
        durable_process(_parsed(_orders.orders(2), tmp_path), _orders.make_action(tmp_path), key="customer",
                        store=dnb.SqliteStore(tmp_path / "journal.db"))


def test_this_machines_own_interface_address_is_this_machine() -> None:
    """A cluster addressed by this machine's LAN address (its rest.address) was refused a SQLite journal as being
    on another machine."""
    import psutil

    from durable_nb.runners.flink_env import is_this_machine

    own = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family.name == "AF_INET"]
    assert own and all(is_this_machine(address) for address in own)
    assert is_this_machine("0.0.0.0")  # the unspecified address reaches this machine
    assert not is_this_machine("flink.example.com") and ("203.0.113.7" in own or not is_this_machine("203.0.113.7"))


def test_this_machines_link_local_address_with_its_scope_and_its_name_in_capitals_are_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """psutil lists an IPv6 link-local address as "fe80::...%eth0": that exact text (what a user copies from
    ``ip addr``) was not this machine; nor was the host name in other letter case (names are case-insensitive)."""
    import socket
    from types import SimpleNamespace

    import psutil

    from durable_nb.runners.flink_env import is_this_machine

    addrs = {"eth0": [SimpleNamespace(address="fe80::fc:ff:fe00:1%eth0"), SimpleNamespace(address="02:fc:00:00:00:01")]}
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: addrs)
    assert is_this_machine("fe80::fc:ff:fe00:1%eth0") and is_this_machine("fe80::fc:ff:fe00:1")
    assert not is_this_machine("fe80::fc:ff:fe00:2%eth0")
    assert is_this_machine("LOCALHOST") and is_this_machine(socket.gethostname().upper())
    assert not is_this_machine("") and not is_this_machine("not a host%eth0")


def test_a_remote_target_in_other_letter_case_is_still_a_cluster_on_another_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flink picks its remote executor for execution.target "Remote" too (equalsIgnoreCase): such a pipeline
    reached the other machine while a SQLite journal for it was not refused."""
    from durable_nb.runners import compat
    from durable_nb.runners.flink_env import remote_host

    for target in ("remote", "Remote", "REMOTE"):
        options = {"execution.target": target, "rest.address": "flink.example.com"}
        monkeypatch.setattr(compat, "configured", lambda _env, key, options=options: options.get(key))
        assert remote_host(object()) == "flink.example.com"
    monkeypatch.setattr(compat, "configured", lambda _env, key: {"execution.target": "local"}.get(key))
    assert remote_host(object()) is None


def test_the_web_ui_address_of_a_cluster_on_this_machine_is_this_machine(flink: None, tmp_path: Path) -> None:
    """"http://localhost:8081" (what Flink's web UI shows) was read as the host "http://localhost": a SQLite
    journal was refused as being on another machine than a cluster on this one."""
    runner = FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"), jobmanager="http://localhost:8081/")
    assert runner._options.address == ("localhost", 8081)
    with pytest.raises(FlinkSetupError, match="flink.example.com runs on another machine"):
        FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"), jobmanager="http://flink.example.com:8081")
    for wrong in ("https://localhost:8081", "localhost:99999", "localhost", ""):  # "": an unset variable
        with pytest.raises(ValueError, match="jobmanager must be 'host:port'"):
            FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"), jobmanager=wrong)



def test_a_runner_option_of_the_wrong_type_is_refused_naming_it(flink: None, tmp_path: Path) -> None:
    """``strict="no"`` read as true and ``checkpoint_interval_ms="500"`` failed with a bare str < int TypeError."""
    store = dnb.SqliteStore(tmp_path / "journal.db")
    with pytest.raises(TypeError, match="strict must be True or False"):
        FlinkRunner(store, strict="no")
    with pytest.raises(ValueError, match="checkpoint_interval_ms must be an int >= 1"):
        FlinkRunner(store, checkpoint_interval_ms="500")
    with pytest.raises(TypeError, match="jobmanager must be 'host:port' \\(a str\\)"):
        FlinkRunner(store, jobmanager=8081)
    with pytest.raises(TypeError, match="strict must be True or False"):
        durable_process(_parsed([], tmp_path), _orders.make_action(tmp_path), key="customer", store=store, strict="no")


class _HeldClientError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.client_lock = __import__("threading").Lock()  # cannot be pickled


def _declines(record: dict[str, Any], ctx: dnb.RunnerContext) -> Any:
    """Orders 0 and 1 return a lock and a plain value; the others raise an exception holding a lock."""
    if record["id"] < 2:
        return __import__("threading").Lock() if record["id"] == 0 else record["id"]
    raise _HeldClientError(f"declined {record['id']}")


@pytest.mark.timeout(180)
def test_a_row_whose_exception_or_result_holds_a_lock_crosses_to_another_operator(flink: None, tmp_path: Path) -> None:
    """PyFlink pickles rows between operators that are not chained (here a rebalance): the row's
    exception goes as the journal keeps it (class and args; the lock left out), and a result that
    cannot be pickled is a FAILED row saying why (FlinkRunner's rule), neither failing the job."""
    from pyflink.common import Types

    records = _orders.orders(5)
    results = durable_process(_parsed(records, tmp_path), _declines, key="customer",
                              store=dnb.SqliteStore(tmp_path / "j.db"))
    rows = sorted(_collect(results.rebalance().map(lambda row: row, output_type=Types.PICKLED_BYTE_ARRAY())),
                  key=lambda row: row.key)
    assert [row.status.value for row in rows] == ["FAILED", "COMPLETED", "FAILED", "FAILED", "FAILED"]
    assert rows[0].result is None and "result (lock) cannot be pickled to return it from Flink" in rows[0].error
    assert rows[1].result == 1
    assert all(type(row.exception).__name__ == "_HeldClientError" for row in rows[2:])
    assert [row.error for row in rows[2:]] == [f"_HeldClientError: declined {r['id']}" for r in records[2:]]


def test_an_action_or_key_function_that_cannot_be_pickled_is_named_when_the_pipeline_is_built(
    flink: None, tmp_path: Path
) -> None:
    """PyFlink pickles them itself while building the graph; its bare "cannot pickle '_thread.lock' object"
    named neither the function nor the fix."""
    import threading

    lock = threading.Lock()

    def locked_action(order: Any, ctx: Any) -> Any:
        with lock:
            return order

    def locked_key(order: Any) -> Any:
        with lock:
            return order["customer"]

    store = dnb.SqliteStore(tmp_path / "j.db")
    with pytest.raises(TypeError, match=r"durable_process: the action '.*locked_action' cannot be pickled.*lock"):
        durable_process(_parsed(_orders.orders(2), tmp_path), locked_action, key="customer", store=store)
    with pytest.raises(TypeError, match=r"durable_process: the key function '.*locked_key' cannot be pickled"):
        durable_process(_parsed(_orders.orders(2), tmp_path), _orders.make_action(tmp_path), key=locked_key,
                        store=store)


def test_a_name_resolving_to_this_machine_is_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """An alias of this machine in /etc/hosts (``127.0.0.1 runsc``), ``[::1]`` as a URL brackets it, and an
    IPv4-mapped loopback were "another machine": FlinkRunner refused a SQLite journal for a cluster on this one."""
    import socket

    from durable_nb.runners.flink_env import is_this_machine

    table = {"flink-local": "127.0.1.1", "flink-remote": "203.0.113.7"}

    def lookup(name: str, *args: object) -> list[tuple[object, ...]]:
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[name], 0))]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    assert is_this_machine("flink-local") and not is_this_machine("flink-remote")
    assert not is_this_machine("flink.example.com")  # does not resolve: no name of this machine
    assert is_this_machine("[::1]") and is_this_machine("::ffff:127.0.0.1")


def _customer_selector() -> Any:
    """A PyFlink ``KeySelector`` (what ``key_by`` takes) keying orders by customer; built lazily (pyflink)."""
    from pyflink.datastream.functions import KeySelector

    class ByCustomer(KeySelector):  # type: ignore[misc]
        def get_key(self, value: Any) -> Any:
            return value["customer"]

    return ByCustomer()


@pytest.mark.timeout(180)
def test_a_pyflink_key_selector_keys_each_record_by_its_get_key(flink: None, tmp_path: Path) -> None:
    """key_by takes a KeySelector, so a PyFlink user passes one: it is not callable and was read as a field
    name, and the job failed with "a record has no field <ByCustomer object>"."""
    journal = tmp_path / "journal.db"
    action = _orders.make_action(tmp_path)
    records = _orders.orders(4)
    rows = _collect(durable_process(_parsed(records, tmp_path), action, key=_customer_selector(),
                                    store=dnb.SqliteStore(journal)))
    local = dnb.LocalRunner(dnb.SqliteStore(journal)).map(action, records, key="customer")
    assert {row.run_id for row in rows} == set(local["run_id"])
    assert {row.key for row in rows} == {r["customer"] for r in records}
    assert all(row.status is dnb.RunStatus.COMPLETED for row in rows)
    assert sum(_orders.ledger_counts(tmp_path).values()) == 4, "the local map replayed the pipeline's runs"


def test_a_postgresql_journal_on_loopback_for_a_cluster_on_another_machine_is_refused(
    flink: None, pg_dsn: str
) -> None:
    """Workers reopen the store from its DSN on their machine, where 127.0.0.1 is not the notebook's database:
    a SQLite journal was refused for such a cluster, this one failed every task after Flink's restarts."""
    store = dnb.PostgresStore(pg_dsn)
    try:
        with pytest.raises(FlinkSetupError, match=r"flink.example.com runs on another machine.*db-host") as refused:
            FlinkRunner(store, jobmanager="flink.example.com:8081")
        assert store.target.host in str(refused.value)
        FlinkRunner(store, jobmanager="127.0.0.1:8081")  # a cluster on this machine reaches it
    finally:
        store.close()


def test_a_key_naming_a_field_a_pyflink_row_lacks_says_so_with_its_fields() -> None:
    """A Row without the field raised a bare ``ValueError: customer`` (and one without names
    ``AttributeError: _fields``), failing the job with neither the key nor the record named."""
    from pyflink.common import Row

    def order_id(row: Any, ctx: Any) -> Any:
        return row["id"]

    runner = dnb.LocalRunner(dnb.MemoryStore())  # the same key lookup the Flink workers make
    with pytest.raises(KeyError, match=r"key='customer'.*has no field 'customer' \(its fields: id, cust\)"):
        runner.map(order_id, [Row(id=1, cust="c1")], key="customer")
    with pytest.raises(KeyError, match=r"has no field 'customer'.*Row\(1, 'c1'\)"):
        runner.map(order_id, [Row(1, "c1")], key="customer")
    assert list(runner.map(order_id, [Row(id=7, cust="c1")], key="cust")["result"]) == [7]


def test_a_postgresql_journal_reached_by_hostaddr_is_judged_by_that_address() -> None:
    """libpq connects to ``hostaddr`` when it is given (``host`` then only names the server for TLS and auth):
    ``hostaddr=10.0.0.5`` alone was read as ``localhost`` and refused for a cluster on another machine, and
    ``host=db.example.com hostaddr=127.0.0.1``, which each TaskManager reaches as itself, was let through."""
    from durable_nb.runners.flink_env import _machine_local_db_host
    from durable_nb.stores.postgres_schema import Target

    def seen_from_workers(dsn: str) -> str | None:
        store = object.__new__(dnb.PostgresStore)  # the DSN alone decides: no server needed
        store.dsn = dsn
        store.target = Target.of(dict(part.split("=", 1) for part in dsn.split()))
        return _machine_local_db_host(store)

    assert seen_from_workers("hostaddr=10.0.0.5 dbname=journal") is None
    assert seen_from_workers("host=db.example.com hostaddr=10.0.0.5 dbname=journal") is None
    assert seen_from_workers("host=db.example.com hostaddr=127.0.0.1 dbname=journal") == "127.0.0.1"
    assert seen_from_workers("host=db1.example.com,db2.example.com hostaddr=10.0.0.5, dbname=journal") is None
    assert seen_from_workers("host=db1.example.com,localhost hostaddr=10.0.0.5, dbname=journal") == "localhost"
    assert seen_from_workers("host=localhost dbname=journal") == "localhost"
    assert seen_from_workers("host=db.example.com dbname=journal") is None
