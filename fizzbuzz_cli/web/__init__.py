"""The dashboard page that `fizz serve` answers at GET /: plain HTML, CSS and JavaScript
shipped inside the package (no build step, nothing fetched from elsewhere, so it works
offline). The page polls GET /stats, GET /workers and GET /tasks (with `order=desc`) every
2 s; with a token on the server it asks for it once and sends it as a bearer header.

``asset(path)`` gives the server what to send for a path of the page, or None: the body,
its content type and the headers to send with it. The assets themselves hold no data, so
they are served without the token; the JSON routes they call need it.

Threading: the assets are read once and never change; any thread may call ``asset``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

# URL path -> (file in this package, content type)
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
}

# The page may load only its own files and call only its own server: no CDN, no inline
# script, no framing by another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "etag", '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"')

    def headers(self) -> dict[str, str]:
        """Headers to send with the body (Content-Length is the server's)."""
        # no-cache: the browser revalidates (If-None-Match -> 304) so that an upgraded fizz
        # is seen at once.
        return {"Content-Type": self.content_type, "Cache-Control": "no-cache",
                "ETag": self.etag, **SECURITY_HEADERS}


def asset(path: str) -> Asset | None:
    """What to send for a GET of `path` (without its query string), or None if the page has
    no such file."""
    found = FILES.get(path)
    return None if found is None else _load(*found)


def paths() -> list[str]:
    return list(FILES)


@cache
def _load(name: str, content_type: str) -> Asset:
    return Asset(resources.files(__name__).joinpath(name).read_bytes(), content_type)
