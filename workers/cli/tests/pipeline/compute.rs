//! Seed 002 on the pipeline: the calculator's answers, as its client printed them.

use std::time::Duration;

use serde_json::json;
use sluice_messages::compute::CalcRequest;
use sluice_messages::compute::KIND_JOB;
use sluice_messages::Envelope;
use uuid::Uuid;

use crate::helpers::{Options, TestPipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_give_the_seeds_answers() {
    let p = TestPipeline::spawn(Options {
        compute_workers: 3,
        ..Options::default()
    })
    .await;
    let cases = [
        (
            vec!["--op", "add", "--a", "10", "--b", "5"],
            0,
            r#"{"ok": true, "result": 15.0, "a": 10.0, "b": 5.0, "op": "add"}"#,
        ),
        (
            vec!["--op", "sub", "--a", "20", "--b", "7"],
            0,
            r#"{"ok": true, "result": 13.0, "a": 20.0, "b": 7.0, "op": "sub"}"#,
        ),
        (
            vec!["--op", "mul", "--a", "6", "--b", "9"],
            0,
            r#"{"ok": true, "result": 54.0, "a": 6.0, "b": 9.0, "op": "mul"}"#,
        ),
        (
            vec!["--op", "div", "--a", "10", "--b", "2"],
            0,
            r#"{"ok": true, "result": 5.0, "a": 10.0, "b": 2.0, "op": "div"}"#,
        ),
        (
            vec!["--op", "div", "--a", "10", "--b", "0"],
            1,
            r#"{"ok": false, "error": "division by zero"}"#,
        ),
        // Three live workers: split in three, as the seed does with three workers.
        (
            vec!["--op", "sum_squares", "--n", "9"],
            0,
            r#"{"ok": true, "result": 285, "parts": [{"a": 1, "b": 3, "result": 14}, {"a": 4, "b": 6, "result": 77}, {"a": 7, "b": 9, "result": 194}]}"#,
        ),
    ];
    for (args, code, expected) in cases {
        let mut full = vec!["calc"];
        full.extend(args.iter().copied());
        let (exit, out) = p.sluice(&full).await;
        assert_eq!(out.trim(), expected, "sluice {full:?}");
        assert_eq!(exit, code, "exit code of sluice {full:?}");
    }

    // A job published by another producer, naming no part count, is split across the live
    // workers too: the worker asks the broker how many are in its group.
    let job = Envelope::new(
        KIND_JOB,
        CalcRequest {
            op: "sum_squares".into(),
            n: Some(9.into()),
            ..CalcRequest::default()
        },
    );
    p.publish_job(&job).await;
    p.wait_count(
        &format!(
            "SELECT count(*) FROM jobs WHERE job_id = '{}' AND status = 'done'",
            job.id
        ),
        1,
        Duration::from_secs(30),
    )
    .await;
    let (exit, shown) = p.sluice(&["job", &job.id.to_string()]).await;
    assert_eq!(exit, 0);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["result"]["result"], json!(285));
    assert_eq!(
        shown["result"]["parts"].as_array().unwrap().len(),
        3,
        "split in three for three live workers: {shown}"
    );

    // Exact at the top of the range, whatever the split.
    let (exit, out) = p
        .sluice(&[
            "calc",
            "--op",
            "sum_squares",
            "--n",
            "1000000000000000000",
            "--parts",
            "7",
        ])
        .await;
    assert_eq!(exit, 0);
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        answer["result"].to_string(),
        "333333333333333333833333333333333333500000000000000000"
    );
    assert_eq!(answer["parts"].as_array().unwrap().len(), 7);

    // --no-wait gives the id; `job` shows the answer; an unknown id is unknown, not pending.
    let (exit, id) = p
        .sluice(&["calc", "--op", "mul", "--a", "3", "--b", "4", "--no-wait"])
        .await;
    assert_eq!(exit, 0);
    let id = id.trim().to_string();
    Uuid::parse_str(&id).expect("--no-wait prints the job id");
    p.wait_count(
        &format!("SELECT count(*) FROM jobs WHERE job_id = '{id}' AND status = 'done'"),
        1,
        Duration::from_secs(30),
    )
    .await;
    let (exit, shown) = p.sluice(&["job", &id]).await;
    assert_eq!(exit, 0);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["status"], "done");
    assert_eq!(shown["result"]["result"], json!(12.0));
    let (exit, unknown) = p.sluice(&["job", &Uuid::new_v4().to_string()]).await;
    assert_eq!(exit, 1);
    assert!(unknown.contains(r#""status": "unknown""#), "{unknown}");

    let (exit, listing) = p.sluice(&["workers"]).await;
    assert_eq!(exit, 0);
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("compute")).count(),
        3,
        "{listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calc_without_live_workers_says_so_and_leaves_nothing_behind() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let (exit, out) = p
        .sluice(&["calc", "--op", "add", "--a", "1", "--b", "2"])
        .await;
    assert_eq!(
        out.trim(),
        r#"{"ok": false, "error": "no worker available"}"#
    );
    assert_ne!(exit, 0);
    assert_eq!(
        p.count("SELECT count(*) FROM jobs").await,
        0,
        "no job left pending"
    );
}

