//! A moto S3 server (`moto_server`) for the tests Garage cannot serve: moto keeps object
//! versions, storage classes, ACLs and tags and reads them back; Garage accepts and ignores them.
//!
//! Each [`Moto`] is its own process with its own in-memory state, on a port the OS picks (moto is
//! started on port 0 and the port is read from its start-up line). moto does not check
//! signatures; the harness still signs with fixed credentials in region [`REGION`], like a real
//! client.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use tempfile::TempDir;

use crate::s3::{self, display};
use crate::tools;
use crate::util::{POLL, kill_and_wait, read_lossy, tail};

/// The region moto serves by default; clients sign for it.
pub const REGION: &str = "us-east-1";
/// The access key ID every client of a [`Moto`] uses (moto accepts any).
pub const ACCESS_KEY: &str = "AKIAPIXMESHMOTOTEST";
/// The secret key every client of a [`Moto`] uses.
pub const SECRET_KEY: &str = "pixmesh-moto-test-secret";
/// How long [`Moto::start`] waits for the server to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the moto log printed to stderr when a test panics while moto runs.
const LOG_TAIL_LINES: usize = 50;
/// What moto (werkzeug) prints once it listens, followed by the port.
const LISTENING: &str = "Running on http://127.0.0.1:";

/// A running moto S3 server. Dropping it kills the process and forgets every bucket.
pub struct Moto {
    child: Child,
    log_path: PathBuf,
    port: u16,
    client: Client,
    // Last field: removed after the process is killed in `drop`.
    _dir: TempDir,
}

impl Moto {
    /// Starts `moto_server` on 127.0.0.1 and waits until its S3 API answers.
    ///
    /// Panics, with the log, if moto is missing (run scripts/setup), exits early or does not
    /// answer within [`START_TIMEOUT`].
    pub async fn start() -> Moto {
        let binary = tools::moto();
        let dir = tempfile::Builder::new()
            .prefix("pixmesh-moto-")
            .tempdir()
            .expect("create a temporary directory");
        let log_path = dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path).expect("create moto.log");
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .env("NO_COLOR", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto {}: {e}", binary.display()));
        // From here on, a panic drops `moto`, which kills the process.
        let mut moto = Moto {
            child,
            log_path,
            port: 0,
            client: s3_client("http://127.0.0.1:0"),
            _dir: dir,
        };
        moto.wait_ready().await;
        moto
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = "no start-up line yet".to_owned();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for moto") {
                self.fail(&format!("exited with {status} during start-up"));
            }
            if self.port == 0
                && let Some(port) = listening_port(&self.log())
            {
                self.port = port;
                self.client = s3_client(&self.endpoint());
            }
            if self.port != 0 {
                match self.client.list_buckets().send().await {
                    Ok(_) => return,
                    Err(e) => last_error = display(e),
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "not answering within {START_TIMEOUT:?}; last error: {last_error}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Panics with `msg` and the log, after stopping the process.
    fn fail(&mut self, msg: &str) -> ! {
        kill_and_wait(&mut self.child);
        panic!("moto: {msg}\n--- moto log ---\n{}", self.log())
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server log (stdout and stderr: one line per request).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// A `[storages.NAME]` section of the sidecar config for `bucket` here, plus `extra` lines.
    pub fn storage_toml(&self, name: &str, bucket: &str, extra: &str) -> String {
        format!(
            "[storages.{name}]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\n\
             region = \"{REGION}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
             secret_access_key = \"{SECRET_KEY}\"\n{extra}\n",
            self.endpoint()
        )
    }

    /// An S3 client (path-style, [`REGION`], checksums only when required).
    pub fn s3_client(&self) -> Client {
        self.client.clone()
    }

    /// Creates bucket `name`. Panics on error.
    pub async fn create_bucket(&self, name: &str) {
        self.client
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {}", display(e)));
    }

    /// Creates bucket `name` with versioning enabled. Panics on error.
    pub async fn create_versioned_bucket(&self, name: &str) {
        self.create_bucket(name).await;
        self.client
            .put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("enable versioning on {name}: {}", display(e)));
    }

    /// Uploads `bytes` to `bucket`/`key`; returns the new version's ID (`None` in a bucket
    /// without versioning). Panics on error.
    pub async fn put(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) -> Option<String> {
        let out = s3::put(&self.client, bucket, key, bytes.into()).await;
        out.version_id().map(str::to_owned)
    }

    /// The keys in `bucket` that start with `prefix`, sorted. Panics on error.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        s3::list(&self.client, bucket, prefix).await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        if running && std::thread::panicking() {
            eprintln!(
                "--- last {LOG_TAIL_LINES} lines of the moto log ({}) ---\n{}\n--- end of moto log ---",
                self.log_path.display(),
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
        kill_and_wait(&mut self.child);
    }
}

/// The port in moto's `Running on http://127.0.0.1:PORT` line, once the whole line is in `log`.
fn listening_port(log: &str) -> Option<u16> {
    let rest = &log[log.find(LISTENING)? + LISTENING.len()..];
    let (port, _) = rest.split_once('\n')?;
    port.trim_end().parse().ok().filter(|&p| p != 0)
}

fn s3_client(endpoint: &str) -> Client {
    Client::from_conf(s3::config_builder(endpoint, REGION, ACCESS_KEY, SECRET_KEY).build())
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn the_port_is_read_from_the_start_up_line() {
        let log = "WARNING: This is a development server.\n * Running on http://127.0.0.1:46435\n";
        assert_eq!(listening_port(log), Some(46435));
        assert_eq!(
            listening_port(" * Running on http://127.0.0.1:4"),
            None,
            "a line still being written"
        );
        assert_eq!(listening_port("starting"), None);
    }
}
