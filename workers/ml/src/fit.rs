//! Every fit runs in a child process of its own (`sluice-ml fit`), so that a fit that crashes,
//! exhausts its memory limit or outlives its time limit fails alone: the worker's predictions,
//! heartbeats and other fits go on, and the job is answered with what happened.
//!
//! The child gets the training job's payload on standard input and nothing of the worker's
//! environment (no database URL, no credentials). It limits its own address space
//! (`RLIMIT_AS`) before reading anything, fits, and writes one line of JSON (the report, with
//! the fit's duration) followed by the model's artifact. A job the model refuses exits with
//! [`REFUSED_EXIT`] and the reason on standard output.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_messages::ml::{Metric, TrainRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::MlConfig;
use crate::learn::{self, Algorithm, Task, TrainSpec};

/// The argument that makes `sluice-ml` a fit's child process.
pub const FIT_COMMAND: &str = "fit";
/// Exit status of a child whose job the model refused (bad data, a wrong pairing).
const REFUSED_EXIT: i32 = 2;
/// Most bytes of a crashed child's standard error kept in the job's error.
const STDERR_SHOWN: usize = 400;
/// Most bytes of a child's standard error read at all (its last words come first).
const STDERR_KEPT: u64 = 64 * 1024;

/// What a fit reports about its model: the fields of `learn::Report` the registry and the
/// job's answer keep, as JSON between the two processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitReport {
    pub algorithm: String,
    pub task: String,
    pub rows: u64,
    pub features: serde_json::Value,
    pub params: serde_json::Value,
    pub metric: Metric,
    #[serde(default)]
    pub leaderboard: Option<serde_json::Value>,
    /// The fit's own time: preprocessing and the estimator (for `auto`, its cross-validation
    /// and refit), without parsing the data or measuring the training metric — what
    /// scikit-learn's `fit` times.
    pub fit_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    report: FitReport,
}

/// A fitted model, out of its child process.
#[derive(Debug)]
pub struct Fitted {
    pub report: FitReport,
    pub artifact: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The job cannot succeed: the model refused its data or parameters. The job fails.
    #[error("{0}")]
    Refused(String),
    /// The fit's process died (out of memory, killed, a bug): the job fails, nothing else does.
    #[error("{0}")]
    Crashed(String),
    /// The model's artifact grew past `ML_MAX_ARTIFACT_MB`; the fit was killed. The job fails.
    #[error("the model is larger than ML_MAX_ARTIFACT_MB ({} MiB)", .0 >> 20)]
    TooLarge(usize),
    /// The fit ran past `ML_TRAIN_TIME_LIMIT` and was killed. The job fails.
    #[error("training took longer than ML_TRAIN_TIME_LIMIT ({0:?}) and was stopped")]
    TooLong(Duration),
    /// No child could be started (out of processes, the binary gone): worth another attempt.
    #[error("cannot start a fit: {0}")]
    Spawn(std::io::Error),
}

/// Fits the training job `payload` (a [`TrainRequest`] as JSON) in a child process. Dropping
/// the future kills the child (a revoked partition, shutdown).
pub async fn fit(payload: &[u8], config: &MlConfig) -> Result<Fitted, FitError> {
    // The image this worker runs, even if its file was replaced since.
    let mut command = tokio::process::Command::new("/proc/self/exe");
    command
        .arg0("sluice-ml")
        .arg(FIT_COMMAND)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(limit) = config.train_memory_bytes {
        command.arg(limit.to_string());
    }
    let mut child = command.spawn().map_err(FitError::Spawn)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let input = payload.to_vec();
    // Written while the output is read: a child that dies early (its memory limit hit while
    // parsing) closes its end, and the write's error is moot beside its exit status.
    let feed = async move {
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    };
    // The artifact is read up to its limit and no further: past it the child is killed (on
    // drop) and the job fails, so a model of any size never lands in the worker.
    let artifact_limit = config.max_artifact_bytes;
    let read_stdout = async move {
        let mut out = Vec::new();
        let mut limited = stdout.take(artifact_limit as u64 + 1);
        limited.read_to_end(&mut out).await.map(|_| out)
    };
    let read_stderr = async move {
        let mut err = Vec::new();
        let _ = stderr.take(STDERR_KEPT).read_to_end(&mut err).await;
        err
    };
    let run = async {
        let ((), out, err) = tokio::join!(feed, read_stdout, read_stderr);
        let out = out.map_err(FitError::Spawn)?;
        if out.len() > artifact_limit {
            return Err(FitError::TooLarge(artifact_limit));
        }
        let status = child.wait().await.map_err(FitError::Spawn)?;
        Ok((status, out, err))
    };
    let (status, stdout, stderr) = match tokio::time::timeout(config.train_time_limit, run).await {
        Ok(output) => output?,
        Err(_) => return Err(FitError::TooLong(config.train_time_limit)),
    };
    match status.code() {
        Some(0) => parse_output(stdout),
        Some(REFUSED_EXIT) => Err(FitError::Refused(
            String::from_utf8_lossy(&stdout).trim().to_string(),
        )),
        _ => Err(FitError::Crashed(crash_reason(
            status,
            &stderr,
            config.train_memory_bytes,
        ))),
    }
}

