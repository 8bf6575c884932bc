"""Authentication of the HTTP request before any session exists (``[auth]``, off by default).

A BOSH creation request or a WebSocket upgrade must carry a credential the operator's web
application issued, in the ``Authorization: Bearer`` header, a cookie or a query parameter.
It is checked in one of two ways:

* ``token``: an HS256 JSON Web Token signed with the shared ``auth.token_secret``; it must
  carry ``sub`` (the user) and ``exp``, and ``aud`` if configured. No network call. The
  secret is the one the config was loaded with (``Config.secrets``); a reload that changes it
  builds a new Authenticator (issue 13, finding 5).
* ``subrequest``: boshd asks ``auth.subrequest_url`` (GET, with the client's Authorization,
  Cookie and the original URI), like nginx ``auth_request``: 2xx allows, and the
  ``auth.subject_header`` response header names the user; 401 and 403 refuse. Those
  verdicts are cached for ``auth.cache_ttl``. Any other status (5xx, redirects, 404, 429...),
  a timeout or an unreachable URL is an error of the application, not a verdict, as with
  nginx: it refuses (fail closed, 503) and is never cached, so the next request asks again.

A refusal happens before any upstream connection (issue 9). The subject is logged with the
session and, with ``auth.require_jid_match``, must match the JID the client binds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp
import jwt

from boshd.config import AuthConfig
from boshd.frontend.view import RequestView

log = logging.getLogger("boshd.auth")


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str


class AuthRefused(Exception):
    """The request may not open a session; ``status`` is 401 (no or bad credential), 403
    (refused by the application) or 503 (the application could not be asked)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Authenticator:
    def __init__(self, config: AuthConfig, secret: str = "") -> None:
        self.config = config
        self._secret = secret  # Config.secrets.auth_token_secret, checked by the loader
        self._cache: OrderedDict[str, tuple[float, Identity | AuthRefused]] = OrderedDict()
        self._http: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off"

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def credential(self, request: RequestView) -> str | None:
        c = self.config
        if c.credential == "bearer":
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return None
            return value.strip() or None
        if c.credential == "cookie":
            return request.cookies.get(c.cookie_name) or None
        return request.query.get(c.query_param) or None

    async def check(self, request: RequestView) -> Identity | None:
        """None when authentication is off; an Identity, or AuthRefused."""
        if not self.enabled:
            return None
        credential = self.credential(request)
        if credential is None:
            raise AuthRefused(401, f"no credential ({self.config.credential})")
        if self.config.mode == "token":
            return self._verify_token(credential)
        return await self._ask(credential, request)

    def _verify_token(self, token: str) -> Identity:
        options = {"require": ["exp", "sub"]}
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],  # never 'none', never an asymmetric confusion
                audience=self.config.token_audience or None,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise AuthRefused(401, "token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthRefused(401, f"invalid token: {exc}") from None
        return Identity(str(claims["sub"]))

    async def _ask(self, credential: str, request: RequestView) -> Identity:
        key = hashlib.sha256(credential.encode()).hexdigest()  # never keep the secret itself
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            verdict = cached[1]
            if isinstance(verdict, AuthRefused):
                raise verdict
            return verdict
        verdict = await self._subrequest(request)
        if not isinstance(verdict, AuthRefused) or verdict.status in (401, 403):
            # Only the application's verdicts are cached; its errors are not (issue 13).
            self._cache[key] = (now + self.config.cache_ttl, verdict)
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        if isinstance(verdict, AuthRefused):
            raise verdict
        return verdict

    async def _subrequest(self, request: RequestView) -> Identity | AuthRefused:
        c = self.config
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=c.subrequest_timeout)
            )
        headers = {"X-Original-URI": str(request.rel_url), "X-Original-Method": request.method}
        for name in ("Authorization", "Cookie"):
            if name in request.headers:
                headers[name] = request.headers[name]
        try:
            async with self._http.get(
                c.subrequest_url, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    subject = resp.headers.get(c.subject_header, "").strip()
                    return Identity(subject or "-")
                if resp.status in (401, 403):
                    return AuthRefused(resp.status, f"refused by {c.subrequest_url}")
                log.warning(
                    "auth sub-request to %s answered %d, which is no verdict (2xx, 401, 403)",
                    c.subrequest_url,
                    resp.status,
                )
                return AuthRefused(503, f"authentication service error ({resp.status})")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "auth sub-request to %s failed: %s", c.subrequest_url, exc or type(exc).__name__
            )
            return AuthRefused(503, "authentication service unavailable")
