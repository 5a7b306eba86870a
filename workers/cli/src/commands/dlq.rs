//! `sluice dlq list` and `sluice dlq replay <id>|--all`: inspect dead letters and send them
//! back to the topic they died on, as fresh messages (no failure history).

use std::process::ExitCode;

use sluice_core::Output;
use sluice_persister::queries::{self, DeadLetter};

use crate::app::App;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Dead letters not replayed yet, oldest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Re-publish dead letters to their original topic.
    Replay {
        /// The dead letter's id, as `dlq list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead letter not replayed yet.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(app: &App, command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { limit } => list(app, limit).await,
        DlqCommand::Replay { id: Some(id), .. } => {
            let Some(letter) = queries::dead_letter(&app.pool, id).await? else {
                println!("no dead letter {id}");
                return Ok(ExitCode::FAILURE);
            };
            replay(app, &[letter]).await
        }
        DlqCommand::Replay { id: None, .. } => {
            let letters = queries::dead_letters(&app.pool, i64::MAX).await?;
            replay(app, &letters).await
        }
    }
}

async fn list(app: &App, limit: i64) -> anyhow::Result<ExitCode> {
    let letters = queries::dead_letters(&app.pool, limit).await?;
    if letters.is_empty() {
        println!("no dead letters");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6}  {:<36}  {:<28} {:>8}  {:<16} REASON",
        "ID", "JOB", "TOPIC", "ATTEMPTS", "CLASS"
    );
    for l in letters {
        let job = l
            .job_id
            .map(|j| j.to_string())
            .unwrap_or_else(|| "-".into());
        let reason: String = l.reason.chars().take(100).collect();
        println!(
            "{:>6}  {:<36}  {:<28} {:>8}  {:<16} {}",
            l.id,
            job,
            l.original_topic.as_deref().unwrap_or("-"),
            l.attempts,
            l.error_class,
            reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(app: &App, letters: &[DeadLetter]) -> anyhow::Result<ExitCode> {
    let mut replayed = 0;
    for letter in letters {
        if letter.replayed_at.is_some() {
            println!("dead letter {} was already replayed", letter.id);
            continue;
        }
        let Some(topic) = &letter.original_topic else {
            println!(
                "dead letter {} has no original topic; left alone",
                letter.id
            );
            continue;
        };
        let output = Output {
            topic: topic.clone(),
            key: letter.message_key.clone(),
            payload: letter.payload.clone(),
            headers: None,
        };
        app.publisher.try_publish(&output).await?;
        queries::mark_replayed(&app.pool, letter).await?;
        replayed += 1;
    }
    println!("replayed {replayed} dead letter(s)");
    Ok(ExitCode::SUCCESS)
}
