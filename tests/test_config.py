"""Configuration: one registry, one order, clear errors."""

import json
import os
import re

import pytest

from spark_tracking.config import SETTINGS, Config, ConfigError, write_config_file


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def test_each_source_wins_over_the_next(tmp_path):
    cfg_file = _write(tmp_path / "c.json", {"tracking_uri": "file-uri"})
    env = {"SPARK_TRACKING_CONFIG_FILE": cfg_file}
    assert Config.resolve(environ=env, spark_conf={}).tracking_uri == "file-uri"
    env["MLFLOW_TRACKING_URI"] = "mlflow-env-uri"
    assert Config.resolve(environ=env, spark_conf={}).tracking_uri == "mlflow-env-uri"
    env["SPARK_TRACKING_TRACKING_URI"] = "env-uri"
    assert Config.resolve(environ=env, spark_conf={}).tracking_uri == "env-uri"
    conf = {"spark.sparktracking.tracking_uri": "conf-uri"}
    cfg = Config.resolve(environ=env, spark_conf=conf)
    assert (cfg.tracking_uri, cfg.sources["tracking_uri"]) == (
        "conf-uri",
        "spark conf spark.sparktracking.tracking_uri",
    )
    cfg = Config.resolve({"tracking_uri": "arg-uri"}, environ=env, spark_conf=conf)
    assert (cfg.tracking_uri, cfg.sources["tracking_uri"]) == ("arg-uri", "argument")


def test_embedded_default_when_nothing_is_set(tmp_path):
    cfg = Config.resolve(environ={"HOME": str(tmp_path)}, spark_conf={})
    assert cfg.tracking_uri is None
    assert cfg.effective_tracking_uri == f"sqlite:///{os.path.expanduser('~')}/.spark_tracking/mlflow.db"


def test_our_own_exported_uri_is_not_mistaken_for_the_users(tmp_path):
    cfg_file = _write(tmp_path / "c.json", {"tracking_uri": "from-file"})
    env = {"SPARK_TRACKING_CONFIG_FILE": cfg_file, "MLFLOW_TRACKING_URI": "old", "SPARK_TRACKING_MANAGED_URI": "old"}
    assert Config.resolve(environ=env, spark_conf={}).tracking_uri == "from-file"


def test_bad_value_names_the_value_the_source_and_the_fix():
    with pytest.raises(ConfigError) as err:
        Config.resolve(environ={"SPARK_TRACKING_RELAY_PORT": "eighty"}, spark_conf={})
    assert str(err.value).startswith(
        "relay_port='eighty' from env SPARK_TRACKING_RELAY_PORT is not a valid int: invalid literal for int()"
    )
    assert "Fix env SPARK_TRACKING_RELAY_PORT" in str(err.value)
    with pytest.raises(
        ConfigError,
        match=r"disabled='maybe' from spark conf spark.sparktracking.disabled is not a valid bool: 'maybe' is not a boolean",
    ):
        Config.resolve(environ={}, spark_conf={"spark.sparktracking.disabled": "maybe"})


def test_unknown_key_in_config_file_is_refused(tmp_path):
    cfg_file = _write(tmp_path / "c.json", {"tracking_url": "x"})
    with pytest.raises(ConfigError, match=r"has unknown key 'tracking_url'; known keys: "):
        Config.resolve(environ={"SPARK_TRACKING_CONFIG_FILE": cfg_file}, spark_conf={})


def test_config_file_round_trip_and_search_order(tmp_path, monkeypatch):
    home_file = os.path.expanduser("~/.spark_tracking/config.json")
    path = write_config_file({"experiment_name": "exp", "rate_limit": 40})
    assert path == home_file
    cfg = Config.resolve(spark_conf={})
    assert (cfg.experiment_name, cfg.rate_limit) == ("exp", 40.0)
    assert cfg.sources["rate_limit"] == f"config file {home_file}"


def test_debug_string_masks_secrets():
    secret = [s for s in SETTINGS if s.secret]
    cfg = Config.resolve(
        environ={s.env: "hunter2-secret" for s in secret} | {"SPARK_TRACKING_RELAY_PORT": "5"}, spark_conf={}
    )
    text = cfg.debug_string()
    assert "hunter2-secret" not in text
    assert "relay_port=5 (from env SPARK_TRACKING_RELAY_PORT)" in text


def test_every_setting_has_env_conf_and_doc():
    for s in SETTINGS:
        assert re.fullmatch(r"SPARK_TRACKING_[A-Z_]+", s.env)
        assert s.spark_conf == "spark.sparktracking." + s.name
        assert len(s.doc) > 20


def test_the_databricks_runtimes_default_uri_ranks_below_every_setting(tmp_path):
    from spark_tracking.config import PLATFORM_DEFAULT

    runtime = {"MLFLOW_TRACKING_URI": "databricks", "DATABRICKS_RUNTIME_VERSION": "17.3"}
    cfg = Config.resolve(environ=runtime, spark_conf={})
    assert (cfg.tracking_uri, cfg.sources["tracking_uri"], cfg.tracking_uri_chosen) == (
        "databricks",
        PLATFORM_DEFAULT,
        False,
    )
    cfg_file = _write(tmp_path / "c.json", {"tracking_uri": "from-file"})
    cfg = Config.resolve(environ=dict(runtime, SPARK_TRACKING_CONFIG_FILE=cfg_file), spark_conf={})
    assert (cfg.tracking_uri, cfg.tracking_uri_chosen) == ("from-file", True)
    off_databricks = Config.resolve(environ={"MLFLOW_TRACKING_URI": "databricks"}, spark_conf={})
    assert off_databricks.sources["tracking_uri"] == "env MLFLOW_TRACKING_URI"  # the user's own choice
