"""``spark-tracking settings``: print the settings table or the resolved configuration."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("settings", help="print every setting, or the resolved configuration")
    p.add_argument("--resolved", action="store_true",
                   help="print the configuration this session resolves to (secrets masked)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .config import Config, settings_table_markdown

    if args.resolved:
        cfg = Config.resolve()
        print(cfg.debug_string())
        print(f"tracking URI: {_where(cfg)}")
    else:
        print(settings_table_markdown())
    return 0


def _where(cfg) -> str:
    if cfg.tracking_uri:
        return cfg.tracking_uri
    from .azure import AzureLinkError
    from .azure.link import find_source

    try:
        source = find_source(cfg)
    except AzureLinkError as exc:
        return f"none: {exc}"
    if source is not None:
        return f"the Azure ML workspace named by {source.description} ('spark-tracking link --dry-run' resolves it)"
    return cfg.embedded_store_uri
