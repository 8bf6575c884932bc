"""``boshd sessions``: a command-line client for the admin API (see docs/api.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp

from boshd.config import Config


class NotAdminApi(Exception):
    """The URL answered, but not like the admin API."""


def admin_endpoint(config: Config | None, url: str | None) -> tuple[str, str | None]:
    """(base URL, unix socket path or None) from --url or the first admin listener."""
    if url:
        if url.startswith("unix:"):
            return "http://localhost", url[len("unix:") :]
        return url.rstrip("/"), None
    if config is None or not config.admin.listen:
        raise SystemExit("boshd: the admin API is off (admin.listen is empty); use --url")
    first = config.admin.listen[0]
    if first.startswith("unix:"):
        return "http://localhost", first[len("unix:") :]
    return f"http://{first}", None


def admin_token(config: Config | None, token: str | None) -> str:
    if token:
        return token
    if config is None:
        raise SystemExit("boshd: no admin token; use --token or a config with admin.token")
    return config.secrets.admin_token


async def _call(
    base: str, socket_path: str | None, token: str, method: str, path: str
) -> tuple[int, Any]:
    connector = aiohttp.UnixConnector(path=socket_path) if socket_path else None
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.request(method, base + path, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        text = await resp.text()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise NotAdminApi(f"answered HTTP {resp.status} without the admin API's JSON")
    return resp.status, data


def _table(sessions: list[dict[str, Any]]) -> str:
    columns = ("sid", "transport", "domain", "jid", "client_ip", "age", "idle", "held_requests")
    rows = [[str(s.get(c) if s.get(c) is not None else "-") for c in columns] for s in sessions]
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def run(config: Config | None, args: argparse.Namespace) -> int:
    """Carry out ``boshd sessions ...``; ``config`` is None when --url and --token say all."""
    base, socket_path = admin_endpoint(config, args.url)
    token = admin_token(config, args.token)
    if args.action == "list":
        method, path = "GET", "/sessions"
    elif args.action == "show":
        method, path = "GET", f"/sessions/{args.sid}"
    else:
        method, path = "DELETE", f"/sessions/{args.sid}?condition={args.condition}"
    try:
        status, data = asyncio.run(_call(base, socket_path, token, method, path))
    except (aiohttp.ClientError, OSError) as exc:
        print(f"boshd: cannot reach the admin API at {socket_path or base}: {exc}", file=sys.stderr)
        return 1
    except NotAdminApi as exc:
        print(f"boshd: {socket_path or base} is not the admin API: {exc}", file=sys.stderr)
        return 1
    if status >= 400:
        print(
            f"boshd: {status} {data.get('error', '')} {data.get('text', '')}".rstrip(),
            file=sys.stderr,
        )
        return 1
    if args.action == "list" and not args.json:
        print(_table(data["sessions"]))
        print(f"{data['count']} session(s)")
    else:
        print(json.dumps(data, indent=2))
    return 0


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    text = "list, show or end sessions through the admin API"
    p = sub.add_parser("sessions", help=text, description=text, parents=parents)
    p.add_argument("--url", help="admin API URL or unix:/path (default: from admin.listen)")
    p.add_argument(
        "--token",
        help="admin token (default: from admin.token / token_file); with --url as well, "
        "no config file is needed",
    )
    actions = p.add_subparsers(dest="action", required=True)
    lst = actions.add_parser("list", help="all live sessions")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = actions.add_parser("show", help="one session as JSON")
    show.add_argument("sid")
    end = actions.add_parser("end", help="end a session")
    end.add_argument("sid")
    end.add_argument(
        "--condition", default="policy-violation", choices=["policy-violation", "system-shutdown"]
    )
