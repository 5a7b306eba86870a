//! Question answering end to end: LLM workers against a fake provider over real HTTP (failures
//! injected), the scoring stage, the persister; `sluice qa`, `sluice traffic`; a 401; one
//! question refused while the others are answered; the Python example worker beside the Rust
//! ones; and no API key anywhere.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use sluice_core::kafka;
use sluice_messages::qa::{Question, KIND};
use sluice_messages::Envelope;
use uuid::Uuid;

use crate::helpers::{eventually, Options, TestPipeline};

pub const KEY: &str = "sk-test-0123456789-very-secret";

/// The fake provider, a child process killed when dropped.
pub struct FakeLlm {
    child: Child,
    pub url: String,
}

impl FakeLlm {
    pub fn start(args: &[&str]) -> Self {
        let bin = Path::new(env!("CARGO_BIN_EXE_sluice"))
            .parent()
            .unwrap()
            .join("sluice-fake-llm");
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sluice-fake-llm (cargo build --bins)");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        Self { child, url }
    }

    /// Every call so far: (question, arrival ms, status).
    pub async fn calls(&self) -> Vec<(String, i64, u16)> {
        let body: Vec<Value> = http_get_json(&format!("{}/calls", self.url)).await;
        body.into_iter()
            .map(|c| {
                (
                    c["question"].as_str().unwrap_or_default().to_string(),
                    c["at_ms"].as_i64().unwrap(),
                    c["status"].as_u64().unwrap() as u16,
                )
            })
            .collect()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET over a raw HTTP/1.1 connection (the tests need no HTTP client of their own).
async fn http_get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:.200}"))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// A dataset of `n` questions with one-word answers, as the fake's `--answers` file.
pub fn dataset(dir: &Path, n: usize) -> (PathBuf, Vec<(String, String)>) {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("What is the code word number {i}?"),
                format!("word{i}"),
            )
        })
        .collect();
    let path = dir.join(format!("answers-{}.jsonl", Uuid::new_v4().simple()));
    let lines: Vec<String> = pairs
        .iter()
        .map(|(q, a)| serde_json::json!({"question": q, "expected": a}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    (path, pairs)
}

async fn publish_questions(p: &TestPipeline, questions: &[Question]) -> Vec<Uuid> {
    let ids: Vec<Uuid> = questions.iter().map(|_| Uuid::new_v4()).collect();
    stream::iter(questions.iter().zip(&ids))
        .map(|(question, id)| async move {
            let envelope = Envelope::with_id(*id, KIND, question);
            p.publish_raw(
                &p.topics.qa_questions(),
                &id.to_string(),
                serde_json::to_vec(&envelope).unwrap(),
            )
            .await;
        })
        .buffer_unordered(500)
        .collect::<Vec<()>>()
        .await;
    ids
}

/// Every byte of every message (key, payload, headers) in every topic of the test's prefix.
fn all_topic_bytes(p: &TestPipeline) -> Vec<u8> {
    let consumer: BaseConsumer = kafka::client_config(&p.kafka).create().unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for topic in metadata.topics() {
        if !topic
            .name()
            .starts_with(&format!("{}.", p.kafka.topic_prefix))
        {
            continue;
        }
        for partition in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(10))
                .unwrap();
            if high > low {
                assignment
                    .add_partition_offset(topic.name(), partition.id(), Offset::Offset(low))
                    .unwrap();
                ends.insert((topic.name().to_string(), partition.id()), high);
            }
        }
    }
    let reader: BaseConsumer = kafka::reader_config(&p.kafka, "qa-secret-scan")
        .create()
        .unwrap();
    reader.assign(&assignment).unwrap();
    let mut bytes = Vec::new();
    let mut left = ends.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        let Some(Ok(message)) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        bytes.extend_from_slice(message.key().unwrap_or_default());
        bytes.extend_from_slice(message.payload().unwrap_or_default());
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                bytes.extend_from_slice(h.key.as_bytes());
                bytes.extend_from_slice(h.value.unwrap_or_default());
            }
        }
        let at = (message.topic().to_string(), message.partition());
        if ends
            .get(&at)
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            left.remove(&at);
        }
    }
    assert!(
        left.is_empty(),
        "could not read every topic to its end: {left:?}"
    );
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every row of the test's database as text.
async fn all_rows_text(p: &TestPipeline) -> String {
    let mut text = String::new();
    for table in ["jobs", "dead_letters", "workers"] {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(&p.pool)
            .await
            .unwrap();
        for (row,) in rows {
            text.push_str(&row);
        }
    }
    text
}

