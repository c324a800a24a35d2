"""The broker's LMDB store and the journal/writer pair, without a broker."""

from __future__ import annotations

import asyncio

import lmdb
import pytest

from pillion.broker.packets import Publish
from pillion.broker.store import (
    DEL_MESSAGE,
    DEL_RETAINED,
    DEL_SESSION,
    INFLIGHT,
    PUT_MESSAGE,
    PUT_RETAINED,
    PUT_SESSION,
    QUEUED,
    RELEASING,
    BrokerStore,
    Journal,
    Persistence,
    StoreInUse,
    decode_message,
    encode_message,
    message_key,
)


@pytest.fixture
def store(tmp_path):
    s = BrokerStore(str(tmp_path / "broker"), map_size=1 << 20, max_map_size=64 << 20)
    yield s
    s.close()


def test_message_record_round_trips_topic_payload_qos_and_properties():
    props = {"user_property": [("k", "v"), ("k", "w")], "correlation_data": b"\x00\x01",
             "response_topic": "r/1", "message_expiry_interval": 30}
    message = Publish("a/b", b"\x00payload\xff", 2, True, properties=props)
    state, packet_id, expires, back = decode_message(encode_message(message, INFLIGHT, 77, 1234.5))
    assert (state, packet_id, expires) == (INFLIGHT, 77, 1234.5)
    assert (back.topic, back.payload, back.qos, back.retain, back.packet_id) == ("a/b", b"\x00payload\xff", 2, True, 77)
    assert back.properties == props


def test_a_releasing_record_has_no_body():
    assert decode_message(encode_message(None, RELEASING, 9, 1.0)) == (RELEASING, 9, 1.0, None)


def test_qos0_record_keeps_no_packet_id():
    state, packet_id, _, back = decode_message(encode_message(Publish("t", b"x"), QUEUED))
    assert (state, packet_id, back.packet_id, back.qos) == (QUEUED, 0, None, 0)


def test_damaged_record_raises_value_error():
    record = encode_message(Publish("t", b"x", 1), QUEUED)
    with pytest.raises(ValueError):
        decode_message(record[:-3] + b"\xff\xff\xff\xff")
    with pytest.raises(ValueError):
        decode_message(b"\x00")


def test_apply_and_load(store):
    store.apply([
        (PUT_RETAINED, "sensors/t", encode_message(Publish("sensors/t", b"21.5", 1, True), expires=5.0)),
        (PUT_SESSION, "c1", b'{"expiry": null, "subs": []}'),
        (PUT_MESSAGE, message_key("c1", 2), encode_message(Publish("x", b"2", 1))),
        (PUT_MESSAGE, message_key("c1", 1), encode_message(Publish("x", b"1", 1))),
        (PUT_MESSAGE, message_key("c1", 3), encode_message(Publish("x", b"3", 1))),
        (DEL_MESSAGE, message_key("c1", 3), None),
    ])
    restored = store.load()
    expires, retained = restored.retained["sensors/t"]
    assert (expires, retained.payload, retained.retain) == (5.0, b"21.5", True)
    assert restored.sessions["c1"].record == {"expiry": None, "subs": []}
    assert [(seq, m.payload) for seq, _, _, _, m in restored.sessions["c1"].messages] == [(1, b"1"), (2, b"2")]
    store.apply([(DEL_RETAINED, "sensors/t", None)])
    assert store.load().retained == {}


def test_deleting_a_session_deletes_exactly_its_messages(store):
    ops = []
    for client in ("a", "ab", "b"):
        ops.append((PUT_SESSION, client, b"{}"))
        ops += [(PUT_MESSAGE, message_key(client, n), encode_message(Publish("t", b"m", 1))) for n in range(3)]
    store.apply(ops)
    store.apply([(DEL_SESSION, "a", None)])
    restored = store.load()
    assert sorted(restored.sessions) == ["ab", "b"]
    assert [len(s.messages) for s in (restored.sessions["ab"], restored.sessions["b"])] == [3, 3]
    store.apply([(DEL_SESSION, "b", None)])  # the last keys in the database
    assert sorted(store.load().sessions) == ["ab"]


def test_messages_without_a_session_and_damaged_records_are_skipped(store):
    store.apply([
        (PUT_SESSION, "c", b"{}"),
        (PUT_SESSION, "bad-json", b"{"),
        (PUT_MESSAGE, message_key("orphan", 1), encode_message(Publish("t", b"m", 1))),
        (PUT_MESSAGE, message_key("c", 1), b"\x00\x00\x01broken"),
        (PUT_MESSAGE, message_key("c", 2), encode_message(Publish("t", b"ok", 1))),
    ])
    restored = store.load()
    assert [op for op, _, _ in restored.garbage] == [DEL_SESSION, DEL_MESSAGE, DEL_MESSAGE]
    assert [m.payload for *_, m in restored.sessions["c"].messages] == [b"ok"]


