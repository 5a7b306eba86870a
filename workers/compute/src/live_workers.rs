//! How many compute workers are running: the default split of a sum_squares job that names no
//! part count, as seed 002 splits across its live workers. Read from the broker (the members of
//! the compute consumer group), so a job published by any producer gets it, not only `sluice`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_core::config::KafkaConfig;
use sluice_core::{kafka, PipelineError};

/// A count this recent is reused: a burst of jobs asks the broker once.
const FRESH_FOR: Duration = Duration::from_secs(2);
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct LiveWorkers {
    client: Arc<BaseConsumer>,
    group: String,
    last: Mutex<Option<(Instant, u32)>>,
}

impl LiveWorkers {
    pub fn new(kafka: &KafkaConfig, group: String) -> Result<Self, PipelineError> {
        Ok(Self {
            client: Arc::new(kafka::client_config(kafka).create()?),
            group,
            last: Mutex::new(None),
        })
    }

    /// Members of the compute group, at least 1 (this worker is one); 1 when the broker cannot
    /// say, since a job split in one part is still answered correctly.
    pub async fn count(&self) -> u32 {
        if let Some((at, count)) = *self.last.lock().expect("live workers lock") {
            if at.elapsed() < FRESH_FOR {
                return count;
            }
        }
        let client = self.client.clone();
        let group = self.group.clone();
        // The client call blocks on the network.
        let asked = tokio::task::spawn_blocking(move || {
            client
                .fetch_group_list(Some(&group), ASK_TIMEOUT)
                .map(|list| {
                    list.groups()
                        .iter()
                        .map(|g| g.members().len())
                        .sum::<usize>()
                })
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let count = match asked {
            Ok(members) => u32::try_from(members).unwrap_or(u32::MAX).max(1),
            Err(error) => {
                tracing::warn!(%error, "cannot count the compute workers; splitting in 1 part");
                1
            }
        };
        *self.last.lock().expect("live workers lock") = Some((Instant::now(), count));
        count
    }
}
