//! Kafka nodes of a test's own, started with `scripts/kafka-node` (its jars installed by
//! scripts/test): one broker to kill, restart or wipe under the pipeline, or a three-node
//! cluster to lose a partition leader in.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::helpers::eventually;

/// One KRaft node (broker and controller in one process) with storage of its own.
pub struct KafkaNode {
    id: u32,
    port: u16,
    controller_port: u16,
    dir: PathBuf,
    /// Options of `scripts/kafka-node` beyond the node's own ports and storage.
    options: Vec<String>,
    child: Option<Child>,
}

impl KafkaNode {
    /// The address clients bootstrap from.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-node");
        std::fs::create_dir_all(&self.dir).expect("broker directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kafka.log"))
            .expect("broker log");
        self.child = Some(
            Command::new(script)
                .arg("--dir")
                .arg(&self.dir)
                .args(["--port", &self.port.to_string()])
                .args(["--controller-port", &self.controller_port.to_string()])
                .args(["--node-id", &self.id.to_string()])
                .args(&self.options)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("broker log"))
                .stderr(log)
                .spawn()
                .expect("start scripts/kafka-node"),
        );
    }

    /// Waits until the node listens; panics at once, with its log, if it exited instead.
    async fn wait_listening(&mut self) {
        let address = self.address();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(&address).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().expect("try_wait"));
            if let Some(status) = exited {
                let log = std::fs::read_to_string(self.dir.join("kafka.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "Kafka node {} exited ({status}) before listening on {address}:\n{}",
                    self.id,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Kafka node {} does not listen on {address} after 120 s",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the node again on the same ports and storage, and waits until it listens.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_listening().await;
    }

    /// SIGKILL: the JVM gets no chance to flush or hand over anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the broker");
            child.wait().expect("reap the broker");
        }
    }

    /// Deletes the node's storage (it must be stopped): the next start formats a new, empty
    /// one, as when an operator throws `data/kafka` away.
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "wipe a stopped node only");
        std::fs::remove_dir_all(&self.dir).expect("remove the broker's storage");
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Nodes that form one cluster: every node is a voter of the controller quorum.
pub struct KafkaCluster {
    pub nodes: Vec<KafkaNode>,
}

impl KafkaCluster {
    /// Starts `size` nodes (1, or 3 and more for a replicated cluster: replication factor 3,
    /// `min.insync.replicas` 2) on free loopback ports and waits until every broker is in the
    /// cluster's metadata.
    pub async fn start(size: u32) -> Self {
        // Every port is held until all are chosen, so no two are the same.
        let listeners: Vec<TcpListener> = (0..size * 2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("port").port())
            .collect();
        drop(listeners);
        let voters = (0..size)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[2 * i as usize + 1]))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = cluster_id();
        let replicas = size.min(3).to_string();
        // A directory left by an aborted run on the same port would hold another cluster.
        for port in ports.iter().step_by(2) {
            let _ = std::fs::remove_dir_all(node_dir(*port));
        }
        let mut nodes: Vec<KafkaNode> = (0..size)
            .map(|i| KafkaNode {
                id: i + 1,
                port: ports[2 * i as usize],
                controller_port: ports[2 * i as usize + 1],
                dir: node_dir(ports[2 * i as usize]),
                options: [
                    "--voters",
                    &voters,
                    "--cluster-id",
                    &cluster_id,
                    "--replicas",
                    &replicas,
                    "--rebalance-delay-ms",
                    "300",
                    "--heap-mb",
                    "384",
                    // A dead broker is fenced (its partitions led elsewhere) after this long
                    // without a heartbeat; Kafka's 9 s would only slow the tests down.
                    "--set",
                    "broker.session.timeout.ms=3000",
                    "--set",
                    "broker.heartbeat.interval.ms=500",
                ]
                .map(String::from)
                .to_vec(),
                child: None,
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_listening().await;
        }
        let cluster = Self { nodes };
        cluster.wait_brokers(size as usize).await;
        cluster
    }

    /// The bootstrap list of every node.
    pub fn brokers(&self) -> String {
        self.nodes
            .iter()
            .map(KafkaNode::address)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until the cluster's metadata lists `count` brokers.
    pub async fn wait_brokers(&self, count: usize) {
        let client = self.metadata_client();
        eventually(
            Duration::from_secs(60),
            &format!("{count} brokers in the cluster's metadata"),
            || async {
                let metadata = client.fetch_metadata(None, Duration::from_secs(2)).ok()?;
                (metadata.brokers().len() >= count).then_some(())
            },
        )
        .await;
    }

    /// The id of the broker leading most partitions of `topic`.
    pub fn leader_of(&self, topic: &str) -> u32 {
        let metadata = self
            .metadata_client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("topic metadata");
        let mut led = std::collections::BTreeMap::<i32, usize>::new();
        for partition in metadata.topics()[0].partitions() {
            *led.entry(partition.leader()).or_default() += 1;
        }
        let (leader, _) = led
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .expect("a partition with a leader");
        u32::try_from(leader).expect("a live leader")
    }

    /// The node with id `id`.
    pub fn node(&mut self, id: u32) -> &mut KafkaNode {
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .expect("a node with that id")
    }

    fn metadata_client(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("metadata client")
    }
}

/// The storage directory of the node listening on `port`.
fn node_dir(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-kafka-{port}"))
}

/// A new cluster id: 16 random bytes in URL-safe base64 without padding, as Kafka makes them,
/// and as Kafka draws them never starting with '-' (StorageTool would take it for an option).
fn cluster_id() -> String {
    loop {
        let id = encode_cluster_id(uuid::Uuid::new_v4().as_u128());
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn encode_cluster_id(bits: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // 22 characters of 6 bits each cover the 128 bits (the last character carries 2).
    (0..22)
        .map(|i| {
            let shift = 128i32 - 6 * (i + 1);
            let index = if shift >= 0 {
                (bits >> shift) & 63
            } else {
                (bits << -shift) & 63
            };
            ALPHABET[index as usize] as char
        })
        .collect()
}
