"""Client-side SASL mechanisms for scripted test clients: PLAIN (RFC 4616) and SCRAM (RFC 5802,
RFC 7677) with SHA-1 and SHA-256, without channel binding (gs2 header ``n,,``).

Written with hashlib/hmac rather than reusing ``slixmpp.util.sasl``: that module is built around
slixmpp's credential/security callbacks and ``sasl.choose()``, and refuses SCRAM/PLAIN on an
unencrypted stream unless told otherwise; a 100-line explicit implementation is easier to drive
step by step from a protocol test (and to feed deliberately wrong proofs).

Usage::

    mech = make_mechanism("SCRAM-SHA-1", "alice", "alice-pw")
    first = mech.initial_response()          # bytes for <auth/>
    final = mech.challenge(server_first)     # bytes for <response/>
    mech.success(server_final)               # verifies the server signature (raises SaslError)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from typing import Protocol

SUPPORTED_MECHANISMS: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")


class SaslError(Exception):
    """Bad server data or a server signature that does not verify."""


class SaslMechanism(Protocol):
    name: str

    def initial_response(self) -> bytes: ...

    def challenge(self, data: bytes) -> bytes: ...

    def success(self, data: bytes) -> None: ...


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep (stored strings not allowed to hold unassigned code points)."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    norm = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    for c in norm:
        if any(table(c) for table in prohibited):
            raise SaslError(f"prohibited character {c!r} in SASLprep input")
    if any(stringprep.in_table_d1(c) for c in norm):
        if any(stringprep.in_table_d2(c) for c in norm):
            raise SaslError("mixed bidirectional text in SASLprep input")
        if not (stringprep.in_table_d1(norm[0]) and stringprep.in_table_d1(norm[-1])):
            raise SaslError("RandALCat text must start and end with RandALCat characters")
    return norm


class Plain:
    """RFC 4616 PLAIN: ``authzid NUL authcid NUL passwd`` in the initial response."""

    name = "PLAIN"

    def __init__(self, username: str, password: str, authzid: str = "") -> None:
        self._msg = b"\0".join(s.encode("utf-8") for s in (authzid, username, password))

    def initial_response(self) -> bytes:
        return self._msg

    def challenge(self, data: bytes) -> bytes:
        raise SaslError("PLAIN does not expect a challenge")

    def success(self, data: bytes) -> None:
        if data:
            raise SaslError("PLAIN success must not carry data")


class Scram:
    """RFC 5802 SCRAM-SHA-1 / RFC 7677 SCRAM-SHA-256, client side, no channel binding."""

    GS2_HEADER = b"n,,"

    def __init__(
        self, username: str, password: str, hash_name: str = "sha1", nonce: str | None = None
    ) -> None:
        self.hash_name = hash_name
        self.name = {"sha1": "SCRAM-SHA-1", "sha256": "SCRAM-SHA-256"}[hash_name]
        user = saslprep(username).replace("=", "=3D").replace(",", "=2C")
        self._password = saslprep(password).encode("utf-8")
        self.cnonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        self.client_first_bare = f"n={user},r={self.cnonce}".encode()
        self._server_signature: bytes | None = None
        self.iterations = 0

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash_name).digest()

    def initial_response(self) -> bytes:
        return self.GS2_HEADER + self.client_first_bare

    def challenge(self, data: bytes) -> bytes:
        if self._server_signature is not None:
            raise SaslError("unexpected second SCRAM challenge")
        attrs = _parse_attrs(data)
        if "m" in attrs:
            raise SaslError("mandatory SCRAM extension not supported")
        try:
            nonce, salt_b64, iterations = attrs["r"], attrs["s"], int(attrs["i"])
        except (KeyError, ValueError) as exc:
            raise SaslError(f"bad server-first-message {data!r}") from exc
        if not nonce.startswith(self.cnonce) or len(nonce) == len(self.cnonce):
            raise SaslError("server nonce does not extend the client nonce")
        if iterations < 1:
            raise SaslError("bad iteration count")
        self.iterations = iterations
        salt = base64.b64decode(salt_b64)
        salted = hashlib.pbkdf2_hmac(self.hash_name, self._password, salt, iterations)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        channel = base64.b64encode(self.GS2_HEADER).decode("ascii")
        final_without_proof = f"c={channel},r={nonce}".encode()
        auth_message = b",".join((self.client_first_bare, data, final_without_proof))
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return final_without_proof + b",p=" + base64.b64encode(proof)

    def success(self, data: bytes) -> None:
        if self._server_signature is None:
            raise SaslError("success before the SCRAM exchange finished")
        attrs = _parse_attrs(data)
        if "e" in attrs:
            raise SaslError(f"server error: {attrs['e']}")
        got = base64.b64decode(attrs.get("v", ""))
        if not hmac.compare_digest(got, self._server_signature):
            raise SaslError("server signature mismatch")


def _parse_attrs(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in data.decode("utf-8").split(","):
        if len(part) >= 2 and part[1] == "=":
            out[part[0]] = part[2:]
    return out


def make_mechanism(name: str, username: str, password: str) -> SaslMechanism:
    """A fresh client mechanism for `name` (one of `SUPPORTED_MECHANISMS`)."""
    if name == "PLAIN":
        return Plain(username, password)
    if name == "SCRAM-SHA-1":
        return Scram(username, password, "sha1")
    if name == "SCRAM-SHA-256":
        return Scram(username, password, "sha256")
    raise SaslError(f"unsupported mechanism {name}")
