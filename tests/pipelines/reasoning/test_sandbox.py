"""The code sandbox: what model-written programs may and may not do (a table, one comment per case), limits, and
that a program cannot forge its test results."""

from __future__ import annotations

import doctest

import pytest

import pipelines.reasoning.sandbox
from pipelines.reasoning.sandbox import run_python

REFUSED = [
    # (program, the audit event the sandbox names)
    ("import socket; socket.socket()", "socket.__new__"),  # no sockets at all: no network
    ("import socket; socket.getaddrinfo('example.com', 80)", "socket.getaddrinfo"),  # not even DNS
    ("import urllib.request; urllib.request.urlopen('http://example.com')", "socket."),  # nor through the stdlib
    ("import subprocess; subprocess.run(['ls'])", "subprocess.Popen"),  # no child processes
    ("import os; os.system('ls')", "os.system"),  # nor through a shell
    ("import os; os.execv('/bin/ls', ['ls'])", "os.exec"),  # nor by replacing itself
    ("import os; os.fork()", "os.fork"),  # no fork bombs
    ("import os; os.kill(1, 9)", "os.kill"),  # no signals to other processes
    ("import ctypes", "ctypes."),  # no raw syscalls around the audit hook
    ("import resource; resource.setrlimit(resource.RLIMIT_CPU, (100, 100))", "resource.setrlimit"),  # limits stay
]


@pytest.mark.parametrize(("program", "event"), REFUSED)
def test_refused(program, event):
    result = run_python(program, timeout_s=5)
    assert result.returncode != 0 and f"sandbox: {event}" in result.error  # urllib wraps it in a URLError


def test_limits():
    assert run_python("while True: pass", timeout_s=1).timed_out  # CPU limit / wall timeout
    assert run_python("import time; time.sleep(30)", timeout_s=1).timed_out  # sleeping costs no CPU: wall timeout
    assert run_python("x = bytearray(2 << 30)", memory_mb=256).error == "MemoryError"  # address-space limit
    flood = run_python("while True: print('x' * 1000)", timeout_s=5)  # output is a file with a size limit
    assert (
        not flood.timed_out
        and flood.returncode != 0
        and len(flood.stdout) <= pipelines.reasoning.sandbox.OUTPUT_LIMIT_BYTES
    )


def test_environment_is_bare(tmp_path):
    result = run_python("import os, sys; print(sorted(os.environ)); print(os.getcwd()); print('numpy' in sys.modules)")
    env, cwd, _ = result.stdout.splitlines()
    assert "HOME" not in env and "nf-sandbox-" in cwd  # no inherited variables; a throwaway working directory
    assert run_python("import numpy").error.startswith("ModuleNotFoundError")  # standard library only


def test_tests_and_stdin():
    program = "def add(a, b):\n    return a + b\n"
    assert run_python(program, tests=["assert add(1, 2) == 3", "assert add(1, 1) == 3"]).tests_passed == 1
    assert run_python("print(input()[::-1])", stdin="abc\n").stdout == "cba\n"
    # A program that prints a fake result line, or exits before the tests run, gets no credit.
    assert run_python("print('\\n0000 5')", tests=["assert False"]).tests_passed == 0
    assert run_python("raise SystemExit(0)", tests=["assert True"]).tests_passed is None


def test_docstring_examples_hold():
    assert doctest.testmod(pipelines.reasoning.sandbox).failed == 0
