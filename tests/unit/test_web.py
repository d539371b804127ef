"""The dashboard's assets (fizzbuzz_cli.web): served with the right types and headers,
shipped as package data, and self-contained (nothing loaded from elsewhere: works offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fizzbuzz_cli import web

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(("path", "kind"), [
    ("/", "text/html"), ("/index.html", "text/html"), ("/style.css", "text/css"),
    ("/app.js", "text/javascript")])
def test_each_asset_has_its_type_and_headers(path: str, kind: str) -> None:
    found = web.asset(path)
    assert found is not None and found.body
    headers = found.headers()
    assert headers["Content-Type"] == f"{kind}; charset=utf-8"
    assert headers["ETag"] == found.etag and re.fullmatch(r'"[0-9a-f]{16}"', found.etag)
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/nothing", "/web/app.js", "/../schema.sql", "/__init__.py",
                                  "", "/index.html/"])
def test_other_paths_are_not_assets(path: str) -> None:
    assert web.asset(path) is None


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No URL with a host (a CDN, a web font) in any asset; the one absolute URI allowed is
    SVG's namespace name, which is an identifier, never fetched."""
    for path in web.paths():
        text = web.asset(path).body.decode()  # type: ignore[union-attr]
        text = text.replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path
        assert "@import" not in text and "url(" not in text, path


def test_the_page_uses_its_own_routes_only() -> None:
    page = web.asset("/")
    script = web.asset("/app.js")
    assert page is not None and script is not None
    assert '<script src="app.js" defer></script>' in page.body.decode()
    assert '<link rel="stylesheet" href="style.css">' in page.body.decode()
    calls = set(re.findall(r'getJSON\("([a-z]+)"\)', script.body.decode()))
    assert calls == {"stats", "workers"}
    assert '"tasks?"' in script.body.decode() and 'query.set("order", "desc")' in (
        script.body.decode())
    assert "innerHTML" not in script.body.decode()  # server text is never parsed as HTML


def test_the_assets_are_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "fizzbuzz_cli.web" in config["packages"]
    shipped = set(config["package-data"]["fizzbuzz_cli.web"])
    on_disk = {p.name for p in (ROOT / "fizzbuzz_cli" / "web").iterdir() if p.suffix != ".py"
               and p.is_file()}
    assert shipped == on_disk == {"index.html", "style.css", "app.js"}
