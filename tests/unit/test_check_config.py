"""What `boshd check-config` must catch because it cannot work (issue 16, item 3): every
problem at once, each with its dotted key. The classes (file keys, list entries, endpoint
paths, key names) are generated from the declarations in boshd.config, so a key added later
is covered without editing this file."""

from __future__ import annotations

import errno
import itertools
import os
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.config import SECTIONS, UpstreamTarget, load_config, parse_config
from boshd.core.errors import ConfigError
from tests.support.daemon import OPENSSL_BIN, make_cert

DOMAIN = "x.org"
DOMAIN_PREFIX = f'upstream.domains."{DOMAIN}"'
#: Longest Unix socket path: sun_path holds 108 bytes on Linux, the last a NUL (unix(7)).
MAX_UNIX_PATH_BYTES = 107
#: Always served (XEP-0156 discovery), whatever the config says.
HOST_META_PATHS = ["/.well-known/host-meta", "/.well-known/host-meta.json"]


def problems_for(raw: dict[str, Any], *, complete: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, complete=True) if complete else parse_config(raw)
    return info.value.problems


def with_domain(raw: dict[str, Any], **target: Any) -> dict[str, Any]:
    """`raw` plus one upstream domain (on loopback, plain unless `target` says otherwise)."""
    spec = {"host": "127.0.0.1", "tls": "plain", **target}
    raw.setdefault("upstream", {}).setdefault("domains", {})[DOMAIN] = spec
    return raw


TABLES: list[tuple[str, type[Any]]] = [*SECTIONS.items(), (DOMAIN_PREFIX, UpstreamTarget)]


def _file_keys() -> list[tuple[str, str]]:
    """(dotted key, field name) of every key naming a file, domain keys included."""
    return [
        (f"{prefix}.{f.name}", f.name)
        for prefix, cls in TABLES
        for f in fields(cls)
        if f.name.endswith("_file")
    ]


FILE_KEYS = _file_keys()


def raw_with_file(dotted: str, name: str, path: str) -> dict[str, Any]:
    if dotted.startswith("upstream.domains."):
        return with_domain({}, tls="starttls", host="xmpp.x.org", **{name: path})
    return {dotted.split(".")[0]: {name: path}}


# ============================================================================ all at once


def test_many_faults_in_one_file_are_all_reported_each_with_its_key(tmp_path: Path) -> None:
    """One config with a fault of every kind: every problem is listed, each naming its
    dotted key (and list index), none hidden behind another (issue 16)."""
    missing_ca = tmp_path / "missing-ca.pem"
    raw = {
        "server": {
            "listen": [
                "127.0.0.1:5280",
                "nowhere",
                "unix:run/boshd.sock",
                "[::1]:99999",
                "127.0.0.1:5280",
            ],
            "bosh_pth": "/bosh",
            "tls_cert_file": str(tmp_path / "missing.crt"),
            "tls_key_file": str(tmp_path),
        },
        "upstrem": {"connect_timeout": "5s"},
        "discovery": {"bosh_url": "http://chat.x.org/http-bind"},
        "admin": {"listen": ["0.0.0.0:5281"], "token": "t" * 20},
    }
    problems = problems_for(with_domain(raw, tls="starttls", ca_file=str(missing_ca)))
    expected = [
        "server.listen[1]: each listener must be 'host:port' or 'unix:/path', got 'nowhere'",
        "server.listen[2]: unix socket path must be absolute",
        "server.listen[3]: each listener must be 'host:port' or 'unix:/path', got '[::1]:99999'",
        "server.bosh_pth: unknown key (did you mean server.bosh_path?)",
        f"server.tls_cert_file: no such file {str(tmp_path / 'missing.crt')!r}",
        f"server.tls_key_file: {str(tmp_path)!r} is not a regular file",
        "upstrem: unknown section (did you mean upstream?)",
        "discovery.bosh_url: must start with https://, got 'http://chat.x.org/http-bind'; "
        "http:// is for development only, with discovery.allow_insecure = true",
        "server.listen[4]: '127.0.0.1:5280' is listed twice (first at [0])",
        "admin.listen[0]: '0.0.0.0:5281' is not loopback; set admin.allow_remote to allow it",
        f"{DOMAIN_PREFIX}.ca_file: no such file {str(missing_ca)!r}",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)
    assert len(problems) == len(expected), problems


