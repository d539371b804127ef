"""HTTP/1.1 messages (RFC 9112), strictly: reading a request head, writing a response head.

Pure functions and small values, no I/O: the transport feeds in the lines it read and sends
out the bytes made here. Anything that two HTTP implementations could read differently is
refused rather than guessed at, because that difference is what request smuggling is made
of: a header line without a colon, whitespace before the colon, a folded line, a bare CR or
LF, two Content-Lengths or one that is not plain digits, a Transfer-Encoding. Such a request
gets a JSON error and the connection is closed, since where its body ends is unknown.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http import HTTPStatus

from fizzbuzz_cli import __version__
from fizzbuzz_cli.errors import FizzError

MAX_REQUEST_LINE = 8192  # bytes, CRLF excluded (414 beyond)
MAX_HEADER_LINES = 64  # (431 beyond)
MAX_HEADER_SECTION = 64 * 1024  # bytes of header lines (431 beyond)
MAX_EMPTY_LINES = 8  # empty lines tolerated before a request line (RFC 9112, 2.2)

JSON = "application/json"
SERVER = f"fizz/{__version__}"

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110, 5.6.2
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: no space, tab, control or 8-bit byte
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # controls other than HTAB
_LENGTH = re.compile(r"[0-9]{1,18}")  # "1-18 ASCII digits": never int()'s Unicode digits


class HttpError(FizzError):
    """A request refused with an HTTP status: answered as {"error": message}.

    `close` says the connection cannot be trusted any more (where this request ends is
    unknown), so it is closed after the answer."""

    exit_code = 1

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.http_status = status
        self.headers = headers or {}
        self.close = close


class NoAnswer(Exception):
    """The request deserves no answer at all: an HTTP/0.9 request, which has no status
    line to answer with. The connection is closed."""


def bad_request(message: str) -> HttpError:
    return HttpError(400, message, close=True)


# ---------------------------------------------------------------------------- the head


class RequestHead:
    """A request line and its header fields, checked; field names are lower case."""

    __slots__ = ("content_length", "expect_continue", "headers", "http10", "keep_alive",
                 "method", "path", "query", "target")

    def __init__(self, method: str, target: str, path: str, query: str, http10: bool) -> None:
        self.method = method
        self.target = target  # as sent, for the log
        self.path = path  # not percent-decoded (routes match the raw path, as before)
        self.query = query
        self.http10 = http10
        self.headers: dict[str, str] = {}
        self.keep_alive = not http10
        self.content_length: int | None = None
        self.expect_continue = False


def parse_request_line(line: bytes) -> RequestHead:
    """`line` without its CRLF. Raises HttpError (400, 505) or NoAnswer (HTTP/0.9)."""
    parts = line.split(b" ")
    if len(parts) == 2 and parts[0] == b"GET" and parts[1].startswith(b"/"):
        raise NoAnswer  # "GET /path": HTTP/0.9
    if len(parts) != 3:
        raise bad_request(f"malformed request line {_show(line)}: use METHOD /path HTTP/1.1, "
                          "separated by single spaces")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise bad_request(f"invalid method {_show(method)}: use a token such as GET or POST")
    found = _VERSION.fullmatch(version)
    if found is None:
        raise bad_request(f"invalid HTTP version {_show(version)}: use HTTP/1.1 or HTTP/1.0")
    if found.group(1) != b"1":
        raise HttpError(505, f"HTTP version {version.decode()} is not supported: use HTTP/1.1 "
                        "or HTTP/1.0", close=True)
    if not _TARGET.fullmatch(target):
        raise bad_request(f"invalid request target {_show(target)}: use a path such as "
                          "/tasks, without spaces, controls or non-ASCII bytes")
    text = target.decode("ascii")
    path, _, query = text.partition("?")
    if not path.startswith("/"):
        path = _absolute_form_path(path, text)
    return RequestHead(method.decode("ascii"), text, path, query,
                       http10=found.group(2) == b"0")


def _absolute_form_path(path: str, target: str) -> str:
    """The path of an absolute-form target (http://host/path), which servers must accept;
    '*' (OPTIONS *) is kept as it is and matches no route."""
    if path == "*":
        return path
    scheme, sep, rest = path.partition("://")
    if sep and scheme.lower() in ("http", "https") and rest:
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    raise bad_request(f"invalid request target {target[:100]!r}: use a path such as /tasks")


def parse_field(line: bytes) -> tuple[str, str]:
    """One header line without its CRLF: (lower-case name, value without surrounding
    whitespace). Raises HttpError (400)."""
    if line[:1] in (b" ", b"\t"):
        raise bad_request("obsolete line folding (a header line starting with whitespace) is "
                          "not accepted: put each header on one line")
    name, colon, value = line.partition(b":")
    if not colon:
        raise bad_request(f"header line without a colon: {_show(line)}: use Name: value")
    if not _TOKEN.fullmatch(name):
        if name and name.rstrip(b" \t") != name:
            raise bad_request(f"whitespace before the colon in header {_show(name.rstrip())}: "
                              "use Name: value")
        raise bad_request(f"invalid header name {_show(name)}: use letters, digits and "
                          "-!#$%&'*+.^_`|~")
    value = value.strip(b" \t")
    if _FIELD_VALUE_BAD.search(value):
        raise bad_request(f"control character in the value of header {name.decode()}")
    return name.decode("ascii").lower(), value.decode("latin-1")


def add_field(head: RequestHead, name: str, value: str) -> None:
    """Record one header field; repeated fields are joined with ", " (RFC 9110, 5.3), except
    those that must appear once."""
    if name in head.headers:
        if name == "content-length":
            raise bad_request("Content-Length is given more than once: give it once")
        if name == "host":
            raise bad_request("Host is given more than once: give it once")
        head.headers[name] += ", " + value
    else:
        head.headers[name] = value


def check_framing(head: RequestHead) -> None:
    """Decide where the body ends, or refuse (RFC 9112, 6): called once the head is read."""
    headers = head.headers
    if not head.http10 and "host" not in headers:
        raise bad_request("missing Host header: HTTP/1.1 requests must send one")
    coding = headers.get("transfer-encoding")
    if coding is not None:
        codings = [c.strip().lower() for c in coding.split(",")]
        if codings[-1] == "chunked" and not head.http10:
            raise HttpError(411, "send the body with a Content-Length (chunked bodies are not "
                            "accepted)", close=True)
        raise bad_request(f"unsupported Transfer-Encoding {coding[:100]!r}: send the body "
                          "with a Content-Length")
    length = headers.get("content-length")
    if length is not None:
        if not _LENGTH.fullmatch(length):
            raise bad_request(f"invalid Content-Length {length[:40]!r}: use 1 to 18 ASCII "
                              "digits")
        head.content_length = int(length)
    connection = headers.get("connection")
    if connection is not None:
        options = {option.strip().lower() for option in connection.split(",")}
        if "close" in options:
            head.keep_alive = False
        elif head.http10 and "keep-alive" in options:
            head.keep_alive = True
    expect = headers.get("expect")
    if expect is not None and expect.lower() == "100-continue" and not head.http10:
        head.expect_continue = True


def content_type_is_json(head: RequestHead) -> None:
    """Raise 415 unless the body is declared as JSON (application/json or */*+json)."""
    declared = head.headers.get("content-type")
    if declared is None:
        raise HttpError(415, f"the body must be JSON: send Content-Type: {JSON}")
    media = declared.split(";", 1)[0].strip().lower()
    if media != JSON and not media.endswith("+json"):
        raise HttpError(415, f"the body must be JSON (Content-Type: {JSON}), not {media}")


def _show(raw: bytes) -> str:
    """A piece of a request for an error message: short, printable, quoted."""
    text = raw[:60].decode("latin-1")
    return repr(text + ("..." if len(raw) > 60 else ""))


# ---------------------------------------------------------------------------- responses

_SERVER_LINE = f"Server: {SERVER}\r\nDate: ".encode()
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() + _SERVER_LINE
                 for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Clock:
    """The Date header, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def date(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, formatdate(now, usegmt=True).encode()
        return cls.value


def response_head(status: int, content_type: str, headers: dict[str, str],
                  length: int | None, *, close: bool, keep_alive_1_0: bool = False) -> bytes:
    """Status line and header fields. `length` None: the body is streamed, in chunks, or
    until the close (the caller says close for an HTTP/1.0 client)."""
    start = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode() + _SERVER_LINE
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) if headers else ""
    if length is not None:
        framing = b"Content-Length: %d\r\n" % length
    else:
        framing = b"" if close else b"Transfer-Encoding: chunked\r\n"
    connection = (b"Connection: close\r\n" if close
                  else b"Connection: keep-alive\r\n" if keep_alive_1_0 else b"")
    return b"%s%s\r\nContent-Type: %s\r\n%s%s%s\r\n" % (
        start, _Clock.date(), content_type.encode("latin-1"), extra.encode("latin-1"), framing,
        connection)


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body (never empty: an empty chunk ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
