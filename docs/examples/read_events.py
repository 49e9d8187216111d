#!/usr/bin/env python3
"""Read the stock back end's events topic with a generic Kafka client.

Every record follows the CloudEvents Kafka protocol binding in binary mode:
the attributes are headers (ce_id, ce_type, ce_subject, ce_time, ...), the
value is the event's data as JSON, the key is the article id. This example
reads the whole topic as it is now (or follows it), prints one JSON line per
event, and with --stock also folds the stock on hand per article, charge and
warehouse by posting time (the same rule as `erp-replay stock-as-of`).

    pip install confluent-kafka
    python3 docs/examples/read_events.py --brokers 127.0.0.1:9092 --topic stock-events --stock
"""

import argparse
import json
import sys
from collections import defaultdict

from confluent_kafka import Consumer, TopicPartition


def cloudevent(message):
    """The CloudEvents attributes (without the ce_ prefix) and the data of a record."""
    attributes = {}
    for key, value in message.headers() or []:
        if key.startswith("ce_") and value is not None:
            attributes[key[3:]] = value.decode("utf-8")
    return attributes, json.loads(message.value())


def signed_movements(event_type, data):
    """(charge, warehouse, delta) for every bucket a stock movement changes."""
    if event_type == "StockReceived":
        return [(data["charge"], data["warehouse"], data["quantity"])]
    if event_type == "StockIssued":
        return [(data["charge"], data["warehouse"], -data["quantity"])]
    if event_type == "StockTransferred":
        return [(data["charge"], data["from"], -data["quantity"]), (data["charge"], data["to"], data["quantity"])]
    if event_type == "InventoryCounted":
        return [(data["charge"], data["warehouse"], data["delta"])]
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="stock-events")
    parser.add_argument("--follow", action="store_true", help="keep reading new events")
    parser.add_argument("--stock", action="store_true", help="print the stock per article at the end instead of the events")
    args = parser.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "analyst-example",
        "enable.auto.commit": False,
    })
    metadata = consumer.list_topics(args.topic, timeout=10)
    topic = metadata.topics.get(args.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        sys.exit(f"the topic {args.topic} does not exist on {args.brokers}")
    # Read every partition from its first record to its end as of now.
    ends = {}
    assignment = []
    for p in topic.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)
        if high > low or args.follow:
            ends[p] = high
            assignment.append(TopicPartition(args.topic, p, low))
    consumer.assign(assignment)

    stock = defaultdict(int)  # (article, charge, warehouse) -> on hand
    last_sequence = {}  # subject -> last sequence seen: skips redelivered duplicates
    positions = {p.partition: p.offset for p in assignment}
    while args.follow or any(positions[p] < end for p, end in ends.items()):
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            sys.exit(f"reading failed: {message.error()}")
        positions[message.partition()] = message.offset() + 1
        attributes, data = cloudevent(message)
        subject, sequence = attributes["subject"], int(attributes["sequence"])
        if sequence <= last_sequence.get(subject, 0):
            continue
        last_sequence[subject] = sequence
        event_type = attributes["type"].removeprefix("erp.stock.")
        if args.stock:
            for charge, warehouse, delta in signed_movements(event_type, data):
                stock[(data["article"], charge, warehouse)] += delta
        else:
            print(json.dumps({
                "partition": message.partition(),
                "offset": message.offset(),
                "type": event_type,
                "subject": subject,
                "sequence": sequence,
                "time": attributes["time"],
                "data": data,
            }), flush=args.follow)
    consumer.close()

    if args.stock:
        per_article = defaultdict(int)
        for (article, _, _), on_hand in stock.items():
            per_article[article] += on_hand
        for article in sorted(per_article):
            print(json.dumps({"article": article, "on_hand": per_article[article]}))


if __name__ == "__main__":
    main()
