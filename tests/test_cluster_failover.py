"""Loss of Redis data found per topic: each topic's ``epoch`` key, in its own slot,
names the server it was last rebuilt on. On any Redis the per-topic check is tested by
hand; on the suite's Redis Cluster a real master is killed and its replica promoted."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.conf import settings

from jobqueue import engine
from jobqueue.models import Job
from jobqueue.worker import maintenance

pytestmark = pytest.mark.django_db(transaction=True)


def enqueue(topic: str, n: int) -> list[str]:
    return [str(Job.objects.enqueue(topic, {"n": i}).pk) for i in range(n)]


def test_each_topic_is_checked_on_its_own(redis_client):
    topics = ["echo", "sleepy", "relay"]
    maintenance.ensure_redis_state(topics, force=True)
    assert engine.stale_topics(topics) == []
    redis_client.delete(engine.topic_keys("sleepy").epoch)  # that topic's data was flushed
    redis_client.set(engine.topic_keys("relay").epoch, "another-server")  # an older copy came back
    assert engine.stale_topics(topics) == ["sleepy", "relay"]


def test_only_the_topics_that_lost_writes_are_rebuilt(redis_client):
    a, b = enqueue("echo", 3), enqueue("sleepy", 3)
    maintenance.ensure_redis_state(["echo", "sleepy"], force=True)
    # Both lose their last push; only echo's server changed (a failover of its shard).
    redis_client.zrem(engine.topic_keys("echo").queue, a[-1])
    redis_client.zrem(engine.topic_keys("sleepy").queue, b[-1])
    redis_client.set(engine.topic_keys("echo").epoch, "the-dead-master")
    assert maintenance.ensure_redis_state(["echo", "sleepy"]) is True
    assert engine.queue_ids("echo") == a  # put back, in queue order
    assert b[-1] not in engine.queue_ids("sleepy")  # untouched: its shard kept its server
    assert engine.stale_topics(["echo", "sleepy"]) == []
    assert maintenance.ensure_redis_state(["echo", "sleepy"]) is False


@pytest.mark.redis_cluster
def test_a_failover_of_one_master_rebuilds_the_topics_of_that_shard_only(redis_client):
    from bench.faultapp.cluster import LocalCluster

    port = int(urlsplit(settings.REDIS_URL.replace("+cluster", "", 1)).netloc.split(",")[0].rsplit(":", 1)[1])
    cluster = LocalCluster(port)
    by_master: dict[str, list[str]] = {}
    for topic in ["echo", "sleepy", "prio", "retry", "flaky", "other", "stage1", "stage2", "stage3", "deep"]:
        by_master.setdefault(redis_client.get_node_from_key(engine.topic_keys(topic).queue).name, []).append(topic)
    assert len(by_master) >= 2
    # The victim is not the first startup node, so that new clients still find the cluster.
    victim_name, doomed = next((name, ts) for name, ts in by_master.items() if not name.endswith(f":{port}"))
    spared = [t for name, ts in by_master.items() if name != victim_name for t in ts]
    topics = doomed + spared
    ids = {t: enqueue(t, 2) for t in topics}
    maintenance.ensure_redis_state(topics, force=True)
    assert engine.stale_topics(topics) == []

    victim = int(victim_name.rsplit(":", 1)[1])
    promoted = cluster.fail_over(victim)
    try:
        # The replica may lack the master's last writes; which ones is up to timing, so
        # this one is dropped by hand on the promoted master: the last push of each topic.
        engine.reset_clients()
        client = engine.get_redis()
        for topic in doomed:
            client.zrem(engine.topic_keys(topic).queue, ids[topic][-1])
        assert client.get_node_from_key(engine.topic_keys(doomed[0]).queue).port == promoted
        assert sorted(engine.stale_topics(topics)) == sorted(doomed)
        assert maintenance.ensure_redis_state(topics) is True
        for topic in topics:
            assert engine.queue_ids(topic) == ids[topic]
        assert engine.stale_topics(topics) == []
    finally:
        cluster.rejoin(victim)
        engine.reset_clients()
