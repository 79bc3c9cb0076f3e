"""The output lock on an object store (a lease object), against the S3 server on loopback: a second run on the same
prefix is refused naming the holder, exactly one of many simultaneous runs gets it, the holder renews it, an expired
or dead holder's lease is taken over, and a run that lost its lease does not commit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from pipelines.core import locks, storage
from pipelines.core.artifacts import Artifact, read_manifest
from pipelines.core.locks import LeaseLock, OutputLockedError


def test_second_run_on_an_s3_output_is_refused_naming_the_holder(s3_prefix):
    out = f"{s3_prefix}/docs"
    first = Artifact(out, kind="test", stage="unit", config={"a": 1})
    with first.writing() as prefix:
        storage.write_text("first", storage.join(prefix, "data.txt"))
        holder = storage.read_json(f"{s3_prefix}/.docs.lock")
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        second = Artifact(out, kind="test", stage="unit", config={"a": 2})  # another config: it would wipe the prefix
        with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
            with second.writing():
                pass
        assert storage.read_text(storage.join(prefix, "data.txt")) == "first"  # the holder's work was not touched
    assert read_manifest(out)["config"] == {"a": 1}
    assert not storage.exists(f"{s3_prefix}/.docs.lock")  # released at the end
    with Artifact(out, kind="test", stage="unit", config={"a": 2}).writing():  # and free for the next run
        pass


def test_exactly_one_of_several_simultaneous_runs_gets_the_lease(s3_prefix):
    url, results = f"{s3_prefix}/.out.lock", []
    start = threading.Barrier(6)

    def run():
        lock = LeaseLock(url, "output out", lease_s=30)
        start.wait()
        try:
            results.append(lock.acquire())
        except OutputLockedError as e:
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(6)]
    [t.start() for t in threads], [t.join() for t in threads]
    winners = [r for r in results if isinstance(r, LeaseLock)]
    assert len(winners) == 1 and len(results) == 6
    assert all("is being written by" in str(r) or "another run" in str(r) for r in results if r not in winners)
    assert storage.read_json(url)["owner"] == winners[0].owner
    winners[0].release()
    assert not storage.exists(url)


def test_the_holder_renews_its_lease_and_an_expired_one_is_taken_over(s3_prefix, capsys):
    url = f"{s3_prefix}/.out.lock"
    holder = LeaseLock(url, "output out", lease_s=1.2).acquire()
    time.sleep(2.5)  # twice the lease: only renewals keep it alive
    with pytest.raises(OutputLockedError, match="is being written by"):
        LeaseLock(url, "output out", lease_s=1.2).acquire()
    holder.check()

    # the holder stops renewing (its node froze; a kill would do the same): the lease expires and is taken over
    holder._stop.set(), holder._renewer.join()
    time.sleep(1.5)
    successor = LeaseLock(url, "output out", lease_s=30).acquire()
    assert "took over" in capsys.readouterr().out and storage.read_json(url)["owner"] == successor.owner
    with pytest.raises(OutputLockedError, match="lost the lock"):
        holder.check()  # the frozen run wakes up: it must not commit
    holder.release()  # and releasing leaves the successor's lease alone
    assert storage.read_json(url)["owner"] == successor.owner
    successor.release()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(s3_prefix, capsys):
    url = f"{s3_prefix}/.out.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease = {"owner": "x", "host": socket.gethostname(), "pid": dead.pid, "expires_at": time.time() + 600}
    storage.write_text(json.dumps(lease), url)
    LeaseLock(url, "output out").acquire().release()
    assert "is no longer running" in capsys.readouterr().out
    storage.write_text(json.dumps(lease | {"host": "elsewhere"}), url)  # another host's live lease: refused
    with pytest.raises(OutputLockedError, match="host elsewhere"):
        LeaseLock(url, "output out").acquire()


def test_a_run_that_lost_its_lease_does_not_commit(s3_prefix, monkeypatch):
    monkeypatch.setattr(locks, "LEASE_S", 1.0)
    out = f"{s3_prefix}/docs"
    art = Artifact(out, kind="test", stage="unit", config={"a": 1})
    with pytest.raises(OutputLockedError, match="not committing"):
        with art.writing() as prefix:
            storage.write_text("late", storage.join(prefix, "data.txt"))
            lease = storage.read_json(f"{s3_prefix}/.docs.lock")
            storage.write_text(json.dumps(lease | {"owner": "another run"}), f"{s3_prefix}/.docs.lock")
    assert read_manifest(out) is None


def test_stores_without_conditional_writes_read_their_lease_back(tmp_path):
    """memory:// stands for a store without If-None-Match: write, wait, read back; last writer wins, losers see it."""
    url, results = f"memory://{tmp_path.name}/.out.lock", []

    def run():
        try:
            results.append(LeaseLock(url, "output out", lease_s=30, settle_s=0.3).acquire())
        except OutputLockedError as e:
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    [t.start() for t in threads], [t.join() for t in threads]
    winners = [r for r in results if isinstance(r, LeaseLock)]
    assert len(winners) == 1
    winners[0].release()
    assert not storage.exists(url)
