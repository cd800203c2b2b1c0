"""spark_tracking: link Azure Databricks to an Azure Machine Learning workspace (MLflow)."""

import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
version = {}
with open(os.path.join(here, "spark_tracking", "_version.py")) as fh:
    exec(fh.read(), version)
with open(os.path.join(here, "README.md"), encoding="utf-8") as fh:
    long_description = fh.read()

# PySpark's Spark Connect client (pyspark[connect] without pyspark): a local Connect session
# needs it; on Databricks the runtime ships it
_CONNECT_CLIENT = ["grpcio>=1.67", "grpcio-status>=1.67", "googleapis-common-protos>=1.65", "zstandard>=0.23"]

setup(
    name="spark-tracking",
    version=version["__version__"],
    description="Central MLflow tracking (Azure ML or any MLflow URI) for Spark sessions, "
    "with live, lossless forwarding of metrics logged inside Spark tasks.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["spark_tracking", "spark_tracking.*"]),
    package_data={"spark_tracking": ["py.typed", "resources/*"]},
    python_requires=">=3.9",
    # On a Databricks cluster the runtime provides pyspark (its own build) and MLflow, so neither
    # is a hard requirement: installing this wheel (cluster library, %pip) never replaces what the
    # runtime ships. MLflow comes as `mlflow` (DBR 14.3/15.4 ML: the full 2.x distribution, which
    # does not depend on `mlflow-skinny`) or `mlflow-skinny`; no requirement can say "either", and
    # one on `mlflow-skinny` made pip install the newest skinny over the runtime's `mlflow/`
    # folder (measured: mlflow 2.9.2 + skinny -> `import mlflow` reports 3.18.0). The init script
    # installs mlflow-skinny only where neither is present (install/node.py RUNTIME_REQUIREMENTS,
    # the tested range 2.9 - 3.x); locally, the `local` extra brings mlflow.
    install_requires=[
        "databricks-sdk>=0.30",
        "azure-identity>=1.16",
        "requests>=2.28",
    ],
    extras_require={
        # local use: Spark, the embedded MLflow store (SQLite) and `mlflow server`
        "local": ["pyspark>=3.5", "mlflow>=2.9,<4", "pandas<3", "pyarrow", "numpy"],
        "plot": ["matplotlib>=3.7"],
        # the live view of a run in a notebook (spark_tracking.RunDetails); Databricks Runtime ships both
        "notebook": ["ipywidgets>=7.6", "matplotlib>=3.7"],
        # azureml-mlflow's own azureml:// store, the only client of AML's artifact service (checked:
        # 1.62.0.post6, which pins mlflow-skinny <= 3.15; CI runs it beside MLflow 3.0.1 in .ci/matrix).
        # For local use: on a cluster, `spark-tracking install --azureml-mlflow` has the init script
        # install it under the runtime's constraints (as a cluster library its skinny pin would be
        # installed over the runtime's mlflow)
        "azureml": ["azureml-mlflow>=1.62"],
        # a Spark Connect client (SparkSession.builder.remote); its grpc needs protobuf >= 5, which
        # MLflow < 2.12 refuses, so it is an extra of its own
        "connect": _CONNECT_CLIENT,
        # the checks CI runs on the code (pyproject.toml configures them; .ci/lint runs them)
        "lint": ["ruff>=0.6,<1", "mypy>=1.10,<3", "types-protobuf", "types-requests", "types-tqdm"],
        # the documentation site (mkdocs.yml); pymdown-extensions gives the snippets extension
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "pymdown-extensions>=10.0,<14"],
        "test": [
            "pytest>=8",
            "pytest-timeout",
            "hypothesis",
            "nbclient",
            "nbformat",
            "ipykernel",
            "matplotlib>=3.7",
            "tqdm",
            "wheel",
            "trustme",
            "time-machine",
            "nbconvert",
            "pillow",
        ],
        # the task patterns' tests (tests/patterns) with the real client libraries; torch pinned
        # exactly: a range admitting a newer one downloads several GB of CUDA wheels. lightning
        # 2.6 installs beside it with nothing CUDA (checked: pip install --dry-run adds lightning,
        # pytorch-lightning 2.6.6, torchmetrics 1.9.0, lightning-utilities 0.15.3); so do
        # transformers 5 and accelerate 1 (checked: --dry-run adds tokenizers, safetensors,
        # huggingface_hub and their pure-Python dependencies, nothing CUDA)
        "patterns": [
            "scikit-learn",
            "hyperopt",
            "torch==2.13.0",
            "lightning>=2.6,<2.7",
            "transformers>=5,<6",
            "accelerate>=1,<2",
        ],
    },
    entry_points={
        "console_scripts": ["spark-tracking=spark_tracking.cli:main"],
        "mlflow.run_context_provider": ["spark_tracking=spark_tracking.plugins:SparkTrackingRunContext"],
        "mlflow.request_header_provider": ["spark_tracking=spark_tracking.plugins:SparkTrackingHeaders"],
        "mlflow.request_auth_provider": ["spark-tracking-azure=spark_tracking.azure.mlflow_auth:AzureAuthProvider"],
        "mlflow.tracking_store": [
            "spark-tracking-task=spark_tracking.forwarding.task.store:TaskStore",
            "spark-tracking-aml=spark_tracking.azure.tracking_store:lazy_link_store",
            # MLflow's SQL store, with the embedded store's artifacts in <home>/artifacts
            "sqlite=spark_tracking.embedded_store:sqlite_store",
        ],
        # a registry for the session's own scheme: MLflow takes the registry URI from the tracking URI
        "mlflow.model_registry_store": ["spark-tracking-aml=spark_tracking.azure.tracking_store:lazy_link_registry"],
        "mlflow.default_experiment_provider": [
            "spark_tracking=spark_tracking.plugins:SparkTrackingExperiment",
        ],
        "mlflow.artifact_repository": [
            "spark-tracking-artifacts=spark_tracking.forwarding.task.artifacts:TaskArtifactRepository",
        ],
    },
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering"],
)
