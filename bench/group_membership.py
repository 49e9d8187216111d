"""How a broker's group coordinator treats a consumer killed with SIGKILL and
started again: how long until the new process owns partitions, with dynamic
membership and with static membership (group.instance.id).

This measured why the projector takes its partitions through PostgreSQL
(docs/projections.md, "Instances and partitions"). Run it with the Python
of the test setup against any broker:

    ~/.cache/erp-stock/python/bin/python bench/group_membership.py 127.0.0.1:19092

Prints, per mode, when the restarted member was assigned what.
"""

import subprocess
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

SESSION_TIMEOUT_MS = 10_000


def member(brokers, topic, group, instance, seconds):
    """One group member: subscribes and prints every assignment it gets."""
    conf = {"bootstrap.servers": brokers, "group.id": group, "session.timeout.ms": SESSION_TIMEOUT_MS}
    if instance != "-":
        conf["group.instance.id"] = instance
    start = time.time()
    consumer = Consumer(conf)
    consumer.subscribe(
        [topic],
        on_assign=lambda c, parts: print(f"assigned {[p.partition for p in parts]} after {time.time() - start:.1f} s", flush=True),
    )
    while time.time() - start < seconds:
        consumer.poll(0.2)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--member":
        member(*sys.argv[2:6], float(sys.argv[6]))
        return
    brokers = sys.argv[1]
    topic = f"membership-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result()
    for mode, instance in [("dynamic membership", "-"), ("static membership", "member-1")]:
        group = f"membership-{uuid.uuid4().hex[:8]}"
        args = [sys.executable, __file__, "--member", brokers, topic, group, instance]
        first = subprocess.Popen(args + ["120"])
        time.sleep(8)
        first.kill()  # SIGKILL: the member never leaves the group
        first.wait()
        print(f"{mode}: first member killed; starting it again (60 s)", flush=True)
        subprocess.run(args + ["60"], check=False)


if __name__ == "__main__":
    main()