def test_the_map_grows_when_full(store):
    big = encode_message(Publish("t", b"x" * 200_000, 1))
    store.apply([(PUT_MESSAGE, message_key("c", n), big) for n in range(20)])  # 4 MB into a 1 MiB map
    assert store.env.info()["map_size"] >= 4 << 20


def test_the_map_limit_raises(tmp_path):
    small = BrokerStore(str(tmp_path / "small"), map_size=1 << 20, max_map_size=1 << 20)
    try:
        with pytest.raises(lmdb.MapFullError):
            small.apply([(PUT_MESSAGE, message_key("c", n), b"x" * 100_000) for n in range(30)])
    finally:
        small.close()


def test_one_process_owns_a_store(tmp_path, store):
    with pytest.raises(StoreInUse):
        BrokerStore(store.path)
    store.close()
    BrokerStore(store.path).close()  # free again once closed


def test_journal_batches():
    journal = Journal()
    woken = []
    journal.notify = lambda: woken.append(1)
    journal.add(PUT_SESSION, "a", b"{}")
    journal.add(DEL_SESSION, "b")
    assert woken == [1]  # once per batch, on the first change
    ops, batch = journal.take()
    assert (len(ops), batch, journal.batch) == (2, 1, 2)
    journal.waiting.add("s")
    assert journal.committed(1) == {"s"} and journal.durable == 1 and not journal.waiting


def test_persistence_commits_in_batches_and_reports_durable(store):
    async def main():
        loop = asyncio.get_running_loop()
        journal = Journal()
        durable = []
        persistence = Persistence(store, journal, loop, lambda s: durable.append(journal.durable),
                                  lambda s, e: pytest.fail(str(e)))
        for n in range(100):
            journal.add(PUT_MESSAGE, message_key("c", n), encode_message(Publish("t", b"m", 1)))
        await asyncio.sleep(0)  # the scheduled flush takes all 100 as one batch
        for n in range(100, 150):
            journal.add(PUT_MESSAGE, message_key("c", n), encode_message(Publish("t", b"m", 1)))
        await persistence.close()
        return durable

    durable = asyncio.run(main())
    assert durable == [1, 2]
    assert store.commits == 2
    reopened = BrokerStore(store.path)
    try:
        assert len(reopened.load().sessions) == 0  # messages without a session record stay invisible
        with reopened.env.begin() as txn:
            assert txn.stat(reopened.messages)["entries"] == 150
    finally:
        reopened.close()


def test_a_failed_commit_is_reported_not_raised(tmp_path):
    small = BrokerStore(str(tmp_path / "small"), map_size=1 << 20, max_map_size=1 << 20)

    async def main():
        journal = Journal()
        failures = []
        persistence = Persistence(small, journal, asyncio.get_running_loop(), lambda s: None,
                                  lambda s, e: failures.append((s, type(e))))
        journal.waiting.add("session")
        for n in range(30):
            journal.add(PUT_MESSAGE, message_key("c", n), b"x" * 100_000)
        await persistence.close()
        return failures

    assert asyncio.run(main()) == [({"session"}, lmdb.MapFullError)]


def test_restore_deletes_what_could_not_be_decoded(store):
    from pillion.broker.broker import Broker

    store.apply([
        (PUT_SESSION, "bad-json", b"{"),
        (PUT_MESSAGE, message_key("bad-json", 1), encode_message(Publish("t", b"m", 1))),
        (PUT_MESSAGE, message_key("orphan", 1), encode_message(Publish("t", b"m", 1))),
    ])
    broker = Broker()
    broker.restore(store.load(), 0.0, 0.0)
    store.apply(broker.journal.take()[0])
    restored = store.load()
    assert restored.garbage == [] and restored.sessions == {}
    with store.env.begin() as txn:
        assert txn.stat(store.messages)["entries"] == 0


def test_a_message_queued_and_deleted_in_one_batch_never_reaches_the_disk(store):
    journal = Journal()
    record = encode_message(Publish("t", b"m", 2))
    journal.add(PUT_MESSAGE, message_key("c", 1), record)
    journal.add(PUT_MESSAGE, message_key("c", 1), encode_message(Publish("t", b"m", 2), INFLIGHT, 7))
    journal.add(PUT_MESSAGE, message_key("c", 2), record)
    journal.add(DEL_MESSAGE, message_key("c", 1))
    ops, _ = journal.take()
    assert [op for op in ops if op is not None] == [(PUT_MESSAGE, message_key("c", 2), record)]
    store.apply(ops)
    journal.add(DEL_MESSAGE, message_key("c", 2))  # written in an earlier batch: the delete must go to disk
    assert journal.take()[0] == [(DEL_MESSAGE, message_key("c", 2), None)]
