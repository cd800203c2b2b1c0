"""``spark-tracking link`` and ``spark-tracking doctor``."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add ``link``, ``doctor`` and ``move-runs`` to the ``spark-tracking`` command."""
    link = subparsers.add_parser(
        "link",
        help="resolve the AML workspace and record the link in the config file",
        description="Resolve the Azure ML workspace (arguments, settings, AML config.json or the Databricks "
        "workspace's link), read it from ARM, and record its tracking URI in the spark_tracking "
        "config file (no secrets). Every later session logs there.",
    )
    link.add_argument("--workspace-id", help="ARM id of the AML workspace")
    link.add_argument("--subscription-id")
    link.add_argument("--resource-group")
    link.add_argument("--workspace-name")
    link.add_argument("--databricks-resource-id", help="ARM id of the Databricks workspace whose AML link to follow")
    link.add_argument("--cloud", help="AzureCloud, AzureChinaCloud or AzureUSGovernment")
    link.add_argument(
        "--config-file", help="file to write (default: ~/.spark_tracking/config.json, or $SPARK_TRACKING_CONFIG_FILE)"
    )
    link.add_argument("--dry-run", action="store_true", help="resolve and print, write nothing")
    link.set_defaults(func=_link)
    doctor = subparsers.add_parser(
        "doctor",
        help="check configuration, credentials, link and store step by step",
        description="Check, step by step with a fix for each failure: the configuration (secrets masked), the "
        "AML link, a token for the right scope, the store answering, a probe run, artifact "
        "support, and with --spark that Spark workers see the same configuration.",
    )
    doctor.add_argument(
        "--spark",
        action="store_true",
        help="start a Spark session (SPARK_MASTER, default local[2]) and check its workers",
    )
    doctor.set_defaults(func=_doctor)
    from .move import register as register_move

    register_move(subparsers)


def _link(args) -> int:
    from ..config import Config, ConfigError, config_file_candidates, write_config_file
    from . import AzureLinkError
    from .link import find_source, resolve

    explicit = {
        "aml_workspace_id": args.workspace_id,
        "subscription_id": args.subscription_id,
        "resource_group": args.resource_group,
        "workspace_name": args.workspace_name,
        "databricks_resource_id": args.databricks_resource_id,
        "azure_cloud": args.cloud,
        "config_file": args.config_file,
    }
    try:
        cfg = Config.resolve(explicit)
        source = find_source(cfg, use_profiles=True)
        found = resolve(cfg, source=source, use_cache=False)
    except (AzureLinkError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"AML workspace: {found.workspace_id} ({found.region}, {found.cloud})")
    print(f"found from:    {found.source}")
    print(f"tracking URI:  {found.tracking_uri}")
    if args.dry_run:
        return 0
    path = write_config_file(
        {"tracking_uri": found.tracking_uri, "aml_workspace_id": found.workspace_id, "azure_cloud": found.cloud},
        args.config_file or config_file_candidates()[0],
    )
    print(f"recorded in:   {path}")
    return 0


def _doctor(args) -> int:
    from .doctor import doctor

    spark = None
    if args.spark:
        import os

        from pyspark.sql import SparkSession

        spark = SparkSession.builder.master(os.environ.get("SPARK_MASTER", "local[2]")).getOrCreate()
    try:
        return 0 if doctor(spark) else 1
    finally:
        if spark is not None:
            spark.stop()