fn parse_output(mut stdout: Vec<u8>) -> Result<Fitted, FitError> {
    let bad = |why: &str| FitError::Crashed(format!("the fit's output is unreadable: {why}"));
    let newline = stdout
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no report line"))?;
    let header: Header =
        serde_json::from_slice(&stdout[..newline]).map_err(|e| bad(&e.to_string()))?;
    // The artifact is what follows the line, taken without a copy.
    let artifact = stdout.split_off(newline + 1);
    Ok(Fitted {
        report: header.report,
        artifact,
    })
}

/// What a user reads about a fit's process that died.
fn crash_reason(
    status: std::process::ExitStatus,
    stderr: &[u8],
    memory_limit: Option<u64>,
) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let last_words: String = stderr.trim().chars().take(STDERR_SHOWN).collect();
    // Rust's allocator reports a refused allocation this way, then aborts.
    if stderr.contains("memory allocation of") {
        return match memory_limit {
            Some(limit) => format!(
                "training ran out of memory (ML_TRAIN_MEMORY_MB is {} MiB): {last_words}",
                limit / (1024 * 1024)
            ),
            None => format!("training ran out of memory: {last_words}"),
        };
    }
    match (status.signal(), status.code()) {
        (Some(9), _) => {
            "training was killed (SIGKILL): perhaps the system ran out of memory".to_string()
        }
        (Some(signal), _) => format!("training crashed (signal {signal}): {last_words}"),
        (None, Some(code)) => format!("training crashed (exit status {code}): {last_words}"),
        (None, None) => format!("training crashed: {last_words}"),
    }
}

/// The child's side: `sluice-ml fit [MEMORY_LIMIT_BYTES]`.
pub fn child_main(args: &[String]) -> ExitCode {
    // A fit outlives no worker: when the worker dies, so does the fit (its time limit was the
    // worker's to keep).
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches nothing else.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    close_inherited_files();
    if let Some(limit) = args.first() {
        let Ok(limit) = limit.parse::<u64>() else {
            eprintln!("sluice-ml fit: the memory limit must be a number of bytes, not {limit:?}");
            return ExitCode::FAILURE;
        };
        if let Err(e) = limit_address_space(limit) {
            eprintln!("sluice-ml fit: cannot limit memory: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut payload = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut payload) {
        eprintln!("sluice-ml fit: cannot read the job: {e}");
        return ExitCode::FAILURE;
    }
    let written = match fit_here(&payload) {
        Ok((header, artifact)) => write_out(&header, &artifact).map(|()| ExitCode::SUCCESS),
        Err(reason) => {
            let mut out = std::io::stdout().lock();
            out.write_all(reason.as_bytes())
                .and_then(|()| out.flush())
                .map(|()| ExitCode::from(REFUSED_EXIT as u8))
        }
    };
    written.unwrap_or_else(|e| {
        eprintln!("sluice-ml fit: cannot write the model: {e}");
        ExitCode::FAILURE
    })
}

/// A training job's payload, checked as far as it can be without fitting: its algorithm and
/// task are known. The error is the job's reason to fail.
pub fn parse_request(payload: &[u8]) -> Result<(TrainRequest, Algorithm, Option<Task>), String> {
    let request: TrainRequest =
        serde_json::from_slice(payload).map_err(|e| format!("invalid training job: {e}"))?;
    let algorithm = Algorithm::parse(&request.algorithm).ok_or_else(|| {
        let shown: String = request.algorithm.chars().take(40).collect();
        let known: Vec<&str> = Algorithm::ALL.iter().map(Algorithm::as_str).collect();
        format!("unknown algorithm {shown:?}; one of {}", known.join(", "))
    })?;
    let task = match request.task.as_deref() {
        None => None,
        Some("classification") => Some(Task::Classification),
        Some("regression") => Some(Task::Regression),
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            return Err(format!(
                "task {shown:?} is neither classification nor regression"
            ));
        }
    };
    Ok((request, algorithm, task))
}

/// Parses and fits the job; the error is the job's reason to fail.
fn fit_here(payload: &[u8]) -> Result<(Header, Vec<u8>), String> {
    let (request, algorithm, task) = parse_request(payload)?;
    let trained = learn::train(&TrainSpec {
        algorithm,
        task,
        params: &request.params,
        data: request.data.get(),
    })
    .map_err(|e| e.to_string())?;
    let artifact = trained.model.to_bytes().map_err(|e| e.to_string())?;
    // A model stored is one a worker can load: a value serialization cannot carry (a leaf
    // mean past f64's range is written null) fails the job now, not every prediction later.
    learn::Model::from_bytes(&artifact)
        .map_err(|e| format!("the fitted model cannot be stored: {e}"))?;
    let report = serde_json::to_value(&trained.report)
        .and_then(serde_json::from_value::<FitReport>)
        .map_err(|e| format!("the fit's report is incomplete: {e}"))?;
    Ok((Header { report }, artifact))
}

fn write_out(header: &Header, artifact: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, header)?;
    out.write_all(b"\n")?;
    out.write_all(artifact)?;
    out.flush()
}

/// Closes every descriptor but the standard three: the worker's sockets and the Kafka client's
/// pipes are nothing a fit should hold.
fn close_inherited_files() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor this single-threaded process does not use (the one the
        // listing itself held is already closed, and closing it again is harmless).
        unsafe { libc::close(fd) };
    }
}

fn limit_address_space(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct it is given and changes only this process's limits.
    let status = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