def test_a_file_without_domains_cannot_serve_anyone(tmp_path: Path) -> None:
    """A whole file with no [upstream.domains] and allow_any_domain = false refuses every
    session (host-unknown), so check-config and run refuse it, naming upstream.domains, along
    with its other problems; allow_any_domain, or one domain, makes it valid (issue 16)."""
    path = tmp_path / "boshd.toml"
    path.write_text('[bosh]\nmax_wait = -1\n[upstream]\nallowed_routes = ["xmpp:a.org:5222"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith("bosh.max_wait: must be > 0")
    assert info.value.problems[1].startswith(
        "upstream.domains: no domain is listed and upstream.allow_any_domain is false"
    )
    path.write_text("[upstream]\nallow_any_domain = true\n")
    assert load_config(path).upstream.allow_any_domain
    path.write_text('[upstream.domains."a.org"]\nhost = "xmpp.a.org"\n')
    assert list(load_config(path).upstream.domains) == ["a.org"]
    # A fragment built around the defaults (tests, tools) is not a whole configuration.
    assert parse_config({}).upstream.domains == {}
    assert "upstream.domains: no domain" in problems_for({}, complete=True)[0]


# ================================================================================= files


def test_every_file_key_is_declared_a_file() -> None:
    """Every `*_file` key (ca_file too) is declared with the loader's file parser, which is
    what makes the loader check it, so the test below covers them all (issue 16)."""
    names = {dotted for dotted, _ in FILE_KEYS}
    assert {f"{DOMAIN_PREFIX}.ca_file", "server.tls_cert_file", "admin.token_file"} <= names
    parsers = {
        f"{prefix}.{f.name}": getattr(f.metadata["parse"], "__name__", "")
        for prefix, cls in TABLES
        for f in fields(cls)
    }
    assert {key for key, parser in parsers.items() if parser == "_file"} == names


@pytest.mark.parametrize(("dotted", "name"), FILE_KEYS, ids=[k[0] for k in FILE_KEYS])
def test_every_file_key_names_a_readable_regular_file(
    tmp_path: Path, dotted: str, name: str
) -> None:
    """A file key naming a missing file, a directory, a FIFO (without hanging), a path through
    a file, or a file this user may not read, is refused naming the key and the file; at run
    time the error would say only "No such file or directory" (issue 16)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plain = tmp_path / "plain"
    plain.write_text("x\n")
    cases = [
        (str(tmp_path / "missing"), f"no such file {str(tmp_path / 'missing')!r}"),
        (str(tmp_path), f"{str(tmp_path)!r} is not a regular file"),
        (str(fifo), f"{str(fifo)!r} is not a regular file"),
        (f"{plain}/x", f"cannot read {f'{plain}/x'!r}: Not a directory"),
    ]
    for path, problem in cases:
        assert f"{dotted}: {problem}" in problems_for(raw_with_file(dotted, name, path))
    # Permission denied: tests run as root, so the refusal is injected at os.open.
    denied = str(tmp_path / "denied")
    Path(denied).write_text("x\n")
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path) == denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, *args, **kwargs)

    with mock.patch("boshd.config.os.open", refusing_open):
        problems = problems_for(raw_with_file(dotted, name, denied))
    assert f"{dotted}: cannot read {denied!r}: Permission denied" in problems


def test_a_relative_file_path_is_warned_about(tmp_path: Path, monkeypatch: Any) -> None:
    """A relative path depends on the directory boshd starts in (/ under systemd): it loads
    with a warning naming the key (issue 16)."""
    monkeypatch.chdir(tmp_path)
    cert, _key = make_cert(tmp_path, "ca")
    config = parse_config(with_domain({}, tls="starttls", host="xmpp.x.org", ca_file=cert.name))
    assert config.warnings == (
        f"{DOMAIN_PREFIX}.ca_file: 'ca.crt' is relative to the directory boshd starts in "
        "(/ under systemd); use an absolute path",
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two certificates with their keys, an encrypted copy of the first key, and junk."""
    directory = tmp_path_factory.mktemp("certs")
    one_crt, one_key = make_cert(directory, "one")
    two_crt, two_key = make_cert(directory, "two")
    encrypted = directory / "encrypted.key"
    subprocess.run(
        [OPENSSL_BIN, "ec", "-aes256", "-passout", "pass:x", "-in", one_key, "-out", encrypted],
        check=True,
        capture_output=True,
    )
    junk = directory / "junk.pem"
    junk.write_text("not PEM at all\n")
    for path in (one_key, two_key, encrypted):
        path.chmod(0o600)
    return {
        "one.crt": one_crt,
        "one.key": one_key,
        "two.crt": two_crt,
        "two.key": two_key,
        "encrypted.key": encrypted,
        "junk": junk,
    }


def tls(cert: Path, key: Path) -> dict[str, Any]:
    return {"server": {"tls_cert_file": str(cert), "tls_key_file": str(key)}}


def test_a_key_that_does_not_match_the_certificate_says_so(certs: dict[str, Path]) -> None:
    """The key of another certificate: the problem names both keys and both files, instead
    of OpenSSL's "key values mismatch" (issue 16)."""
    assert problems_for(tls(certs["one.crt"], certs["two.key"])) == [
        f"server.tls_key_file: the key in {str(certs['two.key'])!r} does not match the "
        f"certificate in server.tls_cert_file ({str(certs['one.crt'])!r})"
    ]
    assert parse_config(tls(certs["one.crt"], certs["one.key"])).server.tls_cert_file


@pytest.mark.parametrize(
    ("cert", "key", "expected"),
    [
        ("junk", "one.key", "server.tls_cert_file: no PEM certificate in {cert!r}"),
        ("one.key", "one.key", "server.tls_cert_file: no PEM certificate in {cert!r}"),
        ("one.crt", "junk", "server.tls_key_file: no usable PEM private key in {key!r}"),
        ("one.crt", "one.crt", "server.tls_key_file: no usable PEM private key in {key!r}"),
        (
            "one.crt",
            "encrypted.key",
            "server.tls_key_file: {key!r} is encrypted; boshd needs the key without a passphrase",
        ),
    ],
)
def test_a_certificate_or_key_that_cannot_load_names_the_file_at_fault(
    certs: dict[str, Path], cert: str, key: str, expected: str
) -> None:
    """Junk, a key in place of the certificate and the other way round, an encrypted key
    (which must not prompt on the terminal): one problem naming the file at fault (issue 16)."""
    problems = problems_for(tls(certs[cert], certs[key]))
    text = expected.format(cert=str(certs[cert]), key=str(certs[key]))
    assert len(problems) == 1, problems
    assert problems[0].startswith(text), problems


def test_a_ca_file_must_hold_a_certificate(certs: dict[str, Path]) -> None:
    """A domain's ca_file that holds no PEM certificate is refused naming the key; one that
    does loads; a ca_file for a plain domain is never used, which a warning says (issue 16)."""
    junk = certs["junk"]
    assert problems_for(with_domain({}, tls="starttls", host="a.x.org", ca_file=str(junk))) == [
        f"{DOMAIN_PREFIX}.ca_file: no PEM CA certificate in {str(junk)!r} "
        "(NO_CERTIFICATE_OR_CRL_FOUND)"
    ]
    good = str(certs["one.crt"])
    assert (
        parse_config(with_domain({}, tls="direct-tls", host="a.x.org", ca_file=good)).warnings == ()
    )
    assert parse_config(with_domain({}, ca_file=good)).warnings == (
        f"{DOMAIN_PREFIX}.ca_file: not used, as tls = 'plain' verifies no certificate",
    )


# ========================================================================== list entries

GOOD_LISTENERS = ["127.0.0.1:5280", "[::1]:5280", "0.0.0.0:0", "unix:/run/boshd/boshd.sock"]
BAD_LISTENERS = [
    "nowhere",
    "127.0.0.1",
    "127.0.0.1:http",
    "127.0.0.1:65536",
    ":5280",
    "unix:",
    "unix:boshd.sock",
    "unix:./boshd.sock",
    "unix:~/boshd.sock",
    "unix:/" + "x" * MAX_UNIX_PATH_BYTES,
]


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(
        st.one_of(
            st.sampled_from(GOOD_LISTENERS),
            st.sampled_from(BAD_LISTENERS),
            st.integers(),
            st.text(alphabet=st.characters(blacklist_characters=":"), max_size=12),
        ),
        min_size=1,
        max_size=8,
    ),
    section=st.sampled_from(["server", "admin"]),
)
def test_every_bad_listener_is_reported_with_its_index(entries: list[Any], section: str) -> None:
    """Whatever a listen list holds, each bad entry (not a string, not host:port, a unix path
    that is empty, relative or too long, an address listed twice or also a main listener) is
    reported with its index, and no good entry is (issue 16)."""
    main = "unix:/run/boshd/boshd.sock"
    raw: dict[str, Any] = {section: {"listen": entries}}
    if section == "admin":
        raw["admin"].update(token="t" * 20, allow_remote=True)
        raw["server"] = {"listen": [main]}
    try:
        config = parse_config(raw)
    except ConfigError as exc:
        problems = exc.problems
    else:
        assert getattr(config, section).listen == tuple(entries)
        problems = []
    prefix = f"{section}.listen["
    assert all(p.startswith(prefix) for p in problems), problems
    flagged = [int(p[len(prefix) :].partition("]")[0]) for p in problems]
    expected: list[int] = []
    first: set[str] = set()
    for i, item in enumerate(entries):
        if item not in GOOD_LISTENERS or item in first:
            expected.append(i)
        elif not item.endswith(":0"):
            first.add(item)
    if section == "admin" and not expected:  # the list is sound: now compare with server's
        expected = [i for i, item in enumerate(entries) if item == main]
    assert flagged == expected, (entries, problems)


