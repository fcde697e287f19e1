"""``ensure_topics`` creates what is missing and returns once the broker can serve it.

CreateTopics answers before the broker's metadata lists the new topics; a
consumer that joined its group in that moment was assigned none of their
partitions until aiokafka's next metadata refresh, five minutes later (on a
fresh broker, ``wirebus consume`` of the README's Kafka section got
``partitions assigned: []``).
"""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient

from wirebus.kafka import ensure_topics


async def test_new_topics_are_in_the_brokers_metadata_with_a_leader_per_partition_on_return(
    bootstrap: str,
) -> None:
    topics = [f"wirebus-ensure-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)  # connected: asks at once
    await admin.start()
    try:
        await admin.describe_cluster()
        await ensure_topics(bootstrap, topics, partitions=3)
        described = {t["topic"]: t for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()

    assert {name: described[name]["error_code"] for name in topics} == dict.fromkeys(topics, 0)
    leaders = {name: [p["leader"] for p in described[name]["partitions"]] for name in topics}
    assert {name: len(ids) for name, ids in leaders.items()} == dict.fromkeys(topics, 3)
    assert min(min(ids) for ids in leaders.values()) >= 0


async def test_topics_that_exist_are_left_as_they_are(bootstrap: str) -> None:
    topic = f"wirebus-ensure-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic], partitions=2)

    await ensure_topics(bootstrap, [topic], partitions=5)

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 2
