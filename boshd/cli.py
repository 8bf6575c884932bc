"""Command line: ``boshd run``, ``boshd check-config``, ``boshd version``, ``boshd sessions``.

The only place that exits: 0 on success, 1 on a runtime failure, 78 (EX_CONFIG) on a bad
configuration, with every problem printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from boshd import __version__
from boshd.config import Config, config_path, load_config
from boshd.core.errors import ConfigError

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


DESCRIPTION = """\
boshd: an XMPP connection manager. It serves BOSH (XEP-0124/0206) and WebSocket (RFC 7395)
to web clients and bridges each session to an XMPP server over TCP.
"""

EPILOG = """\
exit status: 0 success, 1 runtime failure, 78 invalid configuration.

examples:
  boshd check-config --config /etc/boshd/boshd.toml
  boshd run --config /etc/boshd/boshd.toml
  boshd sessions list
  boshd sessions --url http://127.0.0.1:5281 --token TOKEN show SID

Documentation: README.md and docs/ in the source tree (configuration.md, deployment.md).
"""

CONFIG_HELP = "config file (default: $BOSHD_CONFIG or /etc/boshd/boshd.toml)"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; ``--config`` is accepted before or after the subcommand."""
    parser = argparse.ArgumentParser(
        prog="boshd",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--version", action="version", version=f"boshd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", dest="sub_config", metavar="CONFIG", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("run", "run the daemon in the foreground (logs to stderr)"),
        ("check-config", "validate the configuration; exit 0, or 78 listing every problem"),
        ("version", "print the version"),
    ):
        sub.add_parser(name, help=text, description=text, parents=[common])
    from boshd import admincli

    admincli.add_parser(sub, parents=[common])
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``boshd sessions list | head``): not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"boshd {__version__}")
        return 0
    path = args.sub_config or args.config
    from boshd import admincli

    if args.command == "sessions" and args.url and args.token and path is None:
        # Everything the client needs is on the command line: no config file is read.
        return admincli.run(None, args)
    try:
        config = _load(path)
    except ConfigError as exc:
        n = len(exc.problems)
        print(
            f"boshd: invalid configuration ({n} problem{'s' if n != 1 else ''}):", file=sys.stderr
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        if args.command == "sessions":
            print("  (with --url and --token, boshd sessions needs no config)", file=sys.stderr)
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