/// Publishes `add 2 2`, a job any live worker answers with 4.
async fn publish_two_plus_two(p: &TestPipeline) -> Uuid {
    let id = Uuid::new_v4();
    p.publish_job(&Envelope::with_id(
        id,
        "compute",
        json!({"op": "add", "a": 2, "b": 2}),
    ))
    .await;
    id
}

async fn wait_for_four(p: &TestPipeline, id: Uuid) {
    let sql = format!(
        "SELECT count(*) FROM jobs WHERE job_id = '{id}' AND (result->>'result')::float8 = 4"
    );
    p.wait_count(&sql, 1, Duration::from_secs(30)).await;
}

/// A header name that is not UTF-8 made rdkafka panic in the worker, before the message was
/// stored: every consumer of its partition crash-looped on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_is_dead_lettered_and_the_worker_keeps_running() {
    let p = TestPipeline::spawn(Options::default()).await;
    let topic = p.topics.compute_jobs();
    let poisoned = Uuid::new_v4();
    let envelope = Envelope::with_id(poisoned, "compute", json!({"op": "add", "a": 1, "b": 2}));
    p.publish_with_raw_header_name(
        &topic,
        &poisoned.to_string(),
        &serde_json::to_vec(&envelope).unwrap(),
        b"trace-\xff\xfe",
    )
    .await;
    let fine = publish_two_plus_two(&p).await;
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE error_class = 'decode' AND reason LIKE '%not UTF-8%'",
        1,
        Duration::from_secs(60),
    )
    .await;
    wait_for_four(&p, fine).await;
    assert!(p.is_running(2), "the compute worker survived the message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_becomes_dead_letters_or_error_answers_and_the_worker_keeps_running() {
    let p = TestPipeline::spawn(Options::default()).await;
    let topic = p.topics.compute_jobs();
    let envelope_text = |id: Uuid, payload: &str| {
        format!(
            r#"{{"id": "{id}", "kind": "compute", "payload": {payload}, "created_at": "2026-11-22T00:00:00Z"}}"#
        )
    };
    let huge = "x".repeat(1_000_000);
    let undecodable: [&[u8]; 2] = [
        b"this is not json",
        br#"{"kind": "compute", "payload": {"op": "add", "a": 1, "b": 2}, "created_at": "2026-11-22T00:00:00Z"}"#,
    ];
    for message in undecodable {
        p.publish_raw(&topic, "junk", message.to_vec()).await;
    }
    let invalid_payloads = [
        r#"{"op": "add", "a": "ten", "b": 5}"#.to_string(),
        r#"{"op": "pow", "a": 1, "b": 2}"#.to_string(),
        r#"{"op": "add", "a": NaN, "b": 1}"#.to_string(),
        r#"{"op": "add", "a": 1e400, "b": 1}"#.to_string(),
        format!(r#"{{"op": "{huge}", "a": 1, "b": 2}}"#),
    ];
    for payload in &invalid_payloads {
        let id = Uuid::new_v4();
        p.publish_raw(
            &topic,
            &id.to_string(),
            envelope_text(id, payload).into_bytes(),
        )
        .await;
    }
    let answered = [
        (Uuid::new_v4(), json!({"op": "sum_squares", "n": -5})),
        (
            Uuid::new_v4(),
            json!({"op": "sum_squares", "n": 1_000_000_000_000_000_000_000_000_000u128}),
        ),
        (Uuid::new_v4(), json!({"op": "sum_squares", "n": 2.5})),
        (Uuid::new_v4(), json!({"op": "mul", "a": 1e300, "b": 1e300})),
    ];
    for (id, payload) in &answered {
        p.publish_job(&Envelope::with_id(*id, "compute", payload))
            .await;
    }
    let fine = publish_two_plus_two(&p).await;

    // Seven undecodable or schema-violating messages: seven dead letters, with reasons.
    p.wait_count(
        "SELECT count(*) FROM dead_letters",
        7,
        Duration::from_secs(60),
    )
    .await;
    let classes: Vec<(String, String)> =
        sqlx::query_as("SELECT error_class, reason FROM dead_letters ORDER BY id")
            .fetch_all(&p.pool)
            .await
            .unwrap();
    for (class, reason) in &classes {
        assert!(class == "decode" || class == "schema", "{class}: {reason}");
        assert!(!reason.is_empty());
    }
    assert!(
        classes.iter().any(|(_, r)| r.contains("unknown op")),
        "{classes:?}"
    );
    let huge_letter: i64 = p
        .count("SELECT count(*) FROM dead_letters WHERE length(payload) > 1000000")
        .await;
    assert_eq!(huge_letter, 1, "the 1 MB message is kept whole");

    // Values out of range are answers, not failures.
    for (id, _) in &answered {
        let sql = format!("SELECT count(*) FROM jobs WHERE job_id = '{id}' AND status = 'done' AND result->>'ok' = 'false'");
        p.wait_count(&sql, 1, Duration::from_secs(30)).await;
    }
    wait_for_four(&p, fine).await;
    assert!(p.is_running(2), "the compute worker survived all of it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_headers_or_key_leave_no_room_for_its_dead_letter_is_dead_lettered_cut() {
    let p = TestPipeline::spawn(Options::default()).await;
    let topic = p.topics.compute_jobs();
    let mut doomed = Vec::new();
    for filler_in_key in [false, true] {
        let id = Uuid::new_v4();
        // An unknown operation: its name in the error makes the dead letter's own headers long.
        let envelope = Envelope::with_id(
            id,
            "compute",
            json!({"op": "o".repeat(1_500), "a": 1, "b": 2}),
        );
        let payload = serde_json::to_vec(&envelope).unwrap();
        let trace = ("traceparent", "00-abc-01");
        // The message fits a message's size with 100 bytes to spare; its dead letter, with
        // sluice's headers added (the error alone is longer), does not, whatever its payload
        // is cut to, unless its own headers, or its key, are cut too.
        let filler_len = sluice_core::kafka::MESSAGE_MAX_BYTES
            - payload.len()
            - id.to_string().len()
            - trace.0.len()
            - trace.1.len()
            - "filler".len()
            - 100;
        let filler = "h".repeat(filler_len);
        if filler_in_key {
            let key = format!("{id}{filler}");
            p.publish_with_headers(&topic, &key, payload, &[trace])
                .await;
        } else {
            let headers = [trace, ("filler", filler.as_str())];
            p.publish_with_headers(&topic, &id.to_string(), payload, &headers)
                .await;
        }
        doomed.push(id);
    }
    let fine = publish_two_plus_two(&p).await;
    for id in &doomed {
        p.wait_count(
            &format!("SELECT count(*) FROM dead_letters WHERE job_id = '{id}'"),
            1,
            Duration::from_secs(60),
        )
        .await;
        // What is left of it is not the message: a replay refuses it.
        let letter: i64 = sqlx::query_scalar("SELECT id FROM dead_letters WHERE job_id = $1")
            .bind(id)
            .fetch_one(&p.pool)
            .await
            .unwrap();
        let (exit, out) = p.sluice(&["dlq", "replay", &letter.to_string()]).await;
        assert_ne!(exit, 0, "{out}");
        assert!(out.contains("was cut to fit the dead letters"), "{out}");
    }
    wait_for_four(&p, fine).await;
    assert!(p.is_running(2), "the compute worker survived the messages");
}

/// Any producer can write to `compute.jobs`: a range published there under another job's id
/// wrote that job's answer for good (the persister assembles the first complete split).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_on_the_public_jobs_topic_is_dead_lettered_and_answers_nothing() {
    let p = TestPipeline::spawn(Options::default()).await;
    let victim = Uuid::new_v4();
    let forged = Envelope::with_id(
        victim,
        "compute.part",
        json!({"n": 1, "part": 0, "parts": 1, "a": 1, "b": 1}),
    );
    p.publish_job(&forged).await;
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE reason LIKE '%does not belong on%'",
        1,
        Duration::from_secs(60),
    )
    .await;
    p.publish_job(&Envelope::with_id(
        victim,
        KIND_JOB,
        json!({"op": "sum_squares", "n": 9, "parts": 3}),
    ))
    .await;
    p.wait_count(
        &format!(
            "SELECT count(*) FROM jobs WHERE job_id = '{victim}' AND status = 'done'
               AND result->>'result' = '285'"
        ),
        1,
        Duration::from_secs(60),
    )
    .await;
}
