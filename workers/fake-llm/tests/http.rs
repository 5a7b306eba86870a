//! The fake served in-process on 127.0.0.1:0, spoken to in raw HTTP/1.1 over a TCP stream, as
//! a client under test would: one round trip per API, a wrong key, a rate limit, and `/calls`.

use clap::Parser;
use serde_json::{json, Value};
use sluice_fake_llm::Config;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(args: &[&str]) -> SocketAddr {
    let args = std::iter::once("sluice-fake-llm").chain(args.iter().copied());
    let config = Config::try_parse_from(args).expect("the arguments parse");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(sluice_fake_llm::serve(config, listener));
    addr
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// Sends one request on its own connection and reads the reply to the end.
async fn send(addr: SocketAddr, method: &str, target: &str, headers: &[&str], body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(&format!("{header}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn both_apis_round_trip_and_are_logged() {
    let answers =
        std::env::temp_dir().join(format!("sluice-fake-llm-{}.jsonl", std::process::id()));
    std::fs::write(
        &answers,
        "{\"question\": \"What is 2+2?\", \"expected\": \"4\"}\n",
    )
    .expect("write");
    let addr = start(&[
        "--api-key",
        "k+1",
        "--answers",
        answers.to_str().expect("UTF-8"),
    ])
    .await;

    let chat = r#"{"model": "gpt-x", "messages": [{"role": "user", "content": "What is 2+2?"}]}"#;
    let openai = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &["Authorization: Bearer k+1"],
        chat,
    )
    .await;
    // The spawned server read the file before it answered, and never reads it again.
    std::fs::remove_file(&answers).expect("remove");
    assert_eq!(openai.status, 200, "{}", openai.body);
    let openai = openai.json();
    assert_eq!(openai["object"], "chat.completion");
    assert_eq!(openai["model"], "gpt-x");
    assert_eq!(openai["choices"][0]["message"]["content"], "4");
    assert_eq!(openai["choices"][0]["finish_reason"], "stop");
    assert_eq!(openai["usage"]["total_tokens"].to_string(), "4");

    let generate = r#"{"contents": [{"role": "user", "parts": [{"text": "Who?"}]}]}"#;
    let path = "/v1beta/models/gemini-x:generateContent?key=k%2B1";
    let gemini = send(addr, "POST", path, &[], generate).await;
    assert_eq!(gemini.status, 200, "{}", gemini.body);
    let gemini = gemini.json();
    assert_eq!(
        gemini["candidates"][0]["content"]["parts"][0]["text"],
        "Answer to: Who?"
    );
    assert_eq!(gemini["candidates"][0]["finishReason"], "STOP");
    assert_eq!(gemini["modelVersion"], "gemini-x");

    let path = "/v1beta/models/gemini-x:generateContent";
    let denied = send(addr, "POST", path, &["x-goog-api-key: nope"], generate).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["error"]["code"].to_string(), "401");

    let bad = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &["Authorization: Bearer k+1"],
        "{}",
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]["message"].is_string());

    let health = send(addr, "GET", "/health", &[], "").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    let mut calls = send(addr, "GET", "/calls", &[], "").await.json();
    for call in calls.as_array_mut().expect("an array") {
        let at_ms = call.as_object_mut().and_then(|call| call.remove("at_ms"));
        assert!(at_ms
            .and_then(|ms| ms.as_u64())
            .is_some_and(|ms| ms > 1_600_000_000_000));
    }
    let expected = json!([
        {"question": "What is 2+2?", "status": 200, "api": "openai"},
        {"question": "Who?", "status": 200, "api": "gemini"},
        {"question": "Who?", "status": 401, "api": "gemini"},
        {"question": null, "status": 400, "api": "openai"},
    ]);
    assert_eq!(calls, expected);
}

#[tokio::test]
async fn rate_limits_carry_retry_after() {
    let addr = start(&["--fail-429", "1", "--retry-after-secs", "7"]).await;
    let chat = r#"{"model": "m", "messages": [{"role": "user", "content": "q"}]}"#;
    let limited = send(addr, "POST", "/v1/chat/completions", &[], chat).await;
    assert_eq!(limited.status, 429);
    assert!(
        limited.head.contains("\r\nretry-after: 7"),
        "{}",
        limited.head
    );
}
