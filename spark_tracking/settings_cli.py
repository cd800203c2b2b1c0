"""``spark-tracking settings``: print the settings table or the resolved configuration."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("settings", help="print every setting, or the resolved configuration")
    p.add_argument("--resolved", action="store_true",
                   help="print the configuration this session resolves to (secrets masked) and where runs go, "
                        "with the source that won and why")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .config import Config, settings_table_markdown

    if args.resolved:
        cfg = Config.resolve()
        print(cfg.debug_string())
        print(f"tracking URI: {where(cfg)}")
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
