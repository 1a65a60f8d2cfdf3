"""jobqueue on a Redis Cluster (tox's py311-django52-cluster: scripts/redis-cluster.sh's
3 masters and 3 replicas): the client, and topics spread over every master."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from django_redis.client import DefaultClient
from redis.cluster import RedisCluster

from jobqueue import engine, registry
from jobqueue.engine.connection import ConfigurationError, cluster_client, is_cluster
from jobqueue.models import Job

pytestmark = [
    pytest.mark.redis_cluster,
    pytest.mark.django_db(transaction=True),
]


def masters_of(client, topics):
    """``{master "host:port": [topics whose slot it serves]}``."""
    by_node = defaultdict(list)
    for topic in topics:
        by_node[client.get_node_from_key(engine.topic_keys(topic).queue).name].append(topic)
    return dict(by_node)


def test_a_cluster_url_gives_a_cluster_client_from_any_of_its_startup_nodes():
    client = engine.get_redis()
    assert is_cluster(client) and isinstance(client, RedisCluster)
    primaries = client.get_primaries()
    assert len(primaries) == 3
    # Several startup nodes, the first of them unreachable: the others are asked.
    others = ",".join(node.name for node in primaries)
    extra = cluster_client(f"redis+cluster://127.0.0.1:1,{others}", socket_connect_timeout=1)
    assert sorted(n.name for n in extra.get_primaries()) == sorted(n.name for n in primaries)
    with pytest.raises(ConfigurationError):
        cluster_client("redis+cluster://7000")


def test_the_suites_topics_are_spread_over_all_three_masters():
    client = engine.get_redis()
    topics = registry.topics()
    spread = masters_of(client, topics)
    assert sorted(spread) == sorted(node.name for node in client.get_primaries()), spread
    # Each topic's keys, once used, live on its master only.
    for topic in topics:
        engine.push(topic, [(str(uuid.uuid4()), 0, None)])
    for node in client.get_primaries():
        held = {key.decode() for key in client.keys("*", target_nodes=node)}
        expected = {engine.topic_keys(t).queue for t in spread[node.name]}
        assert expected <= held
        assert all(any(f"{{{t}}}" in key for t in spread[node.name]) for key in held if "{" in key)


def test_jobs_of_topics_on_every_master_run_through_the_engine():
    client = engine.get_redis()
    spread = masters_of(client, registry.topics())
    chosen = [topics[0] for topics in spread.values()]
    assert len(chosen) == 3
    jobs = [Job.objects.enqueue(topic, {"n": i}) for i, topic in enumerate(chosen)]
    engine.push_jobs(jobs)  # one pipeline over three masters
    for job in jobs:
        assert engine.depths(job.topic_id)["queued"] >= 1
        ids = engine.pop(job.topic_id, 10)
        assert str(job.pk) in ids
        assert engine.ack_and_pop(job.topic_id, str(job.pk)) == [i for i in ids if i != str(job.pk)][:1]
    reading = engine.metrics.read(chosen)
    assert all(reading[t].counters["enqueued"] >= 1 for t in chosen)


class DjangoRedisClusterClient(DefaultClient):
    """A django-redis ``CLIENT_CLASS`` whose connections are redis-py ``RedisCluster``s.

    django-redis (7.0) ships no cluster client; a project that has one of its own (like
    this) can keep naming its cache alias in ``JOBQUEUE["CACHE_ALIAS"]``."""

    def connect(self, index: int = 0):
        return cluster_client(self._server[index], socket_connect_timeout=5)


def test_a_django_redis_alias_whose_client_is_a_cluster_is_used_as_one(settings):
    settings.CACHES = {
        **settings.CACHES,
        "cluster": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": settings.JOBQUEUE["REDIS_URL"],
            "OPTIONS": {"CLIENT_CLASS": f"{__name__}.DjangoRedisClusterClient"},
        },
    }
    settings.JOBQUEUE = {**settings.JOBQUEUE, "REDIS_URL": None, "CACHE_ALIAS": "cluster"}
    engine.reset_clients()
    try:
        client = engine.get_redis()
        assert is_cluster(client) and len(client.get_primaries()) == 3
        spread = masters_of(client, registry.topics())
        chosen = [topics[0] for topics in spread.values()]
        jobs = [Job.objects.enqueue(topic, {"n": i}) for i, topic in enumerate(chosen)]
        engine.push_jobs(jobs)
        for job in jobs:
            assert str(job.pk) in engine.pop(job.topic_id, 10)
    finally:
        engine.reset_clients()
