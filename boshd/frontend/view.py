"""What request handling needs from an HTTP request, whichever server parsed it.

aiohttp's ``web.Request`` satisfies :class:`RequestView` as it is; the fast BOSH path
(boshd.frontend.fasthttp) builds a small object with the same members, so one piece of code
decides every answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from yarl import URL


class RequestView(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def rel_url(self) -> URL: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def query(self) -> Mapping[str, str]: ...

    @property
    def cookies(self) -> Mapping[str, str]: ...

    @property
    def remote(self) -> str | None: ...

    @property
    def secure(self) -> bool: ...

    @property
    def transport(self) -> asyncio.Transport | None: ...
