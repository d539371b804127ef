"""The HTTP/1.1 message rules of `fizz serve` (fizzbuzz_cli.server.protocol), no sockets."""

from __future__ import annotations

import pytest

from fizzbuzz_cli.server.protocol import (
    HttpError,
    NoAnswer,
    RequestHead,
    add_field,
    check_framing,
    parse_field,
    parse_request_line,
    response_head,
)


def head(line: bytes, *fields: bytes) -> RequestHead:
    parsed = parse_request_line(line)
    for field in fields:
        add_field(parsed, *parse_field(field))
    check_framing(parsed)
    return parsed


def test_a_plain_request() -> None:
    parsed = head(b"GET /tasks?filters.type=fizz HTTP/1.1", b"Host: x", b"X-Many: a",
                  b"x-many:   b  ")
    assert (parsed.method, parsed.path, parsed.query) == ("GET", "/tasks", "filters.type=fizz")
    assert parsed.headers == {"host": "x", "x-many": "a, b"}
    assert parsed.keep_alive and not parsed.http10 and parsed.content_length is None


def test_versions_and_connection_options() -> None:
    assert not head(b"GET / HTTP/1.0").keep_alive
    assert head(b"GET / HTTP/1.0", b"Connection: Keep-Alive").keep_alive
    assert not head(b"GET / HTTP/1.1", b"Host: x", b"Connection: foo, close").keep_alive
    assert head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 007").content_length == 7
    assert head(b"POST / HTTP/1.1", b"Host: x", b"Expect: 100-Continue").expect_continue


def test_absolute_form() -> None:
    assert head(b"GET http://example.com:8000/tasks/1?x=1 HTTP/1.1", b"Host: x").path == (
        "/tasks/1")
    assert head(b"GET HTTPS://example.com HTTP/1.1", b"Host: x").path == "/"


def test_http_0_9_gets_no_answer() -> None:
    with pytest.raises(NoAnswer):
        parse_request_line(b"GET /tasks")


@pytest.mark.parametrize(("line", "status"), [
    (b"GET", 400), (b"POST /", 400), (b"GET / HTTP/1.1 extra", 400), (b"GET / HTTP/3.0", 505),
    (b"GET / HTTP/1", 400), (b"GET /a b HTTP/1.1", 400), (b"GET /\x7f HTTP/1.1", 400),
    (b"GET ftp://x/ HTTP/1.1", 400), (b"G\xc9T / HTTP/1.1", 400),
])
def test_bad_request_lines(line: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        parse_request_line(line)
    assert (caught.value.http_status, caught.value.close) == (status, True)


@pytest.mark.parametrize("field", [
    b"NoColon", b"Name : v", b"Name\t: v", b" folded", b"\tfolded", b"Na me: v", b": v",
    b"Name: a\x00b", b"Name: a\rb", b"Name: a\x1bb",
])
def test_bad_fields(field: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        parse_field(field)
    assert caught.value.http_status == 400


@pytest.mark.parametrize(("fields", "status"), [
    ((), 400),  # HTTP/1.1 without Host
    ((b"Host: x", b"Host: y"), 400),
    ((b"Host: x", b"Content-Length: 1", b"Content-Length: 1"), 400),
    ((b"Host: x", b"Content-Length: \xc2\xb2"), 400),
    ((b"Host: x", b"Content-Length: 1234567890123456789"), 400),
    ((b"Host: x", b"Transfer-Encoding: chunked"), 411),
    ((b"Host: x", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip"), 400),
])
def test_framing_is_refused_when_in_doubt(fields: tuple[bytes, ...], status: int) -> None:
    with pytest.raises(HttpError) as caught:
        head(b"POST /tasks HTTP/1.1", *fields)
    assert caught.value.http_status == status


def test_field_values_may_carry_eight_bit_bytes() -> None:
    assert parse_field(b"X-Name: caf\xe9") == ("x-name", "caf\xe9")


def test_response_heads() -> None:
    fixed = response_head(201, "application/json", {"Location": "/tasks/1"}, 9, close=False)
    assert fixed.startswith(b"HTTP/1.1 201 Created\r\nServer: fizz/")
    assert fixed.endswith(b"Content-Type: application/json\r\nLocation: /tasks/1\r\n"
                          b"Content-Length: 9\r\n\r\n")
    assert response_head(200, "application/json", {}, None, close=False).endswith(
        b"Transfer-Encoding: chunked\r\n\r\n")
    assert response_head(200, "application/json", {}, None, close=True).endswith(
        b"Content-Type: application/json\r\nConnection: close\r\n\r\n")
    assert response_head(200, "text/plain", {}, 0, close=False, keep_alive_1_0=True).endswith(
        b"Content-Length: 0\r\nConnection: keep-alive\r\n\r\n")
