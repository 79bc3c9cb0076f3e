"""An exclusive lock on an object store (`s3://`, `gs://`), where there is no flock and no O_EXCL: a lease object.

    lock = LeaseLock("s3://bucket/runs/.quality.lock", what="output s3://bucket/runs/quality")
    lock.acquire()   # OutputLockedError naming the holder when another run holds a live lease
    ...              # a daemon thread renews the lease every lease_s / 4 seconds
    lock.check()     # before committing: raises OutputLockedError if the lease was lost to another run
    lock.release()

The lease is a small JSON object {owner, host, pid, started_at, expires_at (unix seconds), lease_s}.

S3 (and S3-compatible servers that implement conditional writes): the lease is created with a conditional PUT
(`If-None-Match: *`), so of two runs starting at once exactly one gets it. A lease past its `expires_at` is stale
(its run died without releasing it: kill -9, a lost node); it is replaced with a PUT conditional on the ETag that was
read (`If-Match`), so of two runs taking it over exactly one wins. The holder renews with `If-Match` on its own last
ETag: a renewal that fails means another run took the lease over (this run was paused past its expiry), and `check`
raises instead of letting it commit over the other run's output.

Other stores: write the lease if none is there, wait `settle_s`, and read it back; the run whose owner id is in the
object holds it (last writer wins, and every loser sees it is not its own). Renewal re-reads before it rewrites.

A lease held by a dead process on this host is taken over at once, as the local lock does (artifacts.acquire_lock).
Expiry compares the holder's clock with the reader's: hosts must agree on the time to well within `lease_s`
(NTP does; the default 120 s is far above usual skew).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pipelines.core import storage

log = logging.getLogger(__name__)
LEASE_S = 120.0  # a crashed run's output is free again this long after its last renewal


class OutputLockedError(RuntimeError):
    """Another live run is writing the same output."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class LeaseLock:
    """One lease object at `url`; see the module docstring."""

    def __init__(self, url: str, what: str, lease_s: float | None = None, settle_s: float = 1.0):
        self.url, self.what = url, what
        self.lease_s = float(lease_s if lease_s is not None else LEASE_S)
        self.settle_s = settle_s
        self.fs, self.key = storage.filesystem(url)
        self.conditional = hasattr(self.fs, "call_s3")  # s3fs: If-None-Match / If-Match on PUT
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")

    def _body(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": self._started_at,
                "expires_at": round(time.time() + self.lease_s, 3),
                "lease_s": self.lease_s,
            }
        ).encode()

    # --- the store's primitives -----------------------------------------------------------------------------------

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(lease, ETag) as they are now; (None, None) when there is no lease."""
        for _ in range(5):
            if not self.conditional:
                self.fs.invalidate_cache(self.key)  # a listing cached earlier must not hide or show a lease
            before = self._etag()
            if before is None if self.conditional else not self.fs.exists(self.key):
                return None, None
            try:
                data = self.fs.cat_file(self.key)
            except FileNotFoundError:
                return None, None
            if self._etag() == before:  # not replaced while it was read
                try:
                    return json.loads(data), before
                except ValueError:
                    return {}, before  # a torn or foreign object: no expiry, treated as expired below
        raise OutputLockedError(f"{self.what}: the lock {self.url} keeps changing; another run is taking it")

    def _etag(self) -> str | None:
        if not self.conditional:
            return None
        bucket, key, _ = self.fs.split_path(self.key)
        try:
            return self.fs.call_s3("head_object", Bucket=bucket, Key=key)["ETag"]
        except FileNotFoundError:
            return None

    def _put(self, if_match: str | None = None) -> bool:
        """Write our lease: create it (`if_match` None) or replace the version `if_match`. False if the condition
        failed (someone else's lease is there now)."""
        body = self._body()
        if not self.conditional:
            self.fs.pipe_file(self.key, body)
            return True
        bucket, key, _ = self.fs.split_path(self.key)
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **condition)
        except (FileExistsError, FileNotFoundError):  # s3fs: 412 PreconditionFailed, 404 (If-Match, key gone)
            return False
        except OSError as e:  # older s3fs: 412 as OSError(EINVAL)
            if "precondition" in str(e).lower().replace("-", ""):
                return False
            raise
        self.etag = out["ETag"]
        return True

    # --- the protocol -------------------------------------------------------------------------------------------

    def acquire(self) -> LeaseLock:
        for _ in range(5):
            holder, etag = self._read()
            if holder is None:
                if self._create():
                    break
                continue
            if not self._stale(holder):
                raise OutputLockedError(self._held_message(holder))
            if self._take_over(holder, etag):
                log.warning("[lock] took over %s from %s", self.url, self._who(holder))
                print(f"[lock] took over {self.url}: {self._who(holder)} {self._why_stale(holder)}")
                break
        else:
            raise OutputLockedError(f"{self.what}: could not take the lock {self.url}; another run is starting")
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease {self.url}", daemon=True)
        self._renewer.start()
        return self

    def _create(self) -> bool:
        if self.conditional:
            return self._put()
        self._put()
        time.sleep(self.settle_s)  # let a concurrent writer's PUT land, then see whose lease is there
        holder, _ = self._read()
        return bool(holder) and holder.get("owner") == self.owner

    def _take_over(self, holder: dict[str, Any], etag: str | None) -> bool:
        if self.conditional:
            return self._put(if_match=etag)
        storage.remove(self.url)
        return self._create()

    def _stale(self, holder: dict[str, Any]) -> bool:
        expires = holder.get("expires_at")
        if not isinstance(expires, int | float) or expires < time.time():
            return True
        pid = holder.get("pid")
        return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)

    def _why_stale(self, holder: dict[str, Any]) -> str:
        if holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid", -1)):
            return "is no longer running"
        return f"let its lease expire at {holder.get('expires_at', '?')} (no renewal for {self.lease_s:g} s)"

    @staticmethod
    def _who(holder: dict[str, Any]) -> str:
        return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (owner {holder.get('owner', '?')})"

    def _held_message(self, holder: dict[str, Any]) -> str:
        left = holder["expires_at"] - time.time()
        return (
            f"{self.what} is being written by {self._who(holder)} since {holder.get('started_at', '?')} "
            f"(lock {self.url}, lease renewed until {left:.0f} s from now). Wait for that run to finish; if it is "
            f"gone, its lease expires by itself, or delete {self.url} and rerun."
        )

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self._renew()
            except Exception as e:  # a store hiccup: try again at the next beat; the lease still has 3/4 to run
                log.warning("[lock] could not renew %s: %s", self.url, e)
            if self.lost:
                log.error("[lock] %s", self.lost)
                return

    def _renew(self) -> None:
        if self.conditional:
            if not self._put(if_match=self.etag):
                holder, _ = self._read()
                self.lost = f"lost the lock {self.url} to {self._who(holder or {})}"
            return
        holder, _ = self._read()
        if not holder or holder.get("owner") != self.owner:
            self.lost = f"lost the lock {self.url} to {self._who(holder or {})}"
            return
        self._put()

    def check(self) -> None:
        """Raise OutputLockedError if the lease was lost (another run took it over after it expired)."""
        if not self.lost:
            holder, _ = self._read()
            if not holder or holder.get("owner") != self.owner:
                self.lost = f"lost the lock {self.url} to {self._who(holder or {})}"
        if self.lost:
            raise OutputLockedError(f"{self.what}: {self.lost}; not committing over that run's output")

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            holder, etag = self._read()
            if not holder or holder.get("owner") != self.owner:
                return
            if self.conditional:  # only the version we wrote: never a lease another run took over meanwhile
                bucket, key, _ = self.fs.split_path(self.key)
                self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
            else:
                storage.remove(self.url)
        except OSError as e:
            log.warning("[lock] could not release %s (%s); it expires in %g s", self.url, e, self.lease_s)
