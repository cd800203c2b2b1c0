"""Where to look at a run: ``get_portal_url(run_id)``."""

from __future__ import annotations

from urllib.parse import urlsplit


def get_portal_url(run_id: str, tracking_uri: str | None = None) -> str:
    """The web page of run ``run_id``.

    - AML store (the session's link, ``azureml://`` or its https form): the run in AML studio
      of the workspace's cloud, ``https://ml.azure.com/runs/<id>?wsid=/subscriptions/…``.
    - Another MLflow server (http/https): the run in that server's UI.
    - The embedded store or another local store: the run in the MLflow UI that
      ``spark-tracking ui`` serves (``http://127.0.0.1:5000`` by default).

    ``tracking_uri`` defaults to MLflow's current tracking URI (the one configure() set).
    """
    from .azure.clouds import cloud as cloud_named
    from .azure.clouds import cloud_of_host
    from .azure.resources import workspace_ref_of_tracking_uri
    from .azure.store import is_aml_tracking_uri

    if tracking_uri is None:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    if is_aml_tracking_uri(tracking_uri):
        ref = workspace_ref_of_tracking_uri(tracking_uri)
        if ref is not None:
            chosen = cloud_of_host(urlsplit(tracking_uri).netloc)
            if chosen is None:  # a proxy or private endpoint: the configured cloud
                from .config import Config

                chosen = cloud_named(Config.resolve().azure_cloud)
            return (
                f"{chosen.studio_url}/runs/{run_id}?wsid=/subscriptions/{ref.subscription_id}"
                f"/resourcegroups/{ref.resource_group}/workspaces/{ref.name}"
            )
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment}/runs/{run_id}"
