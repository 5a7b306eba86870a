//! Every topic and consumer-group name, under one prefix, so that several pipelines (or tests)
//! share a broker.

use std::time::Duration;

/// How long `kv.updates` keeps an update: 30 days.
pub const KV_UPDATES_RETENTION_MS: &str = "2592000000";

/// The names of sluice's topics.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
    /// Retry topics, in ascending delay order, with their delay.
    pub retry_tiers: Vec<(String, Duration)>,
}

impl Topics {
    /// `tiers` are the retry delays with their labels, e.g. `("5s", 5 s)` → `<prefix>.retry.5s`.
    pub fn new(prefix: &str, tiers: &[(String, Duration)]) -> Self {
        let retry_tiers = tiers
            .iter()
            .map(|(label, delay)| (format!("{prefix}.retry.{label}"), *delay))
            .collect();
        Self {
            prefix: prefix.to_string(),
            retry_tiers,
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Compute jobs (add, sub, mul, div, sum_squares), from any producer.
    pub fn compute_jobs(&self) -> String {
        self.name("compute.jobs")
    }

    /// The ranges of split sum_squares jobs, which any compute worker takes like a job. Only
    /// the compute workers write here: a range accepted from the public jobs topic would let
    /// any producer write another job's answer.
    pub fn compute_parts(&self) -> String {
        self.name("compute.parts")
    }

    /// Finished jobs and finished sum_squares ranges, for the persister, which assembles split
    /// jobs.
    pub fn results(&self) -> String {
        self.name("results")
    }

    pub fn dead_letters(&self) -> String {
        self.name("dead-letters")
    }

    pub fn heartbeats(&self) -> String {
        self.name("heartbeats")
    }

    /// Where the retry service sends a stage's retried messages back once they are due. Only
    /// sluice writes here, so the stage trusts the retry headers it finds on this topic alone.
    pub fn returns(&self, role: &str) -> String {
        self.name(&format!("returns.{role}"))
    }

    /// Whether `topic` is some stage's returns topic: the only place the retry service sends to.
    pub fn is_returns(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&self.name("returns."))
            .is_some_and(|role| {
                !role.is_empty()
                    && role
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    }

    /// Updates of the key-value store, keyed by the KV key. Commands, so never compacted:
    /// every update is kept [`KV_UPDATES_RETENTION_MS`].
    pub fn kv_updates(&self) -> String {
        self.name("kv.updates")
    }

    /// Every change the KV applier made, keyed by the KV key; compacted. Followed by
    /// `sluice kv watch`, replayed by `sluice kv rebuild`.
    pub fn kv_state(&self) -> String {
        self.name("kv.state")
    }

    /// Questions for the LLM workers, keyed by question id; the scoring stage publishes a
    /// question here again when its answer scored too low.
    pub fn qa_questions(&self) -> String {
        self.name("qa.questions")
    }

    /// The LLM workers' answers, for the scoring stage.
    pub fn qa_answers(&self) -> String {
        self.name("qa.answers")
    }

    /// Training jobs for the ML workers, keyed by job id.
    pub fn ml_train(&self) -> String {
        self.name("ml.train")
    }

    /// Prediction requests for the ML workers, keyed by job id.
    pub fn ml_predict(&self) -> String {
        self.name("ml.predict")
    }

    /// The topics producers publish work to, and so the only ones a dead letter may be replayed
    /// to.
    pub fn job_inputs(&self) -> Vec<String> {
        vec![
            self.compute_jobs(),
            self.kv_updates(),
            self.qa_questions(),
            self.ml_train(),
            self.ml_predict(),
        ]
    }

    /// The settings `topic` is created with beyond the broker's defaults. The KV updates are
    /// commands, which compaction would lose (an update that a later one of the same key
    /// replaced before the applier read it): they are kept 30 days, so an applier that was
    /// down for less than that misses none. The KV state topic keeps the newest change of each
    /// key, which is all a rebuild needs.
    pub fn settings(&self, topic: &str) -> Vec<(&'static str, &'static str)> {
        if topic == self.kv_updates() {
            vec![
                ("cleanup.policy", "delete"),
                ("retention.ms", KV_UPDATES_RETENTION_MS),
            ]
        } else {
            self.required_settings(topic)
        }
    }

    /// The settings `topic` must have whatever it was created with, checked at every start:
    /// how the broker cleans it up (only the KV state topic is compacted; every other topic
    /// holds messages each of which counts), and for heartbeats the broker's clock as their
    /// time (a sender's clock may be off: one heartbeat from the future would hide every real
    /// one after it, and a worker whose clock is behind would never be live).
    pub fn required_settings(&self, topic: &str) -> Vec<(&'static str, &'static str)> {
        let policy = if topic == self.kv_state() {
            "compact"
        } else {
            "delete"
        };
        let mut required = vec![("cleanup.policy", policy)];
        if topic == self.heartbeats() {
            required.push(("message.timestamp.type", "LogAppendTime"));
        }
        required
    }

    /// The consumer group of a service, under the same prefix as the topics.
    pub fn group(&self, role: &str) -> String {
        self.name(&format!("group.{role}"))
    }

    /// The consumer group in which a service reads the topics nobody waits on, with a long
    /// fetch wait.
    pub fn slow_group(&self, role: &str) -> String {
        self.name(&format!("group.{role}.slow"))
    }

    /// Every topic the services share (each stage creates its own returns topic).
    pub fn all(&self) -> Vec<String> {
        let mut all = self.job_inputs();
        all.extend([
            self.compute_parts(),
            self.results(),
            self.dead_letters(),
            self.heartbeats(),
            self.kv_state(),
            self.qa_answers(),
        ]);
        all.extend(self.retry_tiers.iter().map(|(name, _)| name.clone()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_topics_are_recognised_by_name() {
        let topics = Topics::new("p", &[("1s".into(), Duration::from_secs(1))]);
        assert_eq!(topics.returns("compute"), "p.returns.compute");
        assert!(topics.is_returns("p.returns.compute"));
        assert!(!topics.is_returns("p.returns."));
        assert!(!topics.is_returns("p.compute.jobs"));
        assert!(!topics.is_returns("q.returns.compute"));
        assert!(!topics.is_returns("p.returns.a.b"));
        assert_eq!(topics.retry_tiers[0].0, "p.retry.1s");
    }
}
