"""The ``spark-tracking`` command. Each subcommand lives in its own module, which exposes
``register(subparsers)``; modules are imported only to build the parser, so keep their
top-level imports light (import mlflow/pyspark inside the command functions)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ._version import __version__

#: module -> the subcommands it registers (for the docs; order is the order in --help).
COMMAND_MODULES = (
    "spark_tracking.demo",  # demo
    "spark_tracking.hook",  # hook enable|disable|status
    "spark_tracking.settings_cli",  # settings
    "spark_tracking.azure.cli",  # link, doctor
    "spark_tracking.install.cli",  # install, uninstall
    "spark_tracking.show",  # show, ui
    "spark_tracking.forwarding.driver.replay",  # replay
)


def build_parser() -> argparse.ArgumentParser:
    """The ``spark-tracking`` parser, with the commands of every module in COMMAND_MODULES
    whose dependencies are installed."""
    parser = argparse.ArgumentParser(
        prog="spark-tracking",
        description="Link Spark sessions to a central MLflow store (Azure ML or any MLflow URI).",
    )
    parser.add_argument("--version", action="version", version=f"spark-tracking {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not (exc.name and (name == exc.name or name.startswith(exc.name + "."))):
                # a missing dependency inside the module, not the module itself
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``spark-tracking`` with ``argv`` (default: the command line); its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
