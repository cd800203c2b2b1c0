"""``spark-tracking settings``: print the settings table or the resolved configuration."""

from __future__ import annotations

# The page docs/configuration.md is this text followed by the table; regenerate it with
# `spark-tracking settings --markdown > docs/configuration.md` (tests/test_docs.py checks it).
_PAGE_INTRO = """# Configuration

<!-- Generated from spark_tracking/settings.py by `spark-tracking settings --markdown`; do not edit. -->

Every setting has one source order: **explicit argument > Spark conf
`spark.sparktracking.<name>` > environment `SPARK_TRACKING_<NAME>` (and `MLFLOW_TRACKING_URI`
/ `MLFLOW_EXPERIMENT_NAME` when you set them) > config file > platform default > embedded
default.** The platform default is `MLFLOW_TRACKING_URI=databricks` as the Databricks Runtime sets
it; an Azure ML link wins over it (see [Azure ML](azure.md)). The config
file is JSON without secrets: the first of `$SPARK_TRACKING_CONFIG_FILE`,
`~/.spark_tracking/config.json`, `/etc/spark_tracking/config.json` (the one the init script
writes). `spark-tracking settings` prints this table from the registry
(`spark_tracking/settings.py`); `spark-tracking settings --resolved` prints what this session
resolves to, secrets masked.

"""


def configuration_page() -> str:
    """The documentation page of every setting (docs/configuration.md), from ``SETTINGS``."""
    from .settings import settings_table_markdown

    return _PAGE_INTRO + settings_table_markdown() + "\n"


def register(subparsers) -> None:
    """Add ``settings`` to the ``spark-tracking`` command."""
    p = subparsers.add_parser("settings", help="print every setting, or the resolved configuration")
    p.add_argument(
        "--resolved",
        action="store_true",
        help="print the configuration this session resolves to (secrets masked) and where runs go, with the source "
        "that won and why",
    )
    p.add_argument(
        "--markdown", action="store_true", help="print the documentation page of every setting (docs/configuration.md)"
    )
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .config import Config
    from .settings import settings_table_markdown

    if args.resolved:
        cfg = Config.resolve()
        print(cfg.debug_string())
        print(f"tracking URI: {where(cfg)}")
    elif args.markdown:
        print(configuration_page(), end="")
    else:
        print(settings_table_markdown())
    return 0


def where(cfg) -> str:
    """Where a session with ``cfg`` sends its runs and why (files and environment only)."""
    from .azure import AzureLinkError
    from .session import choose_store

    try:
        choice = choose_store(cfg)
    except AzureLinkError as exc:
        return f"{cfg.embedded_store_uri}, because the Azure ML link is misconfigured: {exc}"
    if choice.pending is not None:
        return f"{choice.why} ('spark-tracking link --dry-run' resolves it now)"
    return f"{choice.uri} ({choice.why})"
