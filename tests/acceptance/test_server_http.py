"""Strict HTTP/1.1 (RFC 9112) in `fizz serve`, tried as a hostile client would.

Every malformed request gets a JSON error and a close (HTTP/0.9: a plain close), never a
traceback, never a second request smuggled out of the first one's body.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import serving
from helpers import query
from serving import ServerProcess, raw, responses

serve = serving.serve
shared = serving.shared
Serve = serving.Serve

DELETE_1 = b"DELETE /tasks/1 HTTP/1.1\r\nHost: x\r\n\r\n"


def one_answer(base: str, data: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    """Send `data`; exactly one answer must come back, then the close."""
    answers = responses(raw(base, data))
    assert len(answers) == 1, answers
    status, headers, body = answers[0]
    assert headers["content-type"] == "application/json"
    return status, headers, json.loads(body)


# ------------------------------------------------------------------ request smuggling


@pytest.mark.parametrize(("head", "message"), [
    (b"POST /tasks HTTP/1.1\r\nHost: x\r\nX-Broken\r\nContent-Length: %d\r\n",
     "header line without a colon: 'X-Broken': use Name: value"),
    (b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: 0\r\n",
     "Content-Length is given more than once: give it once"),
    (b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: %d\r\n",
     "Content-Length is given more than once: give it once"),
    (b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length : %d\r\n",
     "whitespace before the colon in header 'Content-Length': use Name: value"),
    (b"POST /tasks HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n Content-Length: %d\r\n",
     "obsolete line folding"),
    (b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: gzip\r\n",
     "unsupported Transfer-Encoding 'gzip'"),
    (b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\nX-A: b\r\n",
     "header lines must end with CRLF"),
    (b"POST /tasks HTTP/1.1\r\nHost: x\r\nX-A: b\rContent-Length: %d\r\n",
     "control character in the value of header X-A"),
])
def test_no_second_request_is_smuggled_in_a_body(serve: Serve, database: str, head: bytes,
                                                 message: str) -> None:
    """The issue's 'a header line without a colon, before Content-Length' (the body was
    answered as a second request) and 'two Content-Length headers' (a smuggled DELETE ran)."""
    base = serve().base
    query(database, "INSERT INTO tasks (tasktype, status, time) VALUES ('Fizz', 'Waiting', "
                    "now())")
    body = b'{"type": "Fizz", "time": "2023-03-28T11:59:59Z"}'
    smuggled = body + DELETE_1
    length = len(smuggled)
    data = (head.replace(b"%d", str(length).encode(), 1).replace(b"%d", b"2", 1)
            + b"Content-Type: application/json\r\n\r\n" + smuggled)
    status, headers, payload = one_answer(base, data)
    assert (status, headers["connection"]) == (400, "close")
    assert payload["error"].startswith(message), payload
    assert query(database, "SELECT count(*) FROM tasks") == [(1,)]  # task 1 is still there


def test_a_body_of_the_declared_length_leaves_the_next_request_intact(
        serve: Serve, database: str) -> None:
    base = serve().base
    body = b'{"type": "Fizz", "time": "2023-03-28T11:59:59Z"}'
    pipelined = (b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body)) * 2
    pipelined += b"GET /tasks/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answers = responses(raw(base, pipelined))
    assert [a[0] for a in answers] == [201, 201, 200]
    assert [json.loads(a[2]).get("id") for a in answers] == [1, 2, 2]


@pytest.mark.parametrize("length", ["²", "٣", "+5", "-5", "5, 5", "0x10", "1e3", " ",
                                    "1" * 19, "9" * 5000])
def test_content_length_is_1_to_18_ascii_digits(shared: ServerProcess, length: str) -> None:
    data = (b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + length.encode() + b"\r\n\r\n{}")
    if len(length) > 60000:
        pytest.fail("keep the test line under the header limit")
    status, headers, payload = one_answer(shared.base, data)
    assert (status, headers["connection"]) == (400, "close")
    assert payload["error"].startswith("invalid Content-Length"), payload


def test_an_18_digit_content_length_is_a_413(shared: ServerProcess) -> None:
    status, _, payload = one_answer(shared.base, b"POST /tasks HTTP/1.1\r\nHost: x\r\n"
                                                 b"Content-Length: 999999999999999999\r\n\r\n")
    assert status == 413 and payload["error"].startswith("the body is 999999999999999999 bytes")


@pytest.mark.parametrize(("coding", "status"), [
    ("chunked", 411), ("gzip, chunked", 411), ("gzip", 400), ("identity", 400),
    ("chunked, gzip", 400),
])
def test_transfer_encodings_are_refused(shared: ServerProcess, coding: str,
                                        status: int) -> None:
    data = (b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: " + coding.encode() + b"\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    got, headers, _ = one_answer(shared.base, data)
    assert (got, headers["connection"]) == (status, "close")


# ------------------------------------------------------------------ request lines


@pytest.mark.parametrize(("line", "status", "message"), [
    (b"GARBAGE", 400, "malformed request line 'GARBAGE'"),
    (b"GET / HTTP/9.9", 505, "HTTP version HTTP/9.9 is not supported"),
    (b"GET / HTTP/2.0", 505, "HTTP version HTTP/2.0 is not supported"),
    (b"GET / http/1.1", 400, "invalid HTTP version 'http/1.1'"),
    (b"GET / HTTP/1.10", 400, "invalid HTTP version"),
    (b"GET /tasks\t/1 HTTP/1.1", 400, "invalid request target"),
    (b"GET /t\xc3\xa4sks HTTP/1.1", 400, "invalid request target"),
    (b"GET  /tasks HTTP/1.1", 400, "malformed request line"),
    (b"GET /tasks HTTP/1.1 ", 400, "malformed request line"),
    (b"G(T /tasks HTTP/1.1", 400, "invalid method 'G(T'"),
    (b"GET tasks HTTP/1.1", 400, "invalid request target 'tasks'"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1", 414, "request line longer than 8192 bytes"),
    (b"\x16\x03\x01 hello there", 400, "invalid method"),
])
def test_bad_request_lines(shared: ServerProcess, line: bytes, status: int,
                           message: str) -> None:
    got, headers, payload = one_answer(shared.base, line + b"\r\nHost: x\r\n\r\n")
    assert (got, headers["connection"]) == (status, "close")
    assert payload["error"].startswith(message), payload


def test_a_request_line_ending_in_a_bare_lf(shared: ServerProcess) -> None:
    status, _, payload = one_answer(shared.base, b"GET /healthz HTTP/1.1\nHost: x\n\n")
    assert status == 400 and "bare LF" in payload["error"]


def test_hundreds_of_malformed_requests_leave_no_traceback(shared: ServerProcess) -> None:
    """The issue saw 250 tracebacks in one slow-client run; the shared server's stderr is
    checked for tracebacks when the module ends."""
    bad = [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /a\tb HTTP/1.1\r\n\r\n",
           b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"\r\n\r\n\r\n\r\n",
           b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n",
           b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n"]
    for i in range(250):
        answer = raw(shared.base, bad[i % len(bad)], timeout=5, done=True)
        assert not answer.startswith(b"HTTP/1.1 5") or answer.startswith(b"HTTP/1.1 505 ")
    assert "Traceback" not in shared.log()


def test_http_0_9_gets_a_plain_close(shared: ServerProcess) -> None:
    started = time.monotonic()
    assert raw(shared.base, b"GET /tasks\r\n", timeout=5) == b""
    assert time.monotonic() - started < 2


def test_an_empty_line_before_the_request_line_is_ignored(shared: ServerProcess) -> None:
    answers = responses(raw(shared.base, b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n"
                                         b"Connection: close\r\n\r\n"))
    assert [a[0] for a in answers] == [200]


# ------------------------------------------------------------------ header sections


@pytest.mark.parametrize(("headers", "status", "message"), [
    (b"", 400, "missing Host header"),
    (b"Host: a\r\nHost: b\r\n", 400, "Host is given more than once"),
    (b"Host: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(80)), 431,
     "more than 64 header lines"),
    (b"Host: x\r\nX-Big: " + b"y" * 70000 + b"\r\n", 431, "header line longer than 65536"),
    (b"Host: x\r\n" + b"X-Big: " + b"y" * 20000 + b"\r\n" + b"X-Big2: " + b"y" * 50000
     + b"\r\n", 431, "header section larger than 65536 bytes"),
    (b"Host: x\r\nX-A\x01: b\r\n", 400, "invalid header name"),
    (b"Host: x\r\nX-A: b\x00c\r\n", 400, "control character"),
    (b" Host: x\r\n", 400, "obsolete line folding"),
])
def test_bad_header_sections(shared: ServerProcess, headers: bytes, status: int,
                             message: str) -> None:
    got, response_headers, payload = one_answer(
        shared.base, b"GET /healthz HTTP/1.1\r\n" + headers + b"\r\n")
    assert (got, response_headers["connection"]) == (status, "close")
    assert payload["error"].startswith(message), payload


# ------------------------------------------------------------------ versions, methods, forms


def test_http_1_0_is_answered_and_closed_unless_kept_alive(shared: ServerProcess) -> None:
    answers = responses(raw(shared.base, b"GET /healthz HTTP/1.0\r\n\r\n"))
    assert [(a[0], a[1]["connection"]) for a in answers] == [(200, "close")]
    kept = raw(shared.base, b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                            b"GET /healthz HTTP/1.0\r\n\r\n")
    answers = responses(kept)
    assert [(a[0], a[1]["connection"]) for a in answers] == [(200, "keep-alive"),
                                                             (200, "close")]


def test_http_1_0_lists_are_sent_without_chunks(serve: Serve, database: str) -> None:
    query(database, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                    "now() FROM generate_series(1, 2500)")
    data = raw(serve().base, b"GET /tasks HTTP/1.0\r\n\r\n", timeout=10)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert [t["id"] for t in json.loads(body)] == list(range(1, 2501))


def test_absolute_form_targets_are_accepted(shared: ServerProcess) -> None:
    answers = responses(raw(shared.base, b"GET http://localhost/healthz HTTP/1.1\r\n"
                                         b"Host: localhost\r\nConnection: close\r\n\r\n"))
    assert [a[0] for a in answers] == [200]
    status, _, payload = one_answer(shared.base, b"GET * HTTP/1.1\r\nHost: x\r\n"
                                                 b"Connection: close\r\n\r\n")
    assert (status, payload) == (404, {"error": "no such resource: *"})


def test_expect_100_continue(serve: Serve) -> None:
    base = serve().base
    host, port = base.removeprefix("http://").rsplit(":", 1)
    body = b'[{"type": "Fizz", "time": "2023-03-28T11:59:59Z"}]'
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 201 ") and answer.endswith(b'{"ids": [1]}')


def test_head_of_a_list_and_clients_leaving_mid_list_cost_no_connection(
        serve: Serve, database: str) -> None:
    """HEAD /tasks, and clients that go away in the middle of a long list: no pool warning
    in the log, and the pool still serves afterwards (the issue saw four warnings and a
    pooled connection thrown away each time)."""
    query(database, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                    "now() FROM generate_series(1, 50000)")
    server = serve("--pool-size", "2")
    head = raw(server.base, b"HEAD /tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    for _ in range(10):
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"GET /tasks HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00"
                                                                  b"\x00\x00")
        # closed with a reset, in the middle of the list
    client = server.client()
    for _ in range(5):
        assert client("GET", "/tasks/next").status == 200
    assert client("GET", "/tasks?limit=3").status == 200
    time.sleep(0.5)
    log = server.log()
    for warning in ("rolling back", "closing returned", "discarding", "WARNING"):
        assert warning not in log, log
