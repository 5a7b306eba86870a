"""A sluice LLM worker in Python: stub answers, at-least-once, in the Rust workers' group.

It shows that a stage is a consumer group and a message format, not a language: this process
joins `<prefix>.group.llm` beside the Rust `sluice-llm` workers, takes its share of the
partitions of `<prefix>.qa.questions`, and answers on `<prefix>.qa.answers` in the format the
Rust scoring stage reads (workers/messages/src/qa.rs).

At-least-once: an offset is stored (then auto-committed) only once the broker acknowledged the
message's answer or dead letter, and per partition only up to the first message still
unfinished. A crash or a rebalance may get a question answered twice, never lost.

Answers wait out the stub latency in a heap of due times, up to LLM_IN_FLIGHT at once, all in
this one thread. Input that is no question goes to the dead letters: there are no retry tiers.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

log = logging.getLogger("llm-python")
MAX_REASKS = 1_000  # as workers/messages/src/qa.rs
LIMITS = {"question": 32 * 1024, "expected": 32 * 1024, "run_id": 128}  # bytes, as in qa.rs
QUESTION_FIELDS = {"question", "expected", "run_id", "reasks", "best"}  # Question denies others
# Delivery errors no retry cures (is_undeliverable in workers/core/src/kafka.rs).
E = KafkaError
UNDELIVERABLE = {E.MSG_SIZE_TOO_LARGE, E.RECORD_LIST_TOO_LARGE, E.INVALID_MSG_SIZE, E.TOPIC_EXCEPTION,
                 E._UNKNOWN_TOPIC, E.UNKNOWN_TOPIC_OR_PART, E._UNKNOWN_PARTITION, E.INVALID_RECORD,
                 E.TOPIC_AUTHORIZATION_FAILED, E.CLUSTER_AUTHORIZATION_FAILED}


def env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def seconds(name: str, default: str) -> float:
    """`250ms`, `5s`, `2m`, `1h`, at most a day; a bare number is milliseconds (as config.rs)."""
    raw = env(name, default)
    number = raw.rstrip("smh")
    scale = {"": 0.001, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}.get(raw[len(number):])
    try:
        value = float(number) * scale  # type: ignore[operator]
        if not 0 <= value <= 86400:
            raise ValueError
    except (TypeError, ValueError):
        sys.exit(f"{name}={raw!r} is not a duration such as 500ms, 5s or 2m (at most 24h)")
    return value


def question_problem(q: Any) -> str | None:
    """Why a payload is no question (serde's rules and Question::check in qa.rs), or None."""
    if not isinstance(q, dict):
        return "the payload is not an object"
    if unknown := sorted(set(q) - QUESTION_FIELDS):
        return f"unknown field {unknown[0]!r}"
    if not isinstance(q.get("question"), str) or not q["question"].strip():
        return "the question is missing or empty"
    for name, limit in LIMITS.items():
        value = q.get(name)
        if value is not None and (not isinstance(value, str) or len(value.encode()) > limit):
            return f"{name} is not a string of at most {limit} bytes"
    if isinstance(q.get("expected"), str) and not q["expected"].strip():
        return "the expected answer is empty"
    reasks = q.get("reasks", 0)
    if type(reasks) is not int or not 0 <= reasks <= MAX_REASKS:
        return f"reasks is not a count of at most {MAX_REASKS}"
    best = q.get("best")
    if best is not None and not (isinstance(best, dict) and isinstance(best.get("reply"), dict)):
        return "best is not a scored reply"
    return None


def read_envelope(value: bytes | None) -> tuple[dict[str, Any], str, str | None]:
    """The envelope, its id ("" if none can be read), and why it is no question (None if it is).
    Whatever the input (a lone surrogate, nesting deep enough to exhaust the recursion limit),
    the answer is a reason, never an exception: one would kill the worker on the same message
    after every restart."""
    try:
        return _read_envelope(value)
    except Exception as e:  # noqa: BLE001 - bad input must become a dead letter
        return {}, "", f"invalid question: {type(e).__name__}"


def _read_envelope(value: bytes | None) -> tuple[dict[str, Any], str, str | None]:
    try:
        envelope = json.loads(value or b"")
    except ValueError as e:  # not UTF-8, or not JSON
        return {}, "", f"invalid question: {e}"
    if not isinstance(envelope, dict):
        return {}, "", "invalid question: not a JSON object"
    try:
        job_id = str(uuid.UUID(envelope["id"] if isinstance(envelope.get("id"), str) else ""))
    except ValueError:
        return envelope, "", "invalid question: id is missing or not a UUID"
    try:  # Python ≥ 3.11 reads RFC 3339, "Z" and nanoseconds included
        problem = None if datetime.fromisoformat(str(envelope.get("created_at"))).tzinfo else "no UTC offset"
    except ValueError:
        problem = "not a time"
    if problem:
        problem = f"invalid question: created_at is {problem}"
    if envelope.get("kind") != "qa":
        problem = f"kind is {str(envelope.get('kind'))[:40]!r}, not 'qa'"
    return envelope, job_id, problem or question_problem(envelope.get("payload"))


@dataclass
class Task:
    """A received message on its way to an acknowledged answer or dead letter."""

    msg: Message
    partition: Partition  # the tracker it was received under; stale once revoked
    started: float
    job_id: str = ""
    envelope: dict[str, Any] | None = None
    out: tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None] | None = None  # topic, key, …


