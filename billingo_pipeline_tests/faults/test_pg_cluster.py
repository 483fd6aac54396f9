"""The throwaway PostgreSQL cluster the outage tests stop and start (never the shared server)."""

from __future__ import annotations

import os

import psycopg
import pytest
import sqlalchemy as sa

from billingo_pipeline_tests.pg_cluster import PostgresCluster, throwaway_cluster, unprivileged_user

pytestmark = pytest.mark.slow  # starts and stops a throwaway PostgreSQL cluster


def _connect(cluster: PostgresCluster, database: str) -> psycopg.Connection:
    # A fresh connection each time: a pooled one would only report the server's earlier death.
    return psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname=database, connect_timeout=5)


def test_stopped_cluster_refuses_connections_and_keeps_its_data_when_started_again(running_pg_cluster):
    cluster = running_pg_cluster
    url = cluster.create_database("outage_probe")
    assert sa.make_url(url).host == "127.0.0.1" and sa.make_url(url).port == cluster.port != 5432
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE survivor (id int PRIMARY KEY, note text)"))
        conn.execute(sa.text("INSERT INTO survivor VALUES (1, 'committed before the outage')"))

    cluster.stop()
    assert not cluster.is_running()
    with pytest.raises(psycopg.OperationalError, match="(?i)connection refused"):
        _connect(cluster, "outage_probe")

    cluster.start()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT note FROM survivor")).all() == [("committed before the outage",)]
    cluster.restart()
    with _connect(cluster, "outage_probe") as conn:
        assert conn.execute("SELECT count(*) FROM survivor").fetchone() == (1,)
    engine.dispose()


def test_cluster_listens_on_loopback_only_and_runs_unprivileged(running_pg_cluster):
    with _connect(running_pg_cluster, "postgres") as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith(running_pg_cluster.bin_dir.parent.name)
    owner = os.stat(running_pg_cluster.data_dir).st_uid
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the unprivileged user
        assert owner != 0 and running_pg_cluster.os_user == unprivileged_user()
    else:
        assert owner == os.geteuid()


def test_teardown_removes_everything_even_with_the_server_down():
    with throwaway_cluster() as cluster:
        base_dir, port = cluster.base_dir, cluster.port
        cluster.stop()
    assert not base_dir.exists() and not cluster.is_running()
    cluster.teardown()  # twice is harmless
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5)
