"""The service launchers never leave a child process behind."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from pathlib import Path

import pytest

from local.run.services import ServiceError, _spawn, _start_azurite, on_free_ports
from local.run.stack import LocalStack


def _sleeper(tmp_path):
    return _spawn("sleeper", ["sleep", "60"], tmp_path / "sleeper.log")


def test_an_interrupted_start_kills_the_child(tmp_path):
    service = _sleeper(tmp_path)

    def interrupted() -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        service.wait_ready(interrupted, timeout=5)
    assert not service.alive


def test_a_start_that_times_out_kills_the_child_and_says_so(tmp_path):
    service = _sleeper(tmp_path)
    with pytest.raises(ServiceError, match="not ready after"):
        service.wait_ready(lambda: False, timeout=0.3)
    assert not service.alive


def test_a_child_that_exits_while_starting_is_reported_with_its_code(tmp_path):
    service = _spawn("quitter", ["sh", "-c", "echo failing; exit 3"], tmp_path / "quitter.log")
    with pytest.raises(ServiceError, match="exited with code 3"):
        service.wait_ready(lambda: False, timeout=10)


def test_azurite_keeps_an_idle_connection_well_past_nodes_five_seconds(azurite):
    """A client reusing a connection just as the server drops it for idleness gets a dropped request; at
    Node's 5 s the tests' own polling would meet that moment by chance (README, known differences)."""
    ports = {"blob": azurite.blob_port, "queue": azurite.queue_port, "table": azurite.table_port}
    requests = {name: f"GET /devstoreaccount1?comp=list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
                for name, port in ports.items()}
    conns = {name: socket.create_connection(("127.0.0.1", port), timeout=10) for name, port in ports.items()}
    try:
        for name, conn in conns.items():
            conn.sendall(requests[name])
            assert _read_response(conn).startswith(b"HTTP/1.1 ")
        deadline = time.monotonic() + 8
        while (left := deadline - time.monotonic()) > 0:  # a server's close makes its socket readable
            readable, _, _ = select.select(list(conns.values()), [], [], left)
            closed = [name for name, conn in conns.items() if conn in readable]
            assert not closed, f"Azurite closed idle connections within 8 s: {closed}"
        for name, conn in conns.items():
            conn.sendall(requests[name])
            assert _read_response(conn).startswith(b"HTTP/1.1 ")
    finally:
        for conn in conns.values():
            conn.close()


def _read_response(conn: socket.socket) -> bytes:
    """One HTTP response's head and body (Content-Length framed, as Azurite's error answers are)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next((line.split(b":", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), b"0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "connection closed inside a response"
        body += chunk
    return head


def test_a_stack_whose_cloud_cannot_start_leaves_no_other_service_running(tmp_path):
    (tmp_path / "cloud").write_text("in the way of the cloud's state directory")
    with pytest.raises(FileExistsError):
        LocalStack.start(tmp_path, with_maildev=True)
    logs = {tmp_path / "azurite" / "azurite.log", tmp_path / "maildev" / "maildev.log"}
    assert all(log.exists() for log in logs), "Azurite and MailDev were started beside the failing cloud"
    deadline = time.monotonic() + 10  # a stopped service's process group may take a moment to exit
    while (running := _processes_writing(logs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running, f"processes of the failed stack still run: {running}"


def _processes_writing(logs: set[Path]) -> list[int]:
    """Pids of the processes that hold one of `logs` open (a service's output goes to its log)."""
    holders = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if int(fd_dir.parent.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if any(Path(os.readlink(fd)) in logs for fd in fd_dir.iterdir()):
                holders.append(int(fd_dir.parent.name))
    return holders


def test_a_port_taken_before_the_service_binds_it_makes_the_service_start_on_other_ports(tmp_path):
    # free_port's port is free only until someone binds it: a parallel test worker's service can take it between
    # the check and Azurite's own bind (seen in CI: Azurite exited with EADDRINUSE and the test failed).
    tried: list[list[int]] = []
    taken: list[socket.socket] = []

    def start(ports: list[int]):
        tried.append(ports)
        if len(tried) == 1:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", ports[0]))  # the blob port, which Azurite binds first
            sock.listen()
            taken.append(sock)
        return _start_azurite(tmp_path / "azurite", ports, True, None)

    try:
        azurite = on_free_ports(3, start)
        try:
            assert len(tried) == 2 and azurite.alive
            assert (azurite.blob_port, azurite.queue_port, azurite.table_port) == tuple(tried[1])
            assert "EADDRINUSE" in (tmp_path / "azurite" / "azurite.log").read_text()
        finally:
            azurite.stop()
    finally:
        for sock in taken:
            sock.close()


def test_a_start_that_fails_for_another_reason_is_not_tried_again():
    tried: list[list[int]] = []

    def start(ports: list[int]):
        tried.append(ports)
        raise ServiceError("azurite exited with code 1 while starting; log tail:\nunknown option --nope")

    with pytest.raises(ServiceError, match="unknown option"):
        on_free_ports(3, start)
    assert len(tried) == 1