pub fn llm_env<'a>(base_url: &'a str, key: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("LLM_PROVIDER", "openai"),
        ("LLM_BASE_URL", base_url),
        ("LLM_MODEL", "fake-model"),
        ("LLM_API_KEY", key),
        ("LLM_TIMEOUT", "1500ms"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_questions_with_thirty_percent_failures_each_end_exactly_once() {
    let p = TestPipeline::spawn(Options {
        env: vec![("MAX_SCORE_RETRIES".into(), "1".into())],
        ..Options::no_workers()
    })
    .await;
    let dir = std::env::temp_dir();
    let (answers, pairs) = dataset(&dir, 1_000);
    let fake = FakeLlm::start(&[
        "--answers",
        answers.to_str().unwrap(),
        "--api-key",
        KEY,
        "--latency-ms",
        "5",
        "--fail-429",
        "0.1",
        "--retry-after-secs",
        "2",
        "--fail-500",
        "0.1",
        "--fail-hang",
        "0.05",
        "--fail-malformed",
        "0.05",
        "--wrong-share",
        "0.3",
        "--seed",
        "42",
    ]);
    let base_url = format!("{}/v1", fake.url);
    // Calls in flight bounded well below the 1,000 questions: a thousand connections opened at
    // once overflow the fake's accept queue, and a call whose SYN is dropped waits a second
    // for its retransmission; one that times out after its 429 was sent would be asked again
    // sooner than the 429 said, through no fault of the worker's.
    let mut env = llm_env(&base_url, KEY);
    env.push(("LLM_IN_FLIGHT", "128"));
    let llm_a = p.start_with("sluice-llm", &env);
    let llm_b = p.start_with("sluice-llm", &env);
    let scorer = p.start("sluice-scorer");
    p.wait_live("llm", 2).await;
    p.wait_live("scorer", 1).await;

    let questions: Vec<Question> = pairs
        .iter()
        .map(|(q, a)| Question {
            run_id: Some("load".into()),
            ..Question::new(q.clone(), Some(a.clone()))
        })
        .collect();
    let ids = publish_questions(&p, &questions).await;
    p.wait_count(
        "SELECT count(*) FROM jobs WHERE kind = 'qa' AND status <> 'pending'",
        1_000,
        Duration::from_secs(240),
    )
    .await;
    // Settled: nothing more arrives for a while (a duplicate would show as a second row or a
    // changed status).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(p.count("SELECT count(*) FROM jobs").await, 1_000);
    // Counted by run: a dead question keeps its text and run id.
    let by_status: BTreeMap<String, i64> = sqlx::query_as(
        "SELECT status, count(*) FROM qa_results WHERE run_id = 'load' AND question IS NOT NULL \
         GROUP BY status",
    )
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let count = |s: &str| by_status.get(s).copied().unwrap_or(0);
    assert_eq!(
        count("validated") + count("rejected") + count("dead"),
        1_000,
        "{by_status:?}"
    );
    assert!(
        count("validated") > 500 && count("rejected") > 0 && count("dead") > 0,
        "{by_status:?}"
    );
    // Every dead question has exactly one dead letter, which says why.
    assert_eq!(
        p.count("SELECT count(*) FROM dead_letters").await,
        count("dead")
    );
    assert_eq!(
        p.count(
            "SELECT count(*) FROM dead_letters WHERE error_class NOT IN \
             ('bad_response', 'rate_limited', 'unavailable', 'timeout')"
        )
        .await,
        0
    );
    // Validated answers are the right ones; rejected ones kept their best (wrong) answer.
    let expected: HashMap<&str, &str> = pairs
        .iter()
        .map(|(q, a)| (q.as_str(), a.as_str()))
        .collect();
    let rows = sluice_db::qa::results(&p.pool, None, 2_000).await.unwrap();
    assert_eq!(rows.len(), 1_000);
    for row in rows.into_iter().filter(|r| r.status != "dead") {
        assert!(ids.contains(&row.question_id));
        let (question, answer) = (row.question.unwrap(), row.answer.unwrap());
        let (score, asks) = (row.score, row.asks);
        match row.status.as_str() {
            "validated" => {
                assert_eq!(answer, expected[question.as_str()]);
                assert_eq!(score, Some(1.0));
            }
            "rejected" => {
                assert_eq!(answer, "I do not know.");
                assert_eq!(
                    (score, asks),
                    (Some(0.0), Some(2)),
                    "one re-ask, then rejected"
                );
            }
            other => panic!("status {other}"),
        }
    }
    // Retry-After: after a 429 the same question is not asked again within 2 s.
    let calls = fake.calls().await;
    let mut by_question: HashMap<&str, Vec<(i64, u16)>> = HashMap::new();
    for (question, at, status) in &calls {
        by_question
            .entry(question)
            .or_default()
            .push((*at, *status));
    }
    let mut limited = 0;
    for (question, calls) in &by_question {
        for pair in calls.windows(2) {
            if pair[0].1 == 429 {
                limited += 1;
                assert!(
                    pair[1].0 - pair[0].0 >= 2_000,
                    "{question}: asked again {} ms after a 429 with Retry-After: 2; its calls: \
                     {calls:?}",
                    pair[1].0 - pair[0].0
                );
            }
        }
    }
    assert!(
        limited > 20,
        "only {limited} rate-limited calls were retried"
    );

    // The key is nowhere: not in a topic, a row or a log.
    assert!(
        !contains(&all_topic_bytes(&p), KEY),
        "the API key is in a topic"
    );
    assert!(
        !all_rows_text(&p).await.contains(KEY),
        "the API key is in a row"
    );
    for index in [llm_a, llm_b, scorer] {
        assert!(!p.log(index).contains(KEY), "the API key is in a log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_the_worker_and_keep_the_questions() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let fake = FakeLlm::start(&["--api-key", KEY]);
    let base_url = format!("{}/v1", fake.url);
    let wrong = "sk-wrong-key-that-must-not-leak";
    p.start("sluice-scorer");
    let questions: Vec<Question> = (0..20)
        .map(|i| Question::new(format!("question {i}?"), None))
        .collect();
    publish_questions(&p, &questions).await;
    // A wrong key, then a wrong address: each worker stops, saying why, and dead-letters none.
    for (env, why) in [
        (llm_env(&base_url, wrong), "credentials refused (HTTP 401)"),
        (
            llm_env(&fake.url, KEY),
            "endpoint or model not found (HTTP 404)",
        ),
    ] {
        let refused = p.start_with("sluice-llm", &env);
        eventually(Duration::from_secs(30), "the worker to stop", || async {
            (!p.is_running(refused)).then_some(())
        })
        .await;
        assert!(!p.exit_success(refused), "a fatal error exits non-zero");
        let log = p.log(refused);
        assert!(log.contains(why), "{log}");
        assert!(!log.contains(wrong), "the key is in the log");
        assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
        assert_eq!(p.count("SELECT count(*) FROM jobs").await, 0);
    }

    // With the right key, every question is answered: none was consumed for good.
    p.start_with("sluice-llm", &llm_env(&base_url, KEY));
    p.wait_count(
        "SELECT count(*) FROM qa_results WHERE status = 'validated'",
        20,
        Duration::from_secs(60),
    )
    .await;
    assert!(!contains(&all_topic_bytes(&p), wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_the_provider_refuses_is_dead_lettered_and_the_others_answered() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let (answers, pairs) = dataset(&std::env::temp_dir(), 12);
    // A proxy in front of a working provider refuses two prompts: with 403 and 404, the
    // statuses that also mean a wrong key or model.
    let (forbidden, missing) = (&pairs[3].0, &pairs[7].0);
    let fake = FakeLlm::start(&[
        "--api-key",
        KEY,
        "--answers",
        answers.to_str().unwrap(),
        "--refuse",
        &format!("403:{forbidden}"),
        "--refuse",
        &format!("404:{missing}"),
    ]);
    let base_url = format!("{}/v1", fake.url);
    let llm = p.start_with("sluice-llm", &llm_env(&base_url, KEY));
    p.start("sluice-scorer");
    let questions: Vec<Question> = pairs
        .iter()
        .map(|(q, a)| Question::new(q.clone(), Some(a.clone())))
        .collect();
    let (first, later) = questions.split_at(8);
    publish_questions(&p, first).await;
    p.wait_count(
        "SELECT count(*) FROM qa_results WHERE status IN ('validated', 'dead')",
        8,
        Duration::from_secs(60),
    )
    .await;
    // Still answering after both refusals.
    publish_questions(&p, later).await;
    p.wait_count(
        "SELECT count(*) FROM qa_results WHERE status = 'validated'",
        10,
        Duration::from_secs(60),
    )
    .await;
    assert!(p.is_running(llm), "{}", p.log(llm));
    // Each refused question is dead-lettered at once, as refused, its status in its error.
    let dead: BTreeMap<String, String> = sqlx::query_as(
        "SELECT question, error FROM qa_results WHERE status = 'dead' AND attempts = 1",
    )
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead[forbidden].contains("HTTP 403"), "{dead:?}");
    assert!(dead[missing].contains("HTTP 404"), "{dead:?}");
    assert_eq!(
        p.count("SELECT count(*) FROM dead_letters WHERE error_class = 'refused'")
            .await,
        2
    );
    // Each was asked once; whatever else was asked (the probes) is none of the questions.
    let calls = fake.calls().await;
    for refused in [forbidden, missing] {
        let asked = calls.iter().filter(|(q, _, _)| q == refused).count();
        assert_eq!(asked, 1, "{refused}: {calls:?}");
    }
    let probes: Vec<_> = calls
        .iter()
        .filter(|(q, _, _)| !pairs.iter().any(|(question, _)| question == q))
        .collect();
    assert!(
        !probes.is_empty() && probes.iter().all(|(_, _, status)| *status == 200),
        "{calls:?}"
    );
    assert!(!p.log(llm).contains(KEY) && !all_rows_text(&p).await.contains(KEY));
}

/// A stub answers file for the tests below, with `n` pairs.
fn stub_answers(n: usize) -> (PathBuf, Vec<(String, String)>) {
    dataset(&std::env::temp_dir(), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qa_ask_traffic_results_and_reuse_with_the_stub() {
    let (answers, pairs) = stub_answers(50);
    let p = TestPipeline::spawn(Options {
        env: vec![
            ("LLM_STUB_ANSWERS".into(), answers.to_str().unwrap().into()),
            ("LLM_STUB_LATENCY".into(), "20ms".into()),
            ("MAX_SCORE_RETRIES".into(), "2".into()),
        ],
        ..Options::no_workers()
    })
    .await;
    p.start("sluice-llm");
    p.start("sluice-scorer");
    p.wait_live("llm", 1).await;
    p.wait_live("scorer", 1).await;

    // Known to the stub: validated, exit 0, the answer on standard output.
    let (code, out) = p
        .sluice(&["qa", "ask", &pairs[0].0, "--expected", &pairs[0].1])
        .await;
    assert_eq!((code, out.trim()), (0, pairs[0].1.as_str()));
    // Unknown to it: re-asked twice, then rejected with the best answer.
    let (code, out) = p
        .sluice(&[
            "qa",
            "ask",
            "Who wrote Hamlet?",
            "--expected",
            "Shakespeare",
            "--json",
        ])
        .await;
    assert_eq!(code, 1);
    let row: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["status"], "rejected");
    assert_eq!(row["asks"], 3);
    assert_eq!(row["answer"], "Stub answer to: Who wrote Hamlet?");
    // Asked again, the validated answer is reused, not asked.
    let (code, out) = p
        .sluice(&[
            "qa",
            "ask",
            &pairs[0].0,
            "--expected",
            &pairs[0].1,
            "--json",
        ])
        .await;
    assert_eq!(code, 0);
    let row: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["reused"], true);

    // Traffic from a CSV: every question, bursty, tagged; the summary counts them.
    let csv = std::env::temp_dir().join(format!("traffic-{}.csv", Uuid::new_v4().simple()));
    let mut text = String::from("question,expected\n");
    for (q, a) in &pairs {
        text.push_str(&format!("\"{q}\",{a}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let csv = csv.to_str().unwrap();
    let (code, out) = p
        .sluice(&[
            "traffic",
            "--file",
            csv,
            "--rate",
            "200",
            "--arrivals",
            "bursty",
            "--run-id",
            "r1",
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sent=50 skipped=0 errors=0"), "{out}");
    assert!(out.trim_end().ends_with("run_id=r1"), "{out}");
    p.wait_count(
        "SELECT count(*) FROM qa_results WHERE run_id = 'r1' AND status = 'validated'",
        50,
        Duration::from_secs(60),
    )
    .await;
    let (code, out) = p
        .sluice(&["qa", "results", "--run-id", "r1", "--json"])
        .await;
    assert_eq!(code, 0);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 50);
    assert!(lines
        .iter()
        .all(|l| l["run_id"] == "r1" && l["score"] == 1.0));
    // Everything answered: a second run skips it all; a count cycles the file.
    let (_, out) = p
        .sluice(&[
            "traffic",
            "--file",
            csv,
            "--rate",
            "500",
            "--skip-answered",
            "--run-id",
            "r2",
        ])
        .await;
    assert!(out.contains("sent=0 skipped=50 errors=0"), "{out}");
    let (_, out) = p
        .sluice(&[
            "traffic", "--file", csv, "--rate", "500", "--count", "120", "--run-id", "r3",
        ])
        .await;
    assert!(out.contains("sent=120 "), "{out}");
    p.wait_count(
        "SELECT count(*) FROM qa_results WHERE run_id = 'r3'",
        120,
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_questions_are_dead_lettered_and_the_worker_keeps_answering() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let llm = p.start_with("sluice-llm", &[("LLM_STUB_LATENCY", "1ms")]);
    let scorer = p.start("sluice-scorer");
    p.wait_live("llm", 1).await;
    let topic = p.topics.qa_questions();
    let id = Uuid::new_v4();
    let bad: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"{}".to_vec(),
        serde_json::to_vec(&Envelope::with_id(id, "compute", Question::new("x?", None))).unwrap(),
        serde_json::to_vec(&Envelope::new(KIND, Question::new("   ", None))).unwrap(),
        serde_json::to_vec(&Envelope::new(
            KIND,
            serde_json::json!({"question": "x", "extra": 1}),
        ))
        .unwrap(),
        serde_json::to_vec(&Envelope::new(
            KIND,
            Question::new("x".repeat(40 * 1024), None),
        ))
        .unwrap(),
    ];
    // A run id far over its limit: the question is refused, and its dead letter must not
    // put the run id where it would be indexed (an index row holds at most 2,704 bytes).
    let long_run = Question {
        run_id: Some(
            (0..300)
                .map(|_| Uuid::new_v4().simple().to_string())
                .collect(),
        ),
        ..Question::new("x?", None)
    };
    let bad = [
        bad,
        vec![serde_json::to_vec(&Envelope::new(KIND, long_run)).unwrap()],
    ]
    .concat();
    for (i, payload) in bad.into_iter().enumerate() {
        p.publish_raw(&topic, &format!("bad-{i}"), payload).await;
    }
    // Answers only another producer could have written: counts that overflow.
    let answer = |reasks: u32, latency_ms: u64| {
        serde_json::json!({
            "id": Uuid::new_v4(), "kind": KIND, "created_at": "2026-01-01T00:00:00Z",
            "payload": {
                "question": {"question": "q?", "expected": "a", "reasks": reasks},
                "reply": {"answer": "b", "provider": "stub", "model": "m",
                          "latency_ms": latency_ms, "worker": "w"},
                "attempts": 1
            }
        })
    };
    for (i, bad) in [answer(u32::MAX, 1), answer(0, u64::MAX)]
        .iter()
        .enumerate()
    {
        p.publish_raw(
            &p.topics.qa_answers(),
            &format!("bad-answer-{i}"),
            serde_json::to_vec(bad).unwrap(),
        )
        .await;
    }
    // An outcome from another scorer, its score written in a way no double holds: stored as
    // its type writes it, so the view's cast works for every query.
    let tiny = r#"{"id": "%ID%", "kind": "qa", "worker": "w", "attempts": 1,
        "created_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z",
        "result": {"ok": true, "status": "rejected", "question": "q-tiny", "expected": "a",
                   "score": 1e-400, "asks": 1, "reply": {"answer": "b", "provider": "x",
                   "model": "m", "latency_ms": 1, "worker": "w"}}}"#
        .replace("%ID%", &Uuid::new_v4().to_string());
    p.publish_raw(&p.topics.results(), "tiny", tiny.into_bytes())
        .await;
    let good = publish_questions(&p, &[Question::new("Still there?", None)]).await;
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE error_class = 'schema'",
        9,
        Duration::from_secs(30),
    )
    .await;
    let (_, status) = eventually(Duration::from_secs(30), "the good question", || async {
        let row = sluice_db::qa::outcome(&p.pool, good[0]).await.ok()??;
        Some((row.answer, row.status))
    })
    .await;
    assert_eq!(status, "validated");
    assert!(p.is_running(llm) && p.is_running(scorer));
    p.wait_count(
        "SELECT count(*) FROM qa_results WHERE question = 'q-tiny' AND score = 0",
        1,
        Duration::from_secs(30),
    )
    .await;
    // Every row casts: the average reads them all.
    assert_eq!(
        p.count("SELECT count(avg) FROM (SELECT avg(score) FROM qa_results) a")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_worker_answers_beside_the_rust_ones() {
    let python = std::env::var("SLUICE_PYTHON")
        .expect("SLUICE_PYTHON: a Python with confluent-kafka (scripts/test makes one)");
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let rust = p.start_with("sluice-llm", &[("LLM_STUB_LATENCY", "20ms")]);
    p.start("sluice-scorer");
    p.wait_live("llm", 1).await;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-llm-worker/worker.py");
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("{}-python-worker.log", p.kafka.topic_prefix)),
    )
    .unwrap();
    let mut worker = Command::new(python)
        .arg(script)
        .env("KAFKA_BROKERS", &p.kafka.brokers)
        .env("SLUICE_TOPIC_PREFIX", &p.kafka.topic_prefix)
        .env("WORKER_INSTANCE_ID", "llm-python")
        .env("LLM_STUB_LATENCY", "20ms")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the Python worker");
    p.wait_live("llm", 2).await;
    // Both members of the group hold partitions before the questions come.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let questions: Vec<Question> = (0..400)
        .map(|i| Question::new(format!("question number {i}?"), None))
        .collect();
    publish_questions(&p, &questions).await;
    let result = tokio::time::timeout(
        Duration::from_secs(90),
        p.wait_count(
            "SELECT count(*) FROM qa_results WHERE status = 'validated'",
            400,
            Duration::from_secs(90),
        ),
    )
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    result.expect("all answered");
    let by_python = p
        .count("SELECT count(*) FROM qa_results WHERE worker = 'llm-python'")
        .await;
    let by_rust = p
        .count("SELECT count(*) FROM qa_results WHERE worker = 'sluice-llm-2'")
        .await;
    assert_eq!(by_python + by_rust, 400);
    assert!(
        by_python > 0 && by_rust > 0,
        "python {by_python}, rust {by_rust}"
    );
    assert!(p.is_running(rust));
    assert_eq!(p.count("SELECT count(*) FROM jobs").await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gemini_provider_answers_through_the_generative_language_api() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let (answers, pairs) = dataset(&std::env::temp_dir(), 20);
    let fake = FakeLlm::start(&["--api-key", KEY, "--answers", answers.to_str().unwrap()]);
    let base_url = format!("{}/v1beta", fake.url);
    let llm = p.start_with(
        "sluice-llm",
        &[
            ("LLM_PROVIDER", "gemini"),
            ("LLM_BASE_URL", &base_url),
            ("LLM_MODEL", "gemini-test"),
            ("LLM_API_KEY", KEY),
        ],
    );
    p.start("sluice-scorer");
    let questions: Vec<Question> = pairs
        .iter()
        .map(|(q, a)| Question::new(q.clone(), Some(a.clone())))
        .collect();
    publish_questions(&p, &questions).await;
    p.wait_count(
        "SELECT count(*) FROM qa_results WHERE status = 'validated' AND provider = 'gemini' \
         AND model = 'gemini-test' AND prompt_tokens > 0 AND answer_tokens = 1",
        20,
        Duration::from_secs(60),
    )
    .await;
    assert!(fake
        .calls()
        .await
        .iter()
        .all(|(_, _, status)| *status == 200));
    assert!(!p.log(llm).contains(KEY));
}
