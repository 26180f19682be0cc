"""Settings: env names, nesting, TOML file, validation messages that name the field, masking."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scaleops.cli.app import app
from scaleops.core.settings import ConfigError, env_name, load_settings, mask_url_password

SECRET = "s3cr3t-pa55word"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SCALEOPS_") or key == "PREFECT_API_URL":
            monkeypatch.delenv(key)


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.s3.primary_bucket != settings.s3.replica_bucket
    assert settings.postgres.replica_dsn is None


def test_documented_env_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "SCALEOPS_POSTGRES__DSN": f"postgresql://app:{SECRET}@db:5432/app",
        "SCALEOPS_POSTGRES__REPLICA_DSN": "host=replica port=5433 user=app",
        "SCALEOPS_REDIS__URL": "redis://cache:6380/2",
        "SCALEOPS_REDIS__CLUSTER_URL": "redis://cluster-1:7000",
        "SCALEOPS_S3__ENDPOINT_URL": "http://127.0.0.1:9000",
        "SCALEOPS_S3__PRIMARY_REGION": "eu-west-1",
        "SCALEOPS_S3__PRIMARY_BUCKET": "backups-eu",
        "SCALEOPS_S3__REPLICA_REGION": "eu-central-1",
        "SCALEOPS_S3__REPLICA_BUCKET": "backups-eu-replica",
        "PREFECT_API_URL": "http://127.0.0.1:4200/api",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.postgres.dsn.get_secret_value() == values["SCALEOPS_POSTGRES__DSN"]
    assert s.postgres.replica_dsn is not None
    assert s.redis.url == "redis://cache:6380/2"
    assert s.redis.cluster_url == "redis://cluster-1:7000"
    assert s.s3.endpoint_url == "http://127.0.0.1:9000"
    assert (s.s3.primary_region, s.s3.primary_bucket) == ("eu-west-1", "backups-eu")
    assert (s.s3.replica_region, s.s3.replica_bucket) == ("eu-central-1", "backups-eu-replica")
    assert s.prefect_api_url == "http://127.0.0.1:4200/api"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("SCALEOPS_REDIS__URL", "redis//cache:6379", "Redis URL"),
        ("SCALEOPS_REDIS__URL", "http://cache:6379", "Redis URL"),
        ("SCALEOPS_REDIS__URL", "redis://cache:port/0", "Redis URL"),
        ("SCALEOPS_REDIS__CLUSTER_URL", "cluster-1:7000", "Redis URL"),
        ("SCALEOPS_POSTGRES__DSN", "host=db port=5432 = oops", "PostgreSQL"),
        ("SCALEOPS_S3__PRIMARY_BUCKET", "Bad_Bucket", "bucket"),
        ("SCALEOPS_S3__ENDPOINT_URL", "localhost:9000", "endpoint"),
        ("SCALEOPS_SANDBOX__START_TIMEOUT_SECONDS", "-1", "greater than 0"),
        ("SCALEOPS_REDIS__NO_SUCH_FIELD", "1", "Extra inputs"),
    ],
)
def test_bad_values_name_the_field(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    names = [n for n, _ in raised.value.problems]
    assert names == [name]
    assert words in raised.value.problems[0][1]


def test_every_bad_field_is_reported_and_no_secret_is_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_REDIS__URL", f"redis://:{SECRET}@cache:xx")
    monkeypatch.setenv("SCALEOPS_S3__REPLICA_BUCKET", "UPPER")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert sorted(n for n, _ in raised.value.problems) == [
        "SCALEOPS_REDIS__URL",
        "SCALEOPS_S3__REPLICA_BUCKET",
    ]
    assert SECRET not in str(raised.value)


def test_toml_file_is_read_and_env_wins(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "scaleops.toml"
    config.write_text('[redis]\nurl = "redis://from-file:6379/1"\n[s3]\nprimary_bucket = "file-bucket"\n')
    monkeypatch.setenv("SCALEOPS_CONFIG", str(config))
    monkeypatch.setenv("SCALEOPS_S3__PRIMARY_BUCKET", "env-bucket")
    s = load_settings()
    assert s.redis.url == "redis://from-file:6379/1"
    assert s.s3.primary_bucket == "env-bucket"


def test_missing_config_file_is_named(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert raised.value.problems[0][0] == "SCALEOPS_CONFIG"


def test_secrets_are_collected_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_POSTGRES__DSN", f"postgresql://app:{SECRET}@db/app")
    monkeypatch.setenv("SCALEOPS_POSTGRES__REPLICA_DSN", f"host=r user=app password={SECRET}x")
    monkeypatch.setenv("SCALEOPS_REDIS__URL", "redis://:cachepass1@cache:6379/0")
    monkeypatch.setenv("SCALEOPS_S3__SECRET_ACCESS_KEY", "AKIASECRETVALUE")
    s = load_settings()
    found = s.secrets()
    assert SECRET in found and f"{SECRET}x" in found and "cachepass1" in found and "AKIASECRETVALUE" in found
    shown = json.dumps(s.masked())
    for secret in (SECRET, "cachepass1", "AKIASECRETVALUE"):
        assert secret not in shown
    assert "postgresql://app:****@db/app" in shown
    assert "redis://:****@cache:6379/0" in shown


def test_mask_url_password_forms() -> None:
    assert mask_url_password("postgresql://u:p4ss@h:5432/d") == "postgresql://u:****@h:5432/d"
    assert mask_url_password("host=h password=p4ss user=u") == "host=h password=**** user=u"
    assert mask_url_password("redis://h:6379/0") == "redis://h:6379/0"


def test_env_name() -> None:
    assert env_name(("redis", "cluster_url")) == "SCALEOPS_REDIS__CLUSTER_URL"
    assert env_name(("prefect_api_url",)) == "PREFECT_API_URL"


def test_config_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("SCALEOPS_POSTGRES__DSN", f"postgresql://app:{SECRET}@db/app")
    shown = runner.invoke(app, ["config", "show", "--json"])
    assert shown.exit_code == 0
    assert SECRET not in shown.stdout
    assert json.loads(shown.stdout)["postgres"]["dsn"] == "postgresql://app:****@db/app"
    table = runner.invoke(app, ["config", "show"])
    assert table.exit_code == 0 and "SCALEOPS_POSTGRES__DSN" in table.stdout and SECRET not in table.stdout
    assert runner.invoke(app, ["config", "check", "preflight"]).exit_code == 0

    monkeypatch.setenv("SCALEOPS_REDIS__URL", "not-a-url")
    bad = runner.invoke(app, ["config", "check"])
    assert bad.exit_code == 2
    assert "SCALEOPS_REDIS__URL" in bad.stderr


def test_config_check_names_what_each_duty_misses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production defaults hold no demo data: an empty environment is not ready, and says why."""
    runner = CliRunner()
    empty = runner.invoke(app, ["config", "check", "--json"])
    assert empty.exit_code == 2
    report = json.loads(empty.stdout)
    assert report["preflight"] == {"ready": True, "missing": []}
    assert "no series configured (SCALEOPS_CAPACITY__SERIES)" in report["capacity-forecast"]["missing"]
    assert "SCALEOPS_CACHE__WARM_SETS" in report["cache-warming"]["missing"][0]
    assert "SCALEOPS_BACKUP__DATABASES" in report["backup-verification"]["missing"][0]
    assert "SCALEOPS_CHAINS__" in report["l2-batch-posting"]["missing"][0]

    monkeypatch.setenv(
        "SCALEOPS_CAPACITY__SERIES", '[{"name": "x", "source": "csv", "path": "a.csv", "threshold": 1}]'
    )
    monkeypatch.setenv("SCALEOPS_CACHE__WARM_SETS", '{"hot": {"query": "select k, v from t"}}')
    ready = runner.invoke(app, ["config", "check", "capacity-forecast", "cache-warming"])
    assert ready.exit_code == 0, ready.stderr
    unknown = runner.invoke(app, ["config", "check", "no-such-duty"])
    assert unknown.exit_code == 2 and "no-such-duty" in unknown.stderr
