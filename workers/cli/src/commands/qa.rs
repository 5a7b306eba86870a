//! `sluice qa ask` and `sluice qa results`: put one question to the pipeline and wait for its
//! outcome; list outcomes (those of one traffic run, or the latest).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use sluice_core::Output;
use sluice_db::qa::{self as qa_rows, QaRow};
use sluice_db::queries::{self, JobClaim};
use sluice_db::JobWaiter;
use sluice_messages::qa::{self, Question};
use sluice_messages::Envelope;
use uuid::Uuid;

use crate::app::App;
use crate::render::to_line;

#[derive(Debug, clap::Subcommand)]
pub enum QaCommand {
    /// Ask a question and print its answer once it is validated or rejected.
    Ask {
        question: String,
        /// The answer to score against; without it the first answer is validated unscored.
        #[arg(long)]
        expected: Option<String>,
        #[arg(long)]
        run_id: Option<String>,
        /// Question id; asking the same id again is idempotent.
        #[arg(long)]
        id: Option<Uuid>,
        /// How long to wait, e.g. 2m (retries and re-asks take time).
        #[arg(long, default_value = "120s", value_parser = sluice_core::config::parse_duration)]
        timeout: Duration,
        /// Print the whole outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List outcomes, oldest first: those of one run, or the latest of all.
    Results {
        #[arg(long)]
        run_id: Option<String>,
        /// At most this many (the latest).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(app: &App, command: QaCommand) -> anyhow::Result<ExitCode> {
    match command {
        QaCommand::Ask {
            question,
            expected,
            run_id,
            id,
            timeout,
            json,
        } => {
            let question = Question {
                run_id,
                ..Question::new(question, expected)
            };
            ask(app, question, id, timeout, json).await
        }
        QaCommand::Results {
            run_id,
            limit,
            json,
        } => {
            anyhow::ensure!(limit > 0, "--limit must be at least 1");
            let rows = qa_rows::results(&app.pool, run_id.as_deref(), limit).await?;
            for row in &rows {
                if json {
                    println!("{}", serde_json::to_string(row)?);
                } else {
                    println!("{}", summary(row));
                }
            }
            if !json {
                eprintln!("{} question(s)", rows.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn ask(
    app: &App,
    question: Question,
    id: Option<Uuid>,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Err(reason) = question.check() {
        println!("{}", to_line(&json!({"ok": false, "error": reason})));
        return Ok(ExitCode::FAILURE);
    }
    if queries::live_workers(&app.pool, Some(qa::LLM_ROLE))
        .await?
        .is_empty()
    {
        eprintln!("no LLM worker is live: the question waits until one starts");
    }
    let envelope = Envelope::with_id(id.unwrap_or_else(Uuid::new_v4), qa::KIND, &question);
    let id = envelope.id;
    let publisher = app.publisher()?;
    let waiter = JobWaiter::start(&app.pool).await?;
    let claim = queries::claim_job(
        &app.pool,
        id,
        qa::KIND,
        &json!(question),
        envelope.created_at,
    )
    .await?;
    match &claim {
        JobClaim::DifferentRequest => {
            println!(
                "{}",
                to_line(&json!({"ok": false, "error":
                    format!("question {id} already exists with another text; nothing was sent")}))
            );
            return Ok(ExitCode::FAILURE);
        }
        JobClaim::SameRequestDone(_) => return print_outcome(app, id, json).await,
        JobClaim::Created | JobClaim::SameRequestPending | JobClaim::SameRequestDead { .. } => {}
    }
    let output = Output::json(app.topics.qa_questions(), id.to_string(), &envelope)?;
    if let Err(e) = publisher.try_publish(&output).await {
        queries::release_job_claim(&app.pool, id, &claim).await?;
        anyhow::bail!("could not publish question {id}: {e}");
    }
    waiter.wait(id, timeout).await?;
    print_outcome(app, id, json).await
}

/// Prints the outcome of question `id`: the answer, then how it was judged. Success only for
/// a validated answer.
async fn print_outcome(app: &App, id: Uuid, json: bool) -> anyhow::Result<ExitCode> {
    let row = qa_rows::outcome(&app.pool, id).await?;
    let Some(row) = row.filter(|r| r.status != "pending") else {
        println!(
            "{}",
            to_line(&json!({"ok": false, "error":
                format!("timed out waiting for question {id}; see `sluice job {id}`")}))
        );
        return Ok(ExitCode::FAILURE);
    };
    if json {
        println!("{}", serde_json::to_string(&row)?);
    } else {
        match &row.answer {
            Some(answer) => println!("{answer}"),
            None => println!("(no answer)"),
        }
        eprintln!("{}", judgement(&row));
    }
    Ok(if row.status == "validated" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `validated, score 1.00, 1 ask, stub/stub-1, 102 ms` or `dead: <reason>`.
fn judgement(row: &QaRow) -> String {
    if row.status == "dead" {
        return format!(
            "dead: {}",
            row.error.as_deref().unwrap_or("no reason recorded")
        );
    }
    let score = row
        .score
        .map_or("unscored".to_string(), |s| format!("score {s:.2}"));
    let asks = row.asks.unwrap_or(1);
    format!(
        "{}, {score}, {asks} ask{}, {}/{}, {} ms{}",
        row.status,
        if asks == 1 { "" } else { "s" },
        row.provider.as_deref().unwrap_or("?"),
        row.model.as_deref().unwrap_or("?"),
        row.latency_ms.unwrap_or_default(),
        if row.reused == Some(true) {
            ", reused"
        } else {
            ""
        }
    )
}

fn clipped(text: Option<&str>, chars: usize) -> String {
    let text = text.unwrap_or("").replace(['\n', '\r', '\t'], " ");
    if text.chars().count() <= chars {
        text
    } else {
        let kept: String = text.chars().take(chars - 1).collect();
        format!("{kept}…")
    }
}

/// One line: status, score, asks, question and answer, clipped.
fn summary(row: &QaRow) -> String {
    format!(
        "{:<9} {:>5} {:>2}  {:<50}  {}",
        row.status,
        row.score.map_or("-".to_string(), |s| format!("{s:.2}")),
        row.asks.unwrap_or(0),
        clipped(row.question.as_deref(), 50),
        clipped(row.answer.as_deref().or(row.error.as_deref()), 60)
    )
}