def test_other_lists_report_every_bad_entry() -> None:
    """trusted_proxies, allowed_routes, allowed_origins, content types: every bad entry with
    its index, not only the first (issue 16)."""
    problems = problems_for(
        {
            "server": {"trusted_proxies": ["10.0.0.0/8", "proxy", "unix", "1.2.3.4.5"]},
            "upstream": {"allowed_routes": ["xmpp:a.org:5222", "a.org:5222", "xmpp:b.org"]},
            "cors": {"allowed_origins": ["*", "chat.x.org", "https://x.org/path"]},
            "bosh": {"allowed_content_types": ["text/xml", 5]},
        }
    )
    assert [p.partition(":")[0] for p in problems] == [
        "server.trusted_proxies[1]",
        "server.trusted_proxies[3]",
        "upstream.allowed_routes[1]",
        "upstream.allowed_routes[2]",
        "cors.allowed_origins[1]",
        "cors.allowed_origins[2]",
        "bosh.allowed_content_types[1]",
    ]


# ================================================================================ paths

PATH_KEYS = [
    ("server", "bosh_path"),
    ("server", "websocket_path"),
    ("server", "health_path"),
    ("server", "ready_path"),
    ("server", "metrics_path"),
    ("prebind", "path"),
]


def test_the_path_keys_are_all_listed() -> None:
    """PATH_KEYS holds every key that names a URL path of the main listener."""
    declared = {
        f"{section}.{f.name}"
        for section in ("server", "prebind")
        for f in fields(SECTIONS[section])
        if f.name.endswith("path")
    }
    assert declared == {f"{s}.{k}" for s, k in PATH_KEYS}


