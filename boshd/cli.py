"""Command line: ``boshd run``, ``boshd check-config``, ``boshd version``.

The only place that exits: 0 on success, 1 on a runtime failure, 78 (EX_CONFIG) on a bad
configuration, with every problem printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from boshd import __version__
from boshd.config import Config, config_path, load_config
from boshd.errors import ConfigError

EX_CONFIG = 78


def _load(path_arg: str | None) -> Config:
    return load_config(config_path(path_arg))


def setup_logging(config: Config) -> None:
    level = getattr(logging, config.log.level.upper())
    if config.log.format == "json":
        from boshd.logjson import JsonFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler], force=True)
    else:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="boshd", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="config file (default: $BOSHD_CONFIG or /etc/boshd/boshd.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the daemon in the foreground"),
        ("check-config", "validate the config and exit 0 or 78"),
        ("version", "print the version"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    from boshd import admincli

    admincli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"boshd {__version__}")
        return 0
    path = args.sub_config or args.config
    try:
        config = _load(path)
    except ConfigError as exc:
        n = len(exc.problems)
        print(
            f"boshd: invalid configuration ({n} problem{'s' if n != 1 else ''}):", file=sys.stderr
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "sessions":
        return admincli.run(config, args)
    if args.command == "check-config":
        for warning in config.warnings:
            print(f"boshd: warning: {warning}", file=sys.stderr)
        print(f"{config.source}: OK")
        return 0
    setup_logging(config)
    from boshd.daemon import serve

    try:
        asyncio.run(serve(config))
    except OSError as exc:
        logging.getLogger("boshd").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
