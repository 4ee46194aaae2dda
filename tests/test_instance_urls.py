"""Instance URLs: one canonical form, or a refusal that names the field and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coyote_mw import Coyote, InvalidRoute
from coyote_mw.errors import InvalidInstanceURL
from coyote_mw.http.urls import canonical_url
from tests.support.ledger import LedgerUpstream
from tests.support.registration import AUTH, api, leader

__all__ = ["api", "leader"]  # the fixtures, shared


def payload(url: str, path: str = "/thing") -> dict[str, Any]:
    return {
        "service": "remote.saloon",
        "instance": "one",
        "url": url,
        "routes": [{"method": "GET", "path": path}],
        "ttl": 30,
    }


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("http://127.0.0.1:9", "http://127.0.0.1:9"),
        ("HTTP://Example.COM:80/", "http://example.com"),
        ("https://example.com:443/api/", "https://example.com/api"),
        ("https://example.com:80", "https://example.com:80"),
        ("http://Bücher.example:8080", "http://xn--bcher-kva.example:8080"),
        ("http://my_service:8000/v1", "http://my_service:8000/v1"),
        ("http://[::0001]:81/", "http://[::1]:81"),
        ("http://h/a b/ä€", "http://h/a%20b/%C3%A4%E2%82%AC"),
        ('http://h/q"<>\\^`{|}', "http://h/q%22%3C%3E%5C%5E%60%7B%7C%7D"),
        ("http://h/%7e%41/%2f/%e2%82%ac", "http://h/~A/%2F/%E2%82%AC"),
        ("http://h/100%", "http://h/100%25"),
        ("http://h/../", "http://h"),
        ("http://h/a/./b/../c/", "http://h/a/c"),
        ("http://h/a/%2E%2E/%2e/b", "http://h/b"),
        ("http://h/a/..%2F/b", "http://h/a/..%2F/b"),  # an escaped slash is no separator
        ("http://h/!$&'()*+,;=:@", "http://h/!$&'()*+,;=:@"),
        # a host ending in a number is an IPv4 address, read as browsers read it
        ("http://127.1:9", "http://127.0.0.1:9"),
        ("http://0x7f.1:9", "http://127.0.0.1:9"),
        ("http://0X7F.0.0.1.:9/a", "http://127.0.0.1:9/a"),
        ("http://0177.0.0.1:9", "http://127.0.0.1:9"),
        ("http://2130706433:9", "http://127.0.0.1:9"),
        ("http://1.2.3", "http://1.2.0.3"),
        ("http://010.0.0.1", "http://8.0.0.1"),
        ("http://0xffffffff", "http://255.255.255.255"),
        ("http://\uff11\uff12\uff17.0.0.1:9", "http://127.0.0.1:9"),  # full-width digits
        ("http://1e3:9", "http://1e3:9"),  # a name: its last label is no number
    ],
)
def test_instance_urls_have_one_canonical_form(given: str, canonical: str) -> None:
    assert canonical_url(given) == canonical
    assert canonical_url(canonical) == canonical


UNUSABLE = [
    ("http://127.0.0.1:9/a\r\nX-Injected: 1", "control characters"),
    ("http://127.0.0.1:9/a\nb", "control characters"),
    ("http://127.0.0.1:9/a\tb", "control characters"),
    ("http://127.0.0.1:9/a\x00", "control characters"),
    ("http://127.0.0.1\r\n:9", "control characters"),
    (" http://127.0.0.1:9", "spaces"),
    ("http://127.0.0.1:9/ ", "spaces"),
    ("http://a b:9", "not a DNS name"),
    ("http://a%20b:9", "not a DNS name"),
    ("http://exa mple.com\u0085:9", "control characters"),
    ("http://-bad-.example", "not a DNS name"),
    ("http://a..b", "not a DNS name"),
    ("http://x" + "y" * 63 + ".example", "not a DNS name"),
    ("http://" + "a." * 127 + "bc", "not a DNS name"),
    ("http://ex\u00e4mple\u200d.com", "internationalised"),
    ("http://[fe80::1%25eth0]:9", "IPv6"),
    ("http://[::1]x", "IPv6"),
    ("http://[::1", "cannot be parsed"),
    ("http://127.0.0.1:0", "port"),
    ("http://127.0.0.1:65536", "port"),
    ("http://u:p@127.0.0.1:9", "credentials"),
    ("http://127.0.0.1:9/?", "query"),
    ("http://127.0.0.1:9/#x", "fragment"),
    ("ftp://127.0.0.1", "http://"),
    ("//127.0.0.1:9", "http://"),
    ("http://h/\ud800", "surrogate"),
    ("http://1.2.3.4.5:9", "read as an IPv4 address"),
    ("http://256.1.1.1:9", "read as an IPv4 address"),
    ("http://1.2.3.256:9", "read as an IPv4 address"),
    ("http://4294967296:9", "read as an IPv4 address"),
    ("http://08.0.0.1:9", "read as an IPv4 address"),
    ("http://service.1:9", "read as an IPv4 address"),
    ("http://service.0x:9", "read as an IPv4 address"),
]


@pytest.mark.parametrize(("url", "says"), UNUSABLE)
def test_unusable_instance_urls_are_400_naming_the_url_and_change_nothing(
    api: Any, leader: Coyote, url: str, says: str
) -> None:
    before = leader.table.routes()
    body = json.dumps(payload(url)).encode()  # ASCII: a lone surrogate is sent escaped
    r = api.post("/_coyote/registrations", content=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "Invalid registration"
    (problem,) = [d for d in r.json()["detail"] if d["field"] == "url"]
    # pydantic refuses a lone surrogate itself, in its own words
    assert says in problem["message"] or "unicode string" in problem["message"], problem
    assert leader.table.routes() == before


@pytest.mark.parametrize(("url", "says"), UNUSABLE)
def test_register_remote_refuses_an_unusable_url_saying_how_to_fix_it(
    leader: Coyote, url: str, says: str
) -> None:
    before = leader.table.routes()
    with pytest.raises(InvalidRoute, match="url") as caught:
        leader.register_remote(url, routes=[("GET", "/thing")], service="up")
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)  # as a bad URL always was
    assert isinstance(caught.value, InvalidInstanceURL)
    assert leader.table.routes() == before


def test_a_non_ascii_host_registers_as_its_idna_form(api: Any, leader: Coyote) -> None:
    r = api.post("/_coyote/registrations", json=payload("http://bücher.example:9"), headers=AUTH)
    assert r.status_code == 201, r.text
    (reg,) = [x for x in leader.table.registrations() if x.service == "remote.saloon"]
    assert {h.url for h in reg.handlers.values()} == {"http://xn--bcher-kva.example:9"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("base", "target"),
    [
        ("/a b/ä€😀/x/../base/", b"/a%20b/%C3%A4%E2%82%AC%F0%9F%98%80/base/thing"),
        ("/../", b"/thing"),
        ("/v1/%2e%2e/%2E%2E/../api", b"/api/thing"),
        ("/<script>", b"/%3Cscript%3E/thing"),
    ],
    ids=["space-and-non-latin-1", "dot-dot", "escaped-dot-dot", "angle-brackets"],
)
def test_the_request_line_an_instance_receives_is_clean(
    api: Any, leader: Coyote, base: str, target: bytes
) -> None:
    with LedgerUpstream() as up:
        url = up.url + base
        r = api.post("/_coyote/registrations", json=payload(url), headers=AUTH)
        assert r.status_code == 201, r.text
        answer = api.get("/thing?x=1")
        assert answer.status_code == 200, answer.text
        (got,) = up.wait_for(1)
    assert got.raw.split(b"\r\n", 1)[0] == b"GET " + target + b"?x=1 HTTP/1.1"
    assert got.header("host") == f"127.0.0.1:{up.port}".encode()


def test_register_remote_stores_the_canonical_url(leader: Coyote) -> None:
    with LedgerUpstream() as up:
        reg = leader.register_remote(
            f"HTTP://127.0.0.1:{up.port}/a b/../ä/", routes=[("GET", "/thing")], service="up"
        )
        assert {h.url for h in reg.handlers.values()} == {  # type: ignore[attr-defined]
            f"http://127.0.0.1:{up.port}/%C3%A4"
        }


def test_two_spellings_of_one_url_are_one_instance(leader: Coyote) -> None:
    leader.register_remote("http://127.0.0.1:9/", routes=[("GET", "/thing")], service="up")
    leader.register_remote("HTTP://127.0.0.1:9/./", routes=[("GET", "/thing")], service="up")
    (reg,) = [r for r in leader.table.registrations() if r.service == "up"]
    assert reg.instance == "http://127.0.0.1:9"


SPELLINGS = ["127.1", "0x7f.1", "0177.0.0.1", "2130706433", "0x7F.0.0.1."]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_another_spelling_of_an_ipv4_address_registers_as_its_dotted_quad(
    api: Any, leader: Coyote, spelling: str
) -> None:
    with LedgerUpstream() as up:
        body = payload(f"http://{spelling}:{up.port}")
        r = api.post("/_coyote/registrations", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
        (reg,) = [x for x in leader.table.registrations() if x.service == "remote.saloon"]
        urls = {h.url for h in reg.handlers.values()}  # type: ignore[attr-defined]
        assert urls == {f"http://127.0.0.1:{up.port}"}
        assert api.get("/thing").status_code == 200
        (got,) = up.wait_for(1)
    assert got.header("host") == f"127.0.0.1:{up.port}".encode()


def test_spellings_of_one_ipv4_address_are_one_instance(leader: Coyote) -> None:
    for spelling in ["127.0.0.1", *SPELLINGS]:
        leader.register_remote(f"http://{spelling}:9", routes=[("GET", "/thing")], service="up")
    (reg,) = [r for r in leader.table.registrations() if r.service == "up"]
    assert reg.instance == "http://127.0.0.1:9"
    assert len(reg.handlers) == 1
