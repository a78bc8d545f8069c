//! A real single-node Garage (S3-compatible server) for end-to-end tests.
//!
//! Each [`Garage`] has its own temporary directory, random ports and random credentials. It
//! starts with a default key (read, write and owner on bucket [`DEFAULT_BUCKET`], may create
//! buckets); more buckets and keys are made with the `garage` CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use tempfile::TempDir;

use crate::ports::free_ports;
use crate::s3::{self, display};
use crate::tools;
use crate::util::{POLL, kill_and_wait, random_hex, read_lossy, tail};

/// The S3 region Garage is configured with; clients must use exactly this.
pub const REGION: &str = "us-east-1";
/// The bucket created at start-up, with read/write/owner rights for the default key.
pub const DEFAULT_BUCKET: &str = "images";
/// How long [`Garage::start`] waits for S3 and the default bucket.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `garage` CLI command may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the Garage log printed to stderr when a test panics while Garage runs.
const LOG_TAIL_LINES: usize = 50;
/// Environment variables that would override our config file or CLI target.
const FOREIGN_ENV: [&str; 4] = [
    "GARAGE_CONFIG_FILE",
    "GARAGE_RPC_SECRET",
    "GARAGE_RPC_SECRET_FILE",
    "GARAGE_RPC_HOST",
];

/// A running single-node Garage. Dropping it kills the process and removes its data.
pub struct Garage {
    child: Child,
    binary: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    s3_port: u16,
    access_key: String,
    secret_key: String,
    client: Client,
    // Last field: removed after the process is killed in `drop`.
    dir: TempDir,
}

