//! `sluice calc`: publish a compute job and print its persisted answer, as seed 002's client.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Number};
use sluice_core::Output;
use sluice_db::queries::{self, JobClaim, JobRow};
use sluice_db::JobWaiter;
use sluice_messages::compute::{CalcOutput, CalcRequest, KIND_JOB, ROLE};
use sluice_messages::Envelope;
use uuid::Uuid;

use crate::app::App;
use crate::render::to_line;

#[derive(Debug, clap::Args)]
pub struct CalcArgs {
    /// add, sub, mul, div or sum_squares.
    #[arg(long)]
    pub op: String,
    #[arg(long, allow_negative_numbers = true)]
    pub a: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    pub b: Option<f64>,
    /// For sum_squares: 1² + … + n².
    #[arg(long, allow_negative_numbers = true)]
    pub n: Option<Number>,
    /// For sum_squares: how many ranges; by default the number of live compute workers.
    #[arg(long)]
    pub parts: Option<u32>,
    /// Job id; publishing the same id again is idempotent.
    #[arg(long)]
    pub id: Option<Uuid>,
    /// Print the job id instead of waiting for the answer.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the answer, e.g. 30s.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_timeout(raw: &str) -> Result<Duration, String> {
    sluice_core::config::parse_duration(raw)
}

fn fail(message: impl Into<String>) -> ExitCode {
    println!("{}", to_line(&CalcOutput::error(message)));
    ExitCode::FAILURE
}

pub async fn run(app: &App, args: CalcArgs) -> anyhow::Result<ExitCode> {
    // The producer (made before the claim, so that failing to make it leaves nothing behind)
    // looks the topic up, and the listener (listening before the job can finish) connects,
    // while the workers are counted: a new process's connections are most of its latency.
    let publisher = app.publisher()?;
    publisher.look_up(&app.topics.compute_jobs());
    let (live, waiter) = tokio::try_join!(queries::live_workers(&app.pool, Some(ROLE)), async {
        if args.no_wait {
            Ok(None)
        } else {
            JobWaiter::start(&app.pool).await.map(Some)
        }
    })?;
    if live.is_empty() {
        return Ok(fail("no worker available"));
    }
    // The job row keeps the request as the user gave it, and that is what `--id` compares: a
    // sum_squares without `--parts` is the same request whatever number of live workers its
    // published copy is split across (the split is not part of the answer's value).
    let asked = CalcRequest {
        op: args.op,
        a: args.a,
        b: args.b,
        n: args.n,
        parts: args.parts,
    };
    let published = CalcRequest {
        parts: match (asked.op.as_str(), asked.parts) {
            ("sum_squares", None) => Some(live.len() as u32),
            (_, parts) => parts,
        },
        ..asked.clone()
    };
    let envelope = Envelope::with_id(args.id.unwrap_or_else(Uuid::new_v4), KIND_JOB, &published);
    let id = envelope.id;
    let claim =
        queries::claim_job(&app.pool, id, KIND_JOB, &json!(asked), envelope.created_at).await?;
    match &claim {
        JobClaim::DifferentRequest => {
            return Ok(fail(format!(
                "job {id} already exists with a different request; nothing was sent"
            )))
        }
        JobClaim::SameRequestDone(row) => {
            if args.no_wait {
                println!("{id}");
                return Ok(ExitCode::SUCCESS);
            }
            return Ok(print_answer(id, Some(row.clone())));
        }
        JobClaim::Created | JobClaim::SameRequestPending | JobClaim::SameRequestDead { .. } => {}
    }
    let output = Output::json(app.topics.compute_jobs(), id.to_string(), &envelope)?;
    if let Err(e) = publisher.try_publish(&output).await {
        queries::release_job_claim(&app.pool, id, &claim).await?;
        return Ok(fail(format!("could not publish job {id}: {e}")));
    }
    let Some(waiter) = waiter else {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    };
    let row = waiter.wait(id, args.timeout).await?;
    Ok(print_answer(id, row))
}

/// Prints a compute job's answer in the seed's shape; success only for `"ok": true`.
pub fn print_answer(id: Uuid, row: Option<JobRow>) -> ExitCode {
    let Some(row) = row else {
        return fail(format!("unknown job {id}"));
    };
    match row.status.as_str() {
        "done" => {
            let answer = row
                .result
                .and_then(|r| serde_json::from_value::<CalcOutput>(r).ok());
            match answer {
                Some(answer) => {
                    println!("{}", to_line(&answer));
                    if answer.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                None => fail(format!("job {id} has no compute answer")),
            }
        }
        "dead" => fail(format!(
            "dead-lettered: {}",
            row.error.unwrap_or_else(|| "no reason recorded".into())
        )),
        _ => fail(format!(
            "timed out waiting for job {id}; see `sluice job {id}`"
        )),
    }
}
