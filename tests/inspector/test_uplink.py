"""The uplink: batches under 128 KB, ≤ 100 publishes/s, in order, resuming after failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.journal import Journal
from inspector.messages import MAX_RESULTS_PER_BATCH
from inspector.transports.base import ConfigCallback, Transport, TransportError
from inspector.transports.file import UPSTREAM_FILE, FileTransport, read_jsonl
from inspector.uplink import MAX_PUBLISH_BYTES, Uplink
from tests.inspector.test_journal import result

TOPIC = "lineguard/p1/l1/s1/dev-1/results"


class FakeClock:
    """Monotonic time that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-6)


class Recorder(Transport):
    """Records upstream publishes with their clock time; fails while ``down`` is True."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.down = False
        self.sent: list[tuple[float, str, bytes]] = []
        self.attempts = 0

    def publish_upstream(self, topic: str, payload: bytes) -> None:
        self.attempts += 1
        if self.down:
            raise TransportError("broker unreachable")
        self.sent.append((self.clock(), topic, payload))

    def publish_local(self, topic: str, payload: bytes) -> None:
        raise AssertionError("uplink never publishes locally")

    def on_config(self, callback: ConfigCallback) -> None:
        pass

    def close(self) -> None:
        pass


def seqs(sent: list[tuple[float, str, bytes]]) -> list[int]:
    out = []
    for _, _, payload in sent:
        batch = json.loads(payload)
        got = [r["seq"] for r in batch["results"]]
        assert batch["first_seq"] == got[0] and batch["last_seq"] == got[-1]
        out.extend(got)
    return out


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "j.db", device="dev-1", cap_bytes=64 << 20, synchronous="NORMAL")


def test_batches_are_under_128kb_and_paced(journal: Journal) -> None:
    clock = FakeClock()
    transport = Recorder(clock)
    first = journal.append_many([result(f"p{i}") for i in range(20_000)])[0]
    uplink = Uplink(journal, transport, TOPIC, clock=clock, sleep=clock.sleep)
    assert uplink.drain(timeout_s=60)
    assert seqs(transport.sent) == list(range(first, first + 20_000))
    assert all(len(p) < MAX_PUBLISH_BYTES <= 128 * 1024 for _, _, p in transport.sent)
    assert all(topic == TOPIC for _, topic, _ in transport.sent)
    assert max(len(p) for _, _, p in transport.sent) > 100 * 1024  # batches are filled
    assert uplink.stats.publishes == len(transport.sent) > 30
    # never more than the 480 KiB budget in any one-second window (IoT Core's per-connection
    # cap is 512 KiB/s)
    for i, (start, _, _) in enumerate(transport.sent):
        window = [len(p) for t, _, p in transport.sent[i:] if t < start + 1.0]
        assert sum(window) <= 480 * 1024
    duration = transport.sent[-1][0] - transport.sent[0][0]
    assert uplink.stats.bytes_sent / (duration + 0.3) <= 480 * 1024 * 1.05


def test_batches_never_carry_more_results_than_the_contract(journal: Journal) -> None:
    clock = FakeClock()
    transport = Recorder(clock)
    first = journal.append_many([result(f"p{i}") for i in range(3000)])[0]
    uplink = Uplink(journal, transport, TOPIC, clock=clock, sleep=clock.sleep)
    # ~230-byte results: 126 KiB would hold ~550 of them, so the count is what binds here
    assert 126 * 1024 // len(journal.pending(1, 1 << 20)[0].payload) > MAX_RESULTS_PER_BATCH
    assert uplink.drain(timeout_s=60)
    sizes = [len(json.loads(p)["results"]) for _, _, p in transport.sent]
    assert max(sizes) == MAX_RESULTS_PER_BATCH and sum(sizes) == 3000
    assert seqs(transport.sent) == list(range(first, first + 3000))


@pytest.mark.parametrize("value", [MAX_RESULTS_PER_BATCH + 1, 2000, 0])
def test_refuses_more_results_per_batch_than_the_contract(journal: Journal, value: int) -> None:
    with pytest.raises(ValueError, match=rf"max_batch_results: {value} is outside 1\.\.500"):
        Uplink(journal, Recorder(FakeClock()), TOPIC, max_batch_results=value)


def test_never_more_than_100_publishes_per_second(journal: Journal) -> None:
    clock = FakeClock()
    transport = Recorder(clock)
    journal.append_many([result(f"p{i}") for i in range(4000)])
    uplink = Uplink(journal, transport, TOPIC, clock=clock, sleep=clock.sleep, max_batch_results=10)
    assert uplink.drain(timeout_s=60)
    times = [t for t, _, _ in transport.sent]
    assert len(times) == 400
    for i in range(len(times) - 100):
        assert times[i + 100] - times[i] >= 1.0 - 1e-9
    assert 3.9 <= times[-1] - times[0] <= 4.5


def test_outage_resumes_in_order_with_backoff(journal: Journal) -> None:
    clock = FakeClock()
    transport = Recorder(clock)
    uplink = Uplink(journal, transport, TOPIC, clock=clock, sleep=clock.sleep, max_backoff_s=8)
    first = journal.append_many([result(f"a{i}") for i in range(300)])[0]
    assert uplink.drain(timeout_s=5)
    transport.down = True
    journal.append_many([result(f"b{i}") for i in range(300)])
    assert not uplink.drain(timeout_s=120)  # two minutes of outage
    assert uplink.stats.failures >= 10
    # exponential backoff capped at 8 s: about 120 / 8 attempts, not hundreds
    assert transport.attempts < 40
    assert journal.backlog() == 300
    transport.down = False
    journal.append_many([result(f"c{i}") for i in range(300)])
    assert uplink.drain(timeout_s=60)
    assert seqs(transport.sent) == list(range(first, first + 900))
    assert uplink.stats.connected and journal.backlog() == 0


def test_linger_batches_a_trickle(journal: Journal) -> None:
    clock = FakeClock()
    transport = Recorder(clock)
    uplink = Uplink(journal, transport, TOPIC, clock=clock, sleep=clock.sleep, linger_s=1.0)
    for i in range(50):  # 50 frames/s for one second
        journal.append(result(f"p{i}"))
        uplink.step()
        clock.sleep(0.02)
    uplink.step()
    assert len(transport.sent) == 1 and len(seqs(transport.sent)) == 50


def test_with_file_transport_and_restart(tmp_path: Path, journal: Journal) -> None:
    clock = FakeClock()
    files = FileTransport(tmp_path / "out")
    first = journal.append_many([result(f"p{i}") for i in range(100)])[0]
    Uplink(journal, files, TOPIC, clock=clock, sleep=clock.sleep).drain(timeout_s=5)
    files.close()
    # a torn line (crash mid-write) is cut off on reopen; the journal still has nothing pending
    with (tmp_path / "out" / UPSTREAM_FILE).open("ab") as handle:
        handle.write(b'{"topic":"x","payl')
    files = FileTransport(tmp_path / "out")
    journal.append_many([result(f"q{i}") for i in range(10)])
    Uplink(journal, files, TOPIC, clock=clock, sleep=clock.sleep).drain(timeout_s=5)
    files.close()
    lines = read_jsonl(tmp_path / "out" / UPSTREAM_FILE)
    got = [r["seq"] for line in lines for r in line["payload"]["results"]]
    assert got == list(range(first, first + 110))


def test_rejects_bad_limits(journal: Journal) -> None:
    with pytest.raises(ValueError, match="max_publishes_per_s"):
        Uplink(journal, Recorder(FakeClock()), TOPIC, max_publishes_per_s=500)
    with pytest.raises(ValueError, match="max_batch_bytes"):
        Uplink(journal, Recorder(FakeClock()), TOPIC, max_batch_bytes=200 * 1024)


class Spooling(Recorder):
    """A transport whose acknowledgement means "spooled" (Greengrass PublishToIoTCore).

    Published batches sit in ``spool`` until :meth:`deliver` hands them to the cloud, which
    acknowledges each batch on the ack topic as the results rule does; :meth:`lose_spool` is
    a nucleus restart (the default spooler is in memory — nucleus mqttclient/spool/Spool.java).
    """

    publish_is_delivery = False

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.spool: list[bytes] = []
        self.cloud: list[int] = []
        self.ack_callbacks: dict[str, object] = {}

    def publish_upstream(self, topic: str, payload: bytes) -> None:
        super().publish_upstream(topic, payload)
        self.spool.append(payload)

    def subscribe_upstream(self, topic: str, callback) -> None:  # type: ignore[no-untyped-def]
        self.ack_callbacks[topic] = callback

    def deliver(self, *, reverse: bool = False) -> None:
        batches, self.spool = self.spool, []
        for payload in reversed(batches) if reverse else batches:
            doc = json.loads(payload)
            self.cloud.extend(r["seq"] for r in doc["results"])
            ack = {
                "v": 1,
                "device": doc["device"],
                "first_seq": doc["first_seq"],
                "last_seq": doc["last_seq"],
            }
            for callback in self.ack_callbacks.values():
                callback(json.dumps(ack).encode())  # type: ignore[operator]

    def lose_spool(self) -> None:
        self.spool = []


ACK = "lineguard/p1/dev-1/ack"


def test_spooled_is_not_delivered_results_wait_for_the_cloud(journal: Journal) -> None:
    clock = FakeClock()
    transport = Spooling(clock)
    uplink = Uplink(
        journal, transport, TOPIC, clock=clock, sleep=clock.sleep, ack_topic=ACK, ack_timeout_s=30
    )
    assert ACK in transport.ack_callbacks
    first = journal.append_many([result(f"a{i}") for i in range(1200)])[0]
    assert not uplink.drain(timeout_s=5)  # published (spooled) but not acknowledged
    assert transport.spool and journal.backlog() == 1200
    assert uplink.awaiting_ack == 1200
    transport.lose_spool()  # the nucleus restarts: its in-memory spool is gone
    journal.append_many([result(f"b{i}") for i in range(100)])
    clock.sleep(31)  # no acknowledgement within the timeout: everything is sent again
    for _ in range(200):
        uplink.step(flush=True)
        transport.deliver()
        clock.sleep(0.05)
    assert uplink.stats.resends >= 1
    assert journal.backlog() == 0 and uplink.awaiting_ack == 0
    assert sorted(set(transport.cloud)) == list(range(first, first + 1300))


def test_acknowledgements_out_of_order_forget_only_a_prefix(journal: Journal) -> None:
    clock = FakeClock()
    transport = Spooling(clock)
    uplink = Uplink(
        journal,
        transport,
        TOPIC,
        clock=clock,
        sleep=clock.sleep,
        ack_topic=ACK,
        max_batch_results=100,
    )
    first = journal.append_many([result(f"a{i}") for i in range(300)])[0]
    for _ in range(10):
        uplink.step(flush=True)
        clock.sleep(0.1)
    batches = list(transport.spool)
    assert len(batches) == 3
    # the cloud acknowledges the last two batches; the first is still in flight
    transport.spool = batches[1:]
    transport.deliver(reverse=True)
    uplink.step()
    assert journal.backlog() == 300 and journal.oldest_seq() == first
    transport.spool = batches[:1]
    transport.deliver()
    uplink.step()
    assert journal.backlog() == 0


def test_unacknowledged_bytes_are_bounded_under_the_spooler(journal: Journal) -> None:
    clock = FakeClock()
    transport = Spooling(clock)
    uplink = Uplink(
        journal,
        transport,
        TOPIC,
        clock=clock,
        sleep=clock.sleep,
        ack_topic=ACK,
        max_unacked_bytes=256 * 1024,
    )
    journal.append_many([result(f"a{i}") for i in range(20000)])
    for _ in range(500):
        uplink.step(flush=True)
        clock.sleep(0.05)
    spooled = sum(len(p) for p in transport.spool)
    assert 0 < spooled <= 256 * 1024 + MAX_PUBLISH_BYTES
    transport.deliver()
    uplink.step(flush=True)
    assert journal.backlog() < 20000


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"device":"dev-2","first_seq":1,"last_seq":9}',
        b'{"device":"dev-1","first_seq":9,"last_seq":1}',
        b'{"device":"dev-1","first_seq":"1"}',
    ],
)
def test_bad_acknowledgements_are_counted_and_forget_nothing(
    journal: Journal, payload: bytes
) -> None:
    clock = FakeClock()
    transport = Spooling(clock)
    uplink = Uplink(journal, transport, TOPIC, clock=clock, sleep=clock.sleep, ack_topic=ACK)
    journal.append_many([result(f"a{i}") for i in range(10)])
    uplink.step(flush=True)
    transport.ack_callbacks[ACK](payload)  # type: ignore[operator]
    uplink.step()
    assert uplink.stats.bad_acks == 1 and journal.backlog() == 10


def test_a_failed_ack_subscription_is_retried_and_nothing_is_forgotten_meanwhile(
    journal: Journal,
) -> None:
    clock = FakeClock()
    transport = Spooling(clock)
    refusals = [TransportError("nucleus: not connected to IoT Core")] * 2

    def subscribe(topic: str, callback) -> None:  # type: ignore[no-untyped-def]
        if refusals:
            raise refusals.pop()
        transport.ack_callbacks[topic] = callback

    transport.subscribe_upstream = subscribe  # type: ignore[method-assign]
    uplink = Uplink(journal, transport, TOPIC, clock=clock, sleep=clock.sleep, ack_topic=ACK)
    journal.append_many([result(f"a{i}") for i in range(10)])
    uplink.step(flush=True)
    assert not transport.ack_callbacks and journal.backlog() == 10
    for _ in range(3):
        clock.sleep(11)
        uplink.step(flush=True)
    assert ACK in transport.ack_callbacks
    transport.deliver()
    clock.sleep(61)  # the first batch went unacknowledged: it is sent again, then acknowledged
    for _ in range(5):
        uplink.step(flush=True)
        transport.deliver()
        clock.sleep(0.1)
    assert journal.backlog() == 0


def test_a_long_outage_adds_only_small_probes_to_the_spooler(journal: Journal) -> None:
    clock = FakeClock()
    transport = Spooling(clock)
    uplink = Uplink(journal, transport, TOPIC, clock=clock, sleep=clock.sleep, ack_topic=ACK)
    first = journal.append_many([result(f"a{i}") for i in range(5000)])[0]
    for _ in range(6 * 3600):  # six hours without an acknowledgement, one step a second
        uplink.step(flush=True)
        clock.sleep(1.0)
    spooled = sum(len(p) for p in transport.spool)
    probes = uplink.stats.resends
    # the first window (512 KiB) plus one probe of at most 16 results per backed-off timeout
    assert 5 <= probes <= 12
    assert spooled <= 512 * 1024 + MAX_PUBLISH_BYTES + probes * 16 * 600
    transport.deliver()  # the link is back: the spooled originals reach the cloud
    for _ in range(400):
        uplink.step(flush=True)
        transport.deliver()
        clock.sleep(0.1)
    assert journal.backlog() == 0
    assert sorted(set(transport.cloud)) == list(range(first, first + 5000))