@pytest.mark.parametrize(
    ("first", "second"),
    list(itertools.combinations(PATH_KEYS, 2)),
    ids=lambda k: ".".join(k),
)
def test_two_endpoints_on_one_path_are_refused(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    """Two endpoints on one path: one would never be reached, or aiohttp refuses the route at
    start with a traceback; the later key is named with the earlier (issue 16)."""
    raw: dict[str, Any] = {"prebind": {"secret": "s" * 20}}
    for section, key in (first, second):
        raw.setdefault(section, {})[key] = "/same"
    assert (
        f"{second[0]}.{second[1]}: '/same' is also {first[0]}.{first[1]}; each needs its own path"
        in problems_for(raw)
    )


@pytest.mark.parametrize("fixed", HOST_META_PATHS)
@pytest.mark.parametrize(("section", "key"), PATH_KEYS)
def test_an_endpoint_on_the_discovery_path_is_refused(section: str, key: str, fixed: str) -> None:
    """The host-meta paths are always served, so no endpoint may take them (issue 16)."""
    raw: dict[str, Any] = {section: {key: fixed}}
    raw.setdefault("prebind", {})["secret"] = "s" * 20
    assert any(
        p.startswith(f"{section}.{key}: {fixed!r} is also XEP-0156") for p in problems_for(raw)
    )


# ============================================================================ key names


def _typos(name: str) -> list[str]:
    """Misspellings a person makes: a letter dropped, two swapped, one doubled."""
    out = []
    for i in range(1, len(name) - 1):
        out.append(name[:i] + name[i + 1 :])
        out.append(name[:i] + name[i + 1] + name[i] + name[i + 2 :])
        out.append(name[:i] + name[i] + name[i:])
    return [t for t in dict.fromkeys(out) if t != name]


KEYS = [(prefix, f.name) for prefix, cls in TABLES for f in fields(cls) if len(f.name) >= 5]


@pytest.mark.parametrize(("prefix", "name"), KEYS, ids=[f"{p}.{n}" for p, n in KEYS])
def test_a_misspelt_key_gets_a_did_you_mean(prefix: str, name: str) -> None:
    """Every misspelling of every key (letter dropped, swapped or doubled; also upper case)
    is an unknown key whose message suggests the key meant (issue 16: server.bosh_pth)."""
    misses = []
    for typo in [*_typos(name), name.upper()]:
        if typo in {f.name for f in fields(dict(TABLES)[prefix])}:
            continue
        raw = with_domain({}, **{typo: "x"}) if prefix == DOMAIN_PREFIX else {prefix: {typo: "x"}}
        message = next(p for p in problems_for(raw) if p.startswith(f"{prefix}.{typo}:"))
        assert message.startswith(f"{prefix}.{typo}: unknown key (did you mean {prefix}."), message
        if not message.endswith(f"did you mean {prefix}.{name}?)"):
            misses.append(message)
    assert misses == []


def test_a_key_in_the_wrong_place_names_the_right_one() -> None:
    """A key under the wrong section, a key outside any section, a misspelt section or
    domain key: each message names the key that was meant (issue 16)."""
    problems = problems_for(
        with_domain(
            {
                "server": {"max_wait": 30},
                "upstream": {"ca_file": "/etc/ssl/ca.pem"},
                "inactivity": 30,
                "upstrem": {},
                "Bosh": {},
            },
            cafile="/etc/ssl/ca.pem",
        )
    )
    assert problems == [
        "server.max_wait: unknown key (did you mean bosh.max_wait?)",
        'upstream.ca_file: unknown key (did you mean upstream.domains."<domain>".ca_file?)',
        f"{DOMAIN_PREFIX}.cafile: unknown key (did you mean {DOMAIN_PREFIX}.ca_file?)",
        "inactivity: a key outside any [section] (did you mean bosh.inactivity?)",
        "upstrem: unknown section (did you mean upstream?)",
        "Bosh: unknown section (did you mean bosh?)",
    ]
    assert "bosh.nonsense: unknown key" in problems_for({"bosh": {"nonsense": 1}})
    assert problems_for({"server": {"token": "x"}}) == [
        "server.token: unknown key (did you mean admin.token?)"
    ]
    assert problems_for({"bosh": {"listen": []}}) == [
        "bosh.listen: unknown key (did you mean server.listen or admin.listen?)"
    ]


# ============================================================================ discovery


@pytest.mark.parametrize(
    ("key", "url", "secure", "insecure"),
    [
        ("bosh_url", "http://chat.x.org/http-bind", "https://", "http://"),
        ("websocket_url", "ws://chat.x.org/xmpp-websocket", "wss://", "ws://"),
    ],
)
def test_an_insecure_discovery_url_points_at_allow_insecure(
    key: str, url: str, secure: str, insecure: str
) -> None:
    """An http:// or ws:// URL in discovery.* says that discovery.allow_insecure is what
    permits it (for development), so the operator knows the way out (issue 16, D-02)."""
    assert problems_for({"discovery": {key: url}}) == [
        f"discovery.{key}: must start with {secure}, got {url!r}; {insecure} is for development "
        "only, with discovery.allow_insecure = true"
    ]
    assert parse_config({"discovery": {key: url, "allow_insecure": True}})
    other = "ftp://chat.x.org/"
    assert problems_for({"discovery": {key: other}}) == [
        f"discovery.{key}: must start with {secure}, got {other!r}"
    ]
