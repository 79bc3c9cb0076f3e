"""Run untrusted Python (model-written code) in a child process that cannot reach the network or the machine.

    >>> run_python("print(sum(range(10)))").stdout
    '45\\n'
    >>> run_python("import socket; socket.create_connection(('example.com', 80))").error
    'PermissionError: sandbox: socket.getaddrinfo is not allowed'
    >>> run_python("while True: pass", timeout_s=1).timed_out
    True

What the child gets, and why each piece:
- a fresh interpreter with `-I -S` (no user site, no site-packages, no PYTHON* variables, no cwd on sys.path), an
  empty environment and a throwaway working directory: the code sees the standard library only;
- resource limits set before it starts (`resource.setrlimit` in the child): CPU seconds, address space, size of any
  file it writes (stdout and stderr are files, so a print loop is stopped too), open files, no core dumps;
- a CPython audit hook installed before the code runs, which refuses sockets (no network), subprocesses, exec,
  fork, signals to other processes and ctypes (no raw syscalls around the hook); an audit hook cannot be removed
  from Python code;
- a wall-clock timeout on top of the CPU limit (sleeping costs no CPU), after which the process group is killed.

This is a guard against mistakes and reward hacking by a model being trained, not against a determined attacker
with a kernel exploit: run the trainer itself in a container when the prompts are not yours.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

OUTPUT_LIMIT_BYTES = 1 << 20  # per stream; the child is killed (SIGXFSZ) when it writes more
MAX_OPEN_FILES = 64

# Audit events (https://docs.python.org/3/library/audit_events.html) the child may not raise, by prefix.
BLOCKED_EVENTS = (
    "socket.",
    "subprocess.",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "os.setuid",
    "ctypes.",
    "pty.",
    "resource.setrlimit",
    "sys.remote_exec",
)

# The child's first code: read the job, lock the doors, run the program (and the assert tests, if any). A test
# result is printed on the real stdout behind a per-run nonce, so the program cannot forge it by printing.
_BOOT = r"""
import json, sys
job = json.load(open(sys.argv[1]))
blocked = tuple(job["blocked"])
def guard(event, args):
    if event.startswith(blocked):
        raise PermissionError(f"sandbox: {event} is not allowed")
sys.addaudithook(guard)
out = sys.stdout
namespace = {"__name__": "__main__"}
exec(compile(job["program"], "solution.py", "exec"), namespace)
if job["tests"] is not None:
    passed = 0
    for test in job["tests"]:
        try:
            exec(compile(test, "test.py", "exec"), namespace)
            passed += 1
        except BaseException:
            pass
    out.write(f"\n{job['nonce']} {passed}\n")
    out.flush()
"""


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    tests_passed: int | None = None  # assert tests that passed, when tests were given and the run got that far

    @property
    def error(self) -> str | None:
        """The last line of the traceback (`Kind: message`), a timeout note, or None when the run succeeded."""
        if self.timed_out:
            return "timeout"
        if self.returncode == 0:
            return None
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"


def _limits(cpu_s: int, memory_mb: int):
    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_python(
    program: str,
    stdin: str = "",
    tests: list[str] | None = None,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
) -> SandboxResult:
    """Run `program` (Python source) in the sandbox, feeding it `stdin`; then, if given, each assert-style test in
    the program's namespace. `timeout_s` bounds wall time and (rounded up) CPU time; `memory_mb` the address space.
    """
    nonce = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="nf-sandbox-") as tmp:
        work = Path(tmp)
        job = work / "job.json"
        job.write_text(json.dumps({"program": program, "tests": tests, "nonce": nonce, "blocked": BLOCKED_EVENTS}))
        job.chmod(0o400)
        (work / "stdin").write_text(stdin)
        with (
            (work / "stdin").open("rb") as fin,
            (work / "stdout").open("wb") as fout,
            (work / "stderr").open("wb") as ferr,
        ):
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, str(job)],
                stdin=fin,
                stdout=fout,
                stderr=ferr,
                cwd=work,
                env={"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"},
                preexec_fn=_limits(int(timeout_s) + 1, memory_mb),
                start_new_session=True,  # its own process group, killed as a whole
            )
            try:
                proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        stdout = (work / "stdout").read_text(errors="replace")
        stderr = (work / "stderr").read_text(errors="replace")
    passed = None
    if tests is not None and f"\n{nonce} " in stdout:
        stdout, _, tail = stdout.rpartition(f"\n{nonce} ")
        passed = int(tail.split()[0])
    # A CPU-limit kill (SIGXCPU) is a timeout too.
    timed_out = timed_out or proc.returncode == -signal.SIGXCPU
    return SandboxResult(proc.returncode, stdout, stderr, timed_out, passed)
