//! A real OTLP/gRPC trace receiver: `tests/otlp_receiver.py` (opentelemetry-proto's generated
//! TraceService served by grpcio, in the venv scripts/setup makes), one process per
//! [`OtlpReceiver`], on a port the OS picks; the spans it receives are read back as JSON.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::tools;
use crate::util::{POLL, kill_and_wait, read_lossy, tail};

/// How long [`OtlpReceiver::start`] waits for the receiver to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
const LISTENING: &str = "listening ";

/// One span as the receiver wrote it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: Option<String>,
    /// Hex.
    pub trace_id: String,
    /// Hex.
    pub span_id: String,
    /// Hex; empty for a root span.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// OTLP's SpanKind (2: server, 1: internal).
    pub kind: i32,
    /// Unix nanoseconds.
    pub start_ns: u64,
    /// Unix nanoseconds.
    pub end_ns: u64,
    /// OTLP's status code (2: error).
    pub status: i32,
    /// The span's attributes.
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// A running receiver; dropping it kills the process.
pub struct OtlpReceiver {
    child: Child,
    port: u16,
    log_path: PathBuf,
    out: PathBuf,
    _dir: TempDir,
}

impl OtlpReceiver {
    /// Starts the receiver and waits until it listens. Panics, with its log, when Python or
    /// its packages are missing (run scripts/setup) or it does not listen in time.
    pub fn start() -> OtlpReceiver {
        let python = tools::python();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("otlp_receiver.py");
        let dir = tempfile::Builder::new()
            .prefix("pixmesh-otlp-")
            .tempdir()
            .expect("create a temporary directory");
        let log_path = dir.path().join("receiver.log");
        let out = dir.path().join("spans.jsonl");
        let log = std::fs::File::create(&log_path).expect("create receiver.log");
        let child = Command::new(&python)
            .arg(&script)
            .arg(&out)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let mut receiver = OtlpReceiver {
            child,
            port: 0,
            log_path,
            out,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = read_lossy(&receiver.log_path);
            if let Some(port) = log
                .lines()
                .find_map(|l| l.strip_prefix(LISTENING)?.trim().parse().ok())
            {
                receiver.port = port;
                return receiver;
            }
            if let Ok(Some(status)) = receiver.child.try_wait() {
                panic!(
                    "the OTLP receiver exited ({status}) (run scripts/setup for opentelemetry-proto \
                     and grpcio):\n{}",
                    tail(&log, 50)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the OTLP receiver did not listen within {START_TIMEOUT:?}:\n{}",
                tail(&log, 50)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Its OTLP/gRPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        read_lossy(&self.out)
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("span line {line:?}: {e}"))
            })
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- OTLP receiver log ---\n{}\n--- end ---",
                tail(&read_lossy(&self.log_path), 50)
            );
        }
        kill_and_wait(&mut self.child);
    }
}