class Partition:
    """Offsets received from one assigned partition, in order, and which of them are done."""

    def __init__(self) -> None:
        self.unfinished: deque[int] = deque()
        self.done: set[int] = set()

    def finish(self, offset: int) -> int | None:
        """Marks `offset` done; returns the offset to store (the next to read) if it moved."""
        self.done.add(offset)
        last = None
        while self.unfinished and self.unfinished[0] in self.done:
            last = self.unfinished.popleft()
            self.done.discard(last)
        return None if last is None else last + 1


class Worker:
    def __init__(self) -> None:
        self.prefix = env("SLUICE_TOPIC_PREFIX", "sluice")
        self.host = socket.gethostname()
        self.instance = env("WORKER_INSTANCE_ID", f"llm-python-{self.host}-{uuid.uuid4().hex[:8]}")
        self.latency = seconds("LLM_STUB_LATENCY", "100ms")
        self.capacity = max(1, int(env("LLM_IN_FLIGHT", "64")))
        self.beat_every = seconds("HEARTBEAT_INTERVAL", "2s")
        self.grace = seconds("SHUTDOWN_GRACE", "10s")
        # KAFKA_OPT_SECURITY_PROTOCOL=SASL_SSL → security.protocol, as for the Rust services.
        extra = {k[10:].lower().replace("_", "."): v
                 for k, v in os.environ.items() if k.startswith("KAFKA_OPT_")}
        # Problems reach error_cb (logged once each); librdkafka's own log would repeat them.
        common = {"bootstrap.servers": env("KAFKA_BROKERS", "127.0.0.1:9092"),
                  "error_cb": self.client_error, "log_level": 2}
        self.consumer = Consumer({**common, "group.id": f"{self.prefix}.group.llm",
                                  "enable.auto.commit": True, "auto.commit.interval.ms": 1000,
                                  "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                                  "fetch.wait.max.ms": 10, "session.timeout.ms": 10000,
                                  # The Rust workers' assignor: a group cannot mix it with the
                                  # eager ones, and a member joining moves only what must move.
                                  "partition.assignment.strategy": "cooperative-sticky", **extra})
        self.producer = Producer({**common, "acks": "all", "linger.ms": 5, "message.timeout.ms": 30000,
                                  "allow.auto.create.topics": False, **extra})
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.due: list[tuple[float, int, Task]] = []  # heap: (when, tie-break, task)
        self.seq = itertools.count()
        self.in_flight = self.processed = 0
        self.stopping = self.failed = False
        self.reported: set[int] = set()  # error codes logged since the last sign of health

    def client_error(self, err: KafkaError) -> None:
        if err.code() not in self.reported:
            self.reported.add(err.code())
            log.warning("kafka: %s", err.str())

    def assigned(self, _: Consumer, parts: list[TopicPartition]) -> None:
        self.reported.clear()
        for p in parts:
            self.partitions[(p.topic, p.partition)] = Partition()
        log.info("assigned partitions %s", sorted(p.partition for p in parts))

    def revoked(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Forgets the partitions, abandoning their unfinished work uncommitted; commits the rest."""
        for p in parts:
            self.partitions.pop((p.topic, p.partition), None)
        try:
            consumer.commit(asynchronous=False)  # the stored offsets, before another member reads on
        except KafkaException:
            pass  # nothing new to commit, or the partitions were lost rather than revoked
        log.info("revoked partitions %s", sorted(p.partition for p in parts))

    def receive(self, msg: Message) -> None:
        if msg.error():
            return self.client_error(msg.error())
        part = self.partitions.get((msg.topic(), msg.partition()))
        if part is None:
            return  # revoked meanwhile: the new owner reads it
        part.unfinished.append(msg.offset())
        task = Task(msg, part, time.monotonic())
        self.in_flight += 1
        task.envelope, task.job_id, problem = read_envelope(msg.value())
        if problem:
            return self.dead_letter(task, "schema", problem)
        heapq.heappush(self.due, (task.started + self.latency, next(self.seq), task))

    def dead_letter(self, task: Task, error_class: str, reason: str) -> None:
        """The original key and payload to the dead letters, with the headers of header.rs."""
        msg = task.msg
        log.warning("dead letter %s[%d]@%d (%s): %s",
                    msg.topic(), msg.partition(), msg.offset(), error_class, reason)
        headers = [(k, v) for k, v in (msg.headers() or []) if not k.startswith("sluice-")]
        headers += [(k, str(v).encode()) for k, v in (
            ("sluice-failures", 1), ("sluice-error-class", error_class), ("sluice-error", reason[:2000]),
            ("sluice-original-topic", msg.topic()), ("sluice-original-partition", msg.partition()),
            ("sluice-original-offset", msg.offset()), ("sluice-first-failure-ms", int(time.time() * 1000)),
        ) + ((("sluice-job-id", task.job_id),) if task.job_id else ())]
        task.out = (f"{self.prefix}.dead-letters", msg.key(), msg.value() or b"", headers)
        self.publish(task)

    def answer(self, task: Task) -> None:
        envelope: dict[str, Any] = task.envelope  # type: ignore[assignment]
        question = envelope["payload"]  # as received, all its fields: the scorer reads it back
        reply = "Stub answer to: " + question["question"].strip()
        answer = {"id": task.job_id, "kind": "qa", "created_at": envelope["created_at"], "payload": {
            "question": question, "attempts": 1, "reply": {
                "answer": reply, "provider": "stub", "model": "stub-python",
                "latency_ms": int((time.monotonic() - task.started) * 1000),
                "prompt_tokens": len(question["question"].split()), "answer_tokens": len(reply.split()),
                "worker": self.instance, "reused": False}}}
        try:  # a question that passed the checks may still hold what no UTF-8 can (a surrogate)
            value = json.dumps(answer, ensure_ascii=False).encode()
        except Exception as e:  # noqa: BLE001 - bad input must become a dead letter
            return self.dead_letter(task, "schema", f"invalid question: {type(e).__name__}")
        task.out = (f"{self.prefix}.qa.answers", task.job_id.encode(), value, None)
        self.publish(task)

    def publish(self, task: Task) -> None:
        topic, key, value, headers = task.out  # type: ignore[misc]
        try:  # the client's queue (100k messages) holds far more than LLM_IN_FLIGHT
            self.producer.produce(topic, value, key=key, headers=headers,
                                  on_delivery=lambda err, _: self.delivered(task, err))
        except KafkaException as e:
            self.delivered(task, e.args[0])

    def delivered(self, task: Task, err: KafkaError | None) -> None:
        topic = task.out[0]  # type: ignore[index]
        if err is None:
            self.in_flight -= 1
            self.processed += 1
            self.reported.clear()
            key = (task.msg.topic(), task.msg.partition())
            store = task.partition.finish(task.msg.offset())
            if store is not None and self.partitions.get(key) is task.partition:
                try:
                    self.consumer.store_offsets(offsets=[TopicPartition(*key, store)])
                except KafkaException:
                    pass  # revoked meanwhile
        elif err.code() in UNDELIVERABLE and topic.endswith(".qa.answers"):
            self.dead_letter(task, "undeliverable", f"undeliverable to {topic}: {err.str()}")
        elif err.code() in UNDELIVERABLE:
            log.error("the dead-letter topic refuses messages (%s); stopping", err.str())
            self.stopping = self.failed = True
        else:  # transient (broker away, timed out): publish again after a pause, never drop
            self.client_error(err)
            heapq.heappush(self.due, (time.monotonic() + 1.0, next(self.seq), task))

    def run_due(self) -> None:
        """Answers what has waited out the latency; publishes again what is due a retry."""
        while self.due and self.due[0][0] <= time.monotonic():
            task = heapq.heappop(self.due)[2]
            if self.partitions.get((task.msg.topic(), task.msg.partition())) is not task.partition:
                self.in_flight -= 1  # revoked: abandoned uncommitted, the new owner answers it
            elif task.out is None:
                self.answer(task)
            else:
                self.publish(task)

    def heartbeat(self, state: str) -> None:
        """heartbeat.rs's shape; state is idle, busy or stopped (WorkerState's names)."""
        beat = {"role": "llm", "instance": self.instance, "host": self.host, "state": state,
                "in_flight": self.in_flight, "processed": self.processed, "version": "python-example",
                "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        try:
            self.producer.produce(f"{self.prefix}.heartbeats", json.dumps(beat).encode(), key=self.instance)
        except (BufferError, KafkaException) as e:
            log.warning("heartbeat not published: %s", e)

    def run(self) -> int:
        topic = f"{self.prefix}.qa.questions"
        self.consumer.subscribe([topic], on_assign=self.assigned, on_revoke=self.revoked,
                                on_lost=self.revoked)
        log.info("started %s: group %s.group.llm on %s, stub latency %.0fms, %d in flight",
                 self.instance, self.prefix, topic, self.latency * 1000, self.capacity)
        next_beat = 0.0
        while not self.stopping:
            if time.monotonic() >= next_beat:
                self.heartbeat("busy" if self.in_flight else "idle")
                next_beat = time.monotonic() + self.beat_every
            self.run_due()
            wait = min(0.1, max(0.0, self.due[0][0] - time.monotonic()) if self.due else 0.1)
            if self.in_flight < self.capacity:
                for msg in self.consumer.consume(min(self.capacity - self.in_flight, 500), timeout=wait):
                    self.receive(msg)
                self.producer.poll(0)
            else:  # full: only deliveries until an answer is due (the consumer is not read)
                self.producer.poll(wait)
        log.info("shutting down: %d in flight, up to %.0fs to finish", self.in_flight, self.grace)
        deadline = time.monotonic() + self.grace
        while self.in_flight and not self.failed and time.monotonic() < deadline:
            self.run_due()
            self.producer.poll(0.02)
        abandoned = self.in_flight
        self.heartbeat("stopped")
        # Acknowledgements store their offsets, …; with nothing in flight, only the heartbeat is left.
        unsent = self.producer.flush(5 if self.in_flight else 1)
        self.consumer.close()  # … which closing commits, before leaving the group
        log.info("stopped: %d processed, %d abandoned uncommitted, %d messages unsent",
                 self.processed, abandoned, unsent)
        return 1 if self.failed else 0


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    worker = Worker()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: setattr(worker, "stopping", True))
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
