//! Running an ingest job in a separate, limited process.
//!
//! The worker is this same program (`sluice ingest-worker`) with an address
//! space and CPU-time limit (`setrlimit`) and a wall-clock deadline, and it
//! dies with its parent. A hostile file can make it panic, abort or run out
//! of memory; the server sees only a worker that failed, answers 422 and
//! keeps serving.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Failure, Job, Reply, Summary};
use crate::config::IngestSettings;

/// The subcommand the worker runs as.
pub const WORKER_COMMAND: &str = "ingest-worker";

/// Largest answer read from a worker. Its messages are cut to
/// [`crate::util::echo::MAX_DETAIL_BYTES`] and a summary names at most
/// `ingest.max_columns` columns, so an honest answer is far smaller.
const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// How much of the worker's stderr is kept for the log.
const STDERR_TAIL_BYTES: usize = 4096;

/// Reads up to `max + 1` bytes: more than `max` means "too long" and the
/// rest is left unread (the worker is then killed).
async fn read_bounded(
    pipe: &mut (impl tokio::io::AsyncRead + Unpin),
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    AsyncReadExt::take(pipe, max as u64 + 1)
        .read_to_end(&mut out)
        .await?;
    Ok(out)
}

/// Reads a pipe to its end, keeping only the last `keep` bytes.
async fn read_tail(
    pipe: &mut (impl tokio::io::AsyncRead + Unpin),
    keep: usize,
) -> std::io::Result<Vec<u8>> {
    let mut tail = Vec::with_capacity(keep * 2);
    let mut buffer = vec![0u8; 8192];
    loop {
        let n = pipe.read(&mut buffer).await?;
        if n == 0 {
            return Ok(tail);
        }
        tail.extend_from_slice(&buffer[..n]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
}

/// Runs `job` in a worker process and returns its answer.
pub async fn run(job: &Job, settings: &IngestSettings) -> Result<Summary, Failure> {
    let program = match &settings.worker {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| Failure::Internal(format!("finding the worker program: {e}")))?,
    };
    let mut command = tokio::process::Command::new(program);
    command
        .arg(WORKER_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A client that leaves (or a server that stops) ends the work.
        .kill_on_drop(true);
    limit(
        &mut command,
        settings.worker_memory_bytes,
        settings.worker_cpu_secs,
    );
    let mut child = command
        .spawn()
        .map_err(|e| Failure::Internal(format!("starting the ingest worker: {e}")))?;
    let request = serde_json::to_vec(job).map_err(|e| Failure::Internal(e.to_string()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Failure::Internal("the worker has no stdin".into()))?;
    // A worker that dies at once (a limit) closes the pipe: that shows in
    // its exit status below, not here.
    if let Err(e) = stdin.write_all(&request).await {
        tracing::debug!(error = %e, "the ingest worker did not read its job");
    }
    drop(stdin);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let work = async {
        // Both pipes at once: a worker blocked on a full stderr never
        // closes its stdout. Each is read with a bound: the worker's
        // answer is small, and what it logs is kept only as a tail.
        let read_out = async {
            let out = match stdout.as_mut() {
                Some(s) => read_bounded(s, MAX_REPLY_BYTES).await?,
                None => Vec::new(),
            };
            if out.len() > MAX_REPLY_BYTES {
                // Not an answer this program gives. Stop the worker now: it
                // may be blocked writing the rest, holding stderr open.
                let _ = child.start_kill();
            }
            Ok::<_, std::io::Error>(out)
        };
        let read_err = async {
            match stderr.as_mut() {
                Some(s) => read_tail(s, STDERR_TAIL_BYTES).await,
                None => Ok(Vec::new()),
            }
        };
        let (out, err) = tokio::join!(read_out, read_err);
        let (out, err) = (out?, err?);
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err))
    };
    let deadline = Duration::from_secs(settings.worker_cpu_secs.max(1) * 2);
    let (status, out, err) = match tokio::time::timeout(deadline, work).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(Failure::Internal(format!("talking to the worker: {e}"))),
        Err(_) => {
            return Err(Failure::Invalid(format!(
                "decoding the upload took longer than {} s",
                deadline.as_secs()
            )));
        }
    };
    match serde_json::from_slice::<Reply>(&out) {
        Ok(Reply::Done(summary)) if status.success() => Ok(summary),
        // Bounded again here: the worker is a separate program.
        Ok(Reply::Refused(failure)) => Err(failure.bounded()),
        _ => {
            // Killed by a limit, aborted, or panicked: the file made the
            // decoder fail. Say so without guessing further.
            tracing::warn!(
                ?status,
                stderr = %String::from_utf8_lossy(&err),
                "ingest worker failed"
            );
            Err(Failure::Invalid(
                "the file could not be decoded: the decoder failed or exceeded its memory or time limits on it".into(),
            ))
        }
    }
}

/// Worker side: reads the job from stdin, writes the reply to stdout. A
/// panic becomes a refusal; an abort ends the process (the parent sees it).
pub fn serve_one() -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut request = Vec::new();
    std::io::stdin().read_to_end(&mut request)?;
    let reply = match serde_json::from_slice::<Job>(&request) {
        Ok(job) => match std::panic::catch_unwind(|| super::run(&job)) {
            Ok(Ok(summary)) => Reply::Done(summary),
            Ok(Err(failure)) => Reply::Refused(failure.bounded()),
            Err(_) => Reply::Refused(Failure::Invalid(
                "the file could not be decoded: the decoder failed on it".into(),
            )),
        },
        Err(e) => Reply::Refused(Failure::Internal(format!("bad job: {e}"))),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &reply)?;
    out.flush()
}

#[cfg(unix)]
fn limit(command: &mut tokio::process::Command, memory: u64, cpu_secs: u64) {
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (setrlimit, prctl).
    unsafe {
        command.pre_exec(move || {
            let set = |resource, value: u64| {
                let limit = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            set(libc::RLIMIT_AS, memory)?;
            set(libc::RLIMIT_CPU, cpu_secs.max(1))?;
            set(libc::RLIMIT_CORE, 0)?;
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn limit(_: &mut tokio::process::Command, _: u64, _: u64) {}