impl Garage {
    /// Starts Garage and waits until the S3 API serves the default bucket.
    ///
    /// Panics, with the log, if Garage exits early or is not ready within [`START_TIMEOUT`].
    pub async fn start() -> Garage {
        let binary = tools::garage();
        let dir = tempfile::Builder::new()
            .prefix("pixmesh-garage-")
            .tempdir()
            .expect("create a temporary directory");
        let [s3_port, rpc_port] = free_ports::<2>();
        let access_key = format!("GK{}", random_hex(12));
        let secret_key = random_hex(32);

        let config_path = dir.path().join("garage.toml");
        std::fs::write(&config_path, config_toml(dir.path(), s3_port, rpc_port))
            .expect("write garage.toml");
        let log_path = dir.path().join("garage.log");
        let log = std::fs::File::create(&log_path).expect("create garage.log");

        let mut command = Command::new(&binary);
        command
            .arg("-c")
            .arg(&config_path)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
            .env("GARAGE_DEFAULT_BUCKET", DEFAULT_BUCKET)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone file handle"))
            .stderr(log);
        for name in FOREIGN_ENV {
            command.env_remove(name);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Garage {}: {e}", binary.display()));

        let endpoint = format!("http://127.0.0.1:{s3_port}");
        // From here on, a panic drops `garage`, which kills the process.
        let mut garage = Garage {
            child,
            binary,
            config_path,
            log_path,
            s3_port,
            client: s3_client(&endpoint, &access_key, &secret_key),
            access_key,
            secret_key,
            dir,
        };
        garage.wait_ready().await;
        garage
    }

    async fn wait_ready(&mut self) {
        let probe = probe_client(&self.endpoint(), &self.access_key, &self.secret_key);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for Garage") {
                self.fail(&format!("exited with {status} during start-up"));
            }
            let last_error = match probe.head_bucket().bucket(DEFAULT_BUCKET).send().await {
                Ok(_) => return,
                Err(e) => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            };
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "bucket {DEFAULT_BUCKET:?} not usable within {START_TIMEOUT:?}; last error: {last_error}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Panics with `msg` and the log, after stopping the process.
    fn fail(&mut self, msg: &str) -> ! {
        kill_and_wait(&mut self.child);
        panic!("Garage: {msg}\n--- garage log ---\n{}", self.log())
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The S3 region ([`REGION`]).
    pub fn region(&self) -> &str {
        REGION
    }

    /// The default key's access key ID (`GK` + 24 hex digits).
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The default key's secret (64 hex digits).
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The bucket created at start-up ([`DEFAULT_BUCKET`]).
    pub fn default_bucket(&self) -> &str {
        DEFAULT_BUCKET
    }

    /// The path of `garage.toml`, for running the `garage` CLI by hand.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temporary directory holding the config, data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log (stdout and stderr).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Runs `garage -c garage.toml ARGS...` and returns its stdout. Panics if it fails or takes
    /// longer than [`CLI_TIMEOUT`].
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("-c")
            .arg(&self.config_path)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for name in FOREIGN_ENV {
            command.env_remove(name);
        }
        let shown = format!("garage {}", args.join(" "));
        let output = match tokio::time::timeout(CLI_TIMEOUT, command.output()).await {
            Ok(result) => result.unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}")),
            Err(_) => panic!("`{shown}` did not finish within {CLI_TIMEOUT:?}"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            panic!(
                "`{shown}` failed ({}):\n{stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        stdout
    }

    /// Creates bucket `name` and gives the default key read, write and owner rights on it.
    pub async fn create_bucket(&self, name: &str) {
        self.cli(&["bucket", "create", name]).await;
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            &self.access_key,
        ])
        .await;
    }

    /// Creates an access key called `name` without any bucket rights; returns
    /// `(access key ID, secret)`. Grant rights with [`Garage::allow`].
    pub async fn create_key(&self, name: &str) -> (String, String) {
        let access = format!("GK{}", random_hex(12));
        let secret = random_hex(32);
        self.cli(&["key", "import", "--yes", "-n", name, &access, &secret])
            .await;
        (access, secret)
    }

    /// Sets the read and write rights of key `key` (access key ID) on `bucket`: each right is
    /// granted when `true` and revoked when `false`.
    pub async fn allow(&self, bucket: &str, key: &str, read: bool, write: bool) {
        for (verb, wanted) in [("allow", true), ("deny", false)] {
            let flags: Vec<&str> = [("--read", read), ("--write", write)]
                .into_iter()
                .filter(|(_, value)| *value == wanted)
                .map(|(flag, _)| flag)
                .collect();
            if flags.is_empty() {
                continue;
            }
            let mut args = vec!["bucket", verb];
            args.extend(flags);
            args.extend([bucket, "--key", key]);
            self.cli(&args).await;
        }
    }

    /// The body of a sidecar `[storages.NAME]` table for `bucket` with the default key.
    pub fn storage_toml(&self, bucket: &str) -> String {
        format!(
            "type = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\nregion = \"{}\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            self.endpoint(),
            self.region(),
            self.access_key(),
            self.secret_key()
        )
    }

    /// An S3 client with the default key (path-style, [`REGION`], checksums only when required).
    pub fn s3_client(&self) -> Client {
        self.client.clone()
    }

    /// An S3 client for this Garage with another key, e.g. one from [`Garage::create_key`].
    pub fn s3_client_for(&self, access_key: &str, secret_key: &str) -> Client {
        s3_client(&self.endpoint(), access_key, secret_key)
    }

    /// Uploads `bytes` to `bucket`/`key` with the default key. Panics on error.
    pub async fn put(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) {
        s3::put(&self.client, bucket, key, bytes.into()).await;
    }

    /// Downloads `bucket`/`key` with the default key; `None` if there is no such key. Panics on
    /// any other error.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let output = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return None,
            Err(e) => panic!("get s3://{bucket}/{key}: {}", display(e)),
        };
        let body = output
            .body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("read body of s3://{bucket}/{key}: {e}"));
        Some(body.into_bytes().to_vec())
    }

    /// The keys in `bucket` that start with `prefix`, sorted. Panics on error.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        s3::list(&self.client, bucket, prefix).await
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        if running && std::thread::panicking() {
            eprintln!(
                "--- last {LOG_TAIL_LINES} lines of the Garage log ({}) ---\n{}\n--- end of Garage log ---",
                self.log_path.display(),
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
        kill_and_wait(&mut self.child);
    }
}

/// The `garage.toml` for a single node with its data in `dir`.
fn config_toml(dir: &Path, s3_port: u16, rpc_port: u16) -> String {
    let path = |name: &str| toml_string(&dir.join(name).to_string_lossy());
    format!(
        r#"metadata_dir = {meta}
data_dir = {data}
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"
"#,
        meta = path("meta"),
        data = path("data"),
        rpc_secret = random_hex(32),
    )
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn s3_client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    Client::from_conf(s3::config_builder(endpoint, REGION, access_key, secret_key).build())
}

/// A client that fails fast, for the readiness poll.
fn probe_client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    let config = s3::config_builder(endpoint, REGION, access_key, secret_key)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_timeout(Duration::from_secs(2))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use super::toml_string;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("/tmp/a b"), r#""/tmp/a b""#);
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
