//! `sluice dlq list` and `sluice dlq replay <id>|--all`: inspect dead letters and send them
//! back to the job topic they died on, as fresh messages (no failure history): the key, the
//! payload and the message's own headers (a trace id, say), none of sluice's.
//!
//! Each message is replayed once, however many replays run at once: its letters are claimed
//! before it is published, marked replayed only once the broker acknowledged it, and given back
//! if the publish fails (a run that died half-way leaves a claim the next replay takes over,
//! [`dead_letters::REPLAY_LEASE`] later). A letter of a message replayed already is marked
//! replayed, not published again. Only job topics are replayed to: a letter from any other topic
//! is left alone.
//!
//! A letter that is not the message that died is refused, and stays listed: one cut to fit the
//! dead-letter topic (sent again, a part of a message could only fail again), or one that did
//! not keep the message's own headers. `replay <id>` of such a letter fails; `replay --all`
//! counts them and succeeds, so that a letter nobody can replay does not fail every run after.

use std::process::ExitCode;

use anyhow::Context;
use rdkafka::message::{Header, OwnedHeaders};
use sluice_core::Output;
use sluice_db::dead_letters::{self, Claim, DeadLetter};
use sqlx::types::Json;

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
        /// Every dead letter not replayed yet (of those there are when it starts).
        #[arg(long)]
        all: bool,
    },
}

/// Letters read at once by `replay --all`: it never holds more payloads than this.
const PAGE: i64 = 100;

pub async fn run(app: &App, command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { limit } => list(app, limit).await,
        DlqCommand::Replay { id: Some(id), .. } => {
            let Some(letter) = dead_letters::get(&app.pool, id).await? else {
                println!("no dead letter {id}");
                return Ok(ExitCode::FAILURE);
            };
            let mut replay = Replay::default();
            replay.one(app, &letter).await?;
            replay.report();
            // Replayed now, before, or by another run at this moment: all fine; left alone or
            // refused is not.
            Ok(if replay.left_alone == 0 && replay.refused.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DlqCommand::Replay { id: None, .. } => {
            let mut replay = Replay::default();
            // The letters there are now, not those dead since: a message that dies again at
            // once after its replay is replayed by the next run, not chased by this one.
            let newest = dead_letters::newest_id(&app.pool).await?.unwrap_or(0);
            let mut after = 0;
            loop {
                let page = dead_letters::unreplayed(&app.pool, after, newest, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                for letter in &page {
                    if let Err(e) = replay.one(app, letter).await {
                        replay.report();
                        return Err(e);
                    }
                }
            }
            replay.report();
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list(app: &App, limit: i64) -> anyhow::Result<ExitCode> {
    let letters = dead_letters::unreplayed(&app.pool, 0, i64::MAX, limit).await?;
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

/// What one replay run did.
#[derive(Default)]
struct Replay {
    replayed: usize,
    left_alone: usize,
    /// The letters that are not the message that died, which no replay will send.
    refused: Vec<i64>,
}

impl Replay {
    /// Replays `letter` unless it is replayed already (by another run, or as a copy), another
    /// run is replaying it, it was not a job, or it is not the message that died; says why it
    /// left one alone.
    async fn one(&mut self, app: &App, letter: &DeadLetter) -> anyhow::Result<()> {
        let id = letter.id;
        if letter.replayed_at.is_some() {
            println!("dead letter {id} was already replayed");
            return Ok(());
        }
        let Some(topic) = &letter.original_topic else {
            println!("dead letter {id} has no original topic; left alone");
            self.left_alone += 1;
            return Ok(());
        };
        // Producers publish work to the job topics alone; a letter from anywhere else (a
        // result, a retry tier, a forged header) is not for a replay to send.
        if !app.topics.job_inputs().contains(topic) {
            println!("dead letter {id} came from {topic}, not a job topic; left alone");
            self.left_alone += 1;
            return Ok(());
        }
        if let Some(size) = &letter.truncated_from {
            println!(
                "dead letter {id} was cut to fit the dead letters (a payload of {size} bytes, {} \
                 kept); refused: it is not the message that died",
                letter.payload.len()
            );
            self.refused.push(id);
            return Ok(());
        }
        let Some(Json(own)) = &letter.foreign_headers else {
            println!(
                "dead letter {id} did not keep the message's own headers (it died before sluice \
                 kept them exactly, with one that was not text); refused"
            );
            self.refused.push(id);
            return Ok(());
        };
        let headers = own
            .0
            .iter()
            .fold(OwnedHeaders::new(), |all, (name, value)| {
                all.insert(Header {
                    key: name,
                    value: value.as_deref(),
                })
            });
        // Made before the claim, so that failing to make it leaves nothing claimed.
        let publisher = app.publisher()?;
        let claim = match dead_letters::claim_replay(&app.pool, letter).await? {
            Claim::Claimed(claim) => claim,
            Claim::Replayed => return Ok(()),
            Claim::CopyOf { of, copies } => {
                for copy in copies {
                    println!("dead letter {copy} is a copy of {of}, already replayed");
                }
                return Ok(());
            }
            Claim::Busy => {
                println!("dead letter {id} is being replayed by another run");
                return Ok(());
            }
        };
        let output = Output {
            topic: topic.clone(),
            key: letter.message_key.clone(),
            payload: letter.payload.clone(),
            headers: Some(headers),
        };
        if let Err(e) = publisher.try_publish(&output).await {
            dead_letters::release(&app.pool, &claim)
                .await
                .with_context(|| format!("giving back dead letter {id} after a failed publish"))?;
            anyhow::bail!("publishing dead letter {id} to {topic} failed, left unreplayed: {e}");
        }
        let duplicates = dead_letters::finish_replay(&app.pool, letter, &claim)
            .await
            .with_context(|| {
                format!("dead letter {id} was published but is not marked replayed yet")
            })?;
        for duplicate in duplicates {
            println!("dead letter {duplicate} is the same message as {id}; marked replayed");
        }
        self.replayed += 1;
        Ok(())
    }

    fn report(&self) {
        println!("replayed {} dead letter(s)", self.replayed);
        if !self.refused.is_empty() {
            let ids: Vec<String> = self.refused.iter().map(i64::to_string).collect();
            println!(
                "refused {} dead letter(s): {}",
                self.refused.len(),
                ids.join(", ")
            );
        }
    }
}
