"""The launcher: a service's ports never collide with the local ports of Ray's own connections, and a
test's service ends at once, every process of its session and its temporary folders with it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from serve_app.launcher import PORTS_FROM, end_session, ephemeral_ports, free_port, scratch_of, session_processes


def test_free_ports_lie_between_rays_worker_ports_and_the_kernels_ephemeral_range():
    low, _ = ephemeral_ports()
    ports = {free_port() for _ in range(50)}
    assert all(PORTS_FROM <= port < low for port in ports), sorted(ports)
    assert len(ports) > 40  # drawn at random, so two services started together rarely meet
    with socket.socket() as sock:  # and free: a server can listen on one at once
        port = ports.pop()
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_a_runs_scratch_folders_are_read_from_its_command_lines():
    lines = [["raylet", "--session_dir=/tmp/ray/session_2026-12-05_07-00-00_1_2", "--temp_dir=/tmp/ray"],
             ["gcs_server", "--session-dir=/tmp/ray/session_2026-12-05_07-00-00_1_2"],
             ["python", "-m", "serve_app.cli", "run", "--inside-namespace", "/tmp/sastre-netns-abc123"],
             ["haproxy-forwarding", "-db", "-f", "/tmp/haproxy-serve/ed5ca56d/haproxy.cfg", "-sf", "18478"],
             ["python", "--session_dir=/home/someone", "-f", "/etc/haproxy.cfg"]]  # not a run's: never removed
    assert scratch_of(lines) == {Path("/tmp/ray/session_2026-12-05_07-00-00_1_2"), Path("/tmp/sastre-netns-abc123"),
                                 Path("/tmp/haproxy-serve/ed5ca56d")}


def test_ending_a_session_kills_every_process_in_it_and_removes_its_scratch(tmp_path):
    """A leader, a child that moved to a process group of its own (as Ray's driver does) and a grandchild
    that ignores SIGTERM and SIGINT: all gone at once, with the folder their command lines name."""
    scratch = tmp_path / "sastre-netns-test"
    scratch.mkdir()
    (scratch / "8000.sock").touch()
    tree = ("import os, signal, subprocess, sys, time\n"
            "os.setpgrp()\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)', '--inside-namespace', sys.argv[1]])\n"
            "time.sleep(600)\n")
    leader = subprocess.Popen(["sh", "-c", '"$0" "$@"; sleep 600', sys.executable, "-c", tree, str(scratch)],
                              start_new_session=True)
    deadline = time.monotonic() + 30
    while len(session_processes(leader.pid)) < 3:
        assert time.monotonic() < deadline, session_processes(leader.pid)
        time.sleep(0.05)
    members = set(session_processes(leader.pid))
    assert len({os.getpgid(pid) for pid in members}) == 2  # killpg alone would miss the moved child
    started = time.monotonic()
    end_session(leader.pid)
    assert leader.wait(timeout=5) == -9 and time.monotonic() - started < 5
    assert session_processes(leader.pid) == {} and not scratch.exists()
