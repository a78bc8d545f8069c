//! A real Envoy process for end-to-end tests.
//!
//! The configuration should bind every port (admin and listeners) to port 0: [`Envoy::start`]
//! learns the admin address from `--admin-address-path` and the listener ports from the admin
//! API, so parallel tests never collide.
//!
//! Envoy logs to stderr, which goes straight into `envoy.log`. (`--log-path` is not used: Envoy
//! buffers that file and flushes it only every 10 s, so a killed Envoy loses its last lines.)

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::util::{POLL, kill_and_wait, read_lossy, tail};
use crate::{http, tools};

/// How long [`Envoy::start`] waits for Envoy to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`validate`] waits for `envoy --mode validate`.
pub const VALIDATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of `envoy.log` printed to stderr when a test panics while Envoy runs.
const LOG_TAIL_LINES: usize = 200;

/// A running Envoy. Dropping it kills the process and removes its temporary directory; if the
/// thread is panicking, the end of `envoy.log` is printed to stderr first.
pub struct Envoy {
    child: Child,
    admin_url: String,
    listeners: Vec<(String, u16)>,
    log_path: PathBuf,
    stdout_path: PathBuf,
    // Last field: removed after the process is killed in `drop`.
    dir: TempDir,
}

impl Envoy {
    /// Starts Envoy with `config_yaml` (bootstrap YAML) and waits until it is ready.
    ///
    /// Panics, with the log, if Envoy exits early or is not ready within [`START_TIMEOUT`].
    pub async fn start(config_yaml: &str) -> Envoy {
        Self::start_with_args(config_yaml, &[]).await
    }

    /// Like [`Envoy::start`], with extra command-line arguments (e.g. `["--concurrency", "1"]`
    /// or `["--component-log-level", "wasm:debug"]`).
    pub async fn start_with_args(config_yaml: &str, extra_args: &[&str]) -> Envoy {
        Self::start_with_env(config_yaml, extra_args, &[]).await
    }

    /// Like [`Envoy::start_with_args`], with these environment variables set for Envoy (what a
    /// pod gives it; the filter reads them through `vm_config.environment_variables`).
    pub async fn start_with_env(
        config_yaml: &str,
        extra_args: &[&str],
        env: &[(String, String)],
    ) -> Envoy {
        let binary = tools::envoy();
        let dir = tempdir("pixmesh-envoy-");
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, config_yaml).expect("write envoy.yaml");
        let admin_path = dir.path().join("admin.txt");
        let log_path = dir.path().join("envoy.log");
        let stdout_path = dir.path().join("stdout.log");

        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .arg("--use-dynamic-base-id")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["-l", "info"])
            .args(extra_args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(create(&stdout_path))
            .stderr(create(&log_path))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Envoy {}: {e}", binary.display()));
        // From here on, a panic drops `envoy`, which kills the process.
        let mut envoy = Envoy {
            child,
            admin_url: String::new(),
            listeners: Vec::new(),
            log_path,
            stdout_path,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;

        // The admin address file is re-read on every attempt, so a half-written file only costs
        // one retry.
        let admin = envoy
            .poll(deadline, "answer 200 LIVE on admin /ready", || {
                let admin = std::fs::read_to_string(&admin_path).unwrap_or_default();
                async move {
                    let admin = admin.trim().to_owned();
                    if admin.is_empty() {
                        return None;
                    }
                    let url = format!("http://{admin}/ready");
                    let ready = blocking(move || http::probe(&url, Duration::from_secs(2))).await;
                    ready
                        .ok()
                        .filter(|r| r.status == 200 && r.text().trim() == "LIVE")
                        .map(|_| admin)
                }
            })
            .await;
        envoy.admin_url = format!("http://{admin}");

        let listeners_url = format!("{}/listeners?format=json", envoy.admin_url);
        let response = blocking(move || http::probe(&listeners_url, Duration::from_secs(5))).await;
        let response = match response {
            Ok(r) if r.status == 200 => r,
            other => envoy.fail(&format!("GET /listeners failed: {other:?}")),
        };
        envoy.listeners = match parse_listeners(&response.body) {
            Ok(listeners) => listeners,
            Err(e) => envoy.fail(&format!(
                "bad /listeners response: {e}: {}",
                response.text()
            )),
        };
        envoy
    }

    /// `http://127.0.0.1:PORT` of the first listener.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The port of the first listener.
    pub fn port(&self) -> u16 {
        match self.listeners.first() {
            Some((_, port)) => *port,
            None => panic!("Envoy has no listener"),
        }
    }

    /// The port of the listener called `name` in the config.
    pub fn listener_port(&self, name: &str) -> Option<u16> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, port)| *port)
    }

    /// `http://ADDRESS:PORT` of the admin interface.
    pub fn admin_url(&self) -> String {
        self.admin_url.clone()
    }

    /// The content of `envoy.log` (Envoy's stderr), followed by anything Envoy wrote to stdout.
    pub fn log(&self) -> String {
        let mut log = read_lossy(&self.log_path);
        let stdout = read_lossy(&self.stdout_path);
        if !stdout.trim().is_empty() {
            log.push_str("\n--- stdout ---\n");
            log.push_str(&stdout);
        }
        log
    }

    /// The temporary directory holding the config and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Panics with `msg` and the log. The process is killed when `self` is dropped.
    fn fail(&mut self, msg: &str) -> ! {
        // Stop the process first so the log is complete and `drop` does not print it again.
        kill_and_wait(&mut self.child);
        panic!("Envoy: {msg}\n--- envoy log ---\n{}", self.log())
    }

    /// Polls `check` until it returns `Some`; fails if Envoy exits or the deadline passes.
    async fn poll<T, F: Future<Output = Option<T>>>(
        &mut self,
        deadline: Instant,
        what: &str,
        mut check: impl FnMut() -> F,
    ) -> T {
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for Envoy") {
                self.fail(&format!("exited with {status} before it could {what}"));
            }
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("did not {what} within {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        if running && std::thread::panicking() {
            eprintln!(
                "--- last {LOG_TAIL_LINES} lines of envoy.log ({}) ---\n{}\n--- end of envoy.log ---",
                self.log_path.display(),
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
        kill_and_wait(&mut self.child);
    }
}

/// Checks `config_yaml` with `envoy --mode validate`; on failure returns Envoy's output.
pub fn validate(config_yaml: &str) -> Result<(), String> {
    validate_with_env(config_yaml, &[])
}

/// [`validate`] with these environment variables set for Envoy (what a pod gives it).
pub fn validate_with_env(config_yaml: &str, env: &[(&str, &str)]) -> Result<(), String> {
    let binary = tools::envoy();
    let dir = tempdir("pixmesh-envoy-validate-");
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, config_yaml).expect("write envoy.yaml");
    let output_path = dir.path().join("output.log");
    let output = create(&output_path);
    let mut child = Command::new(&binary)
        .args(["--mode", "validate", "-c"])
        .arg(&config)
        .arg("--use-dynamic-base-id")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("clone file handle"))
        .stderr(output)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start Envoy {}: {e}", binary.display()));
    let deadline = Instant::now() + VALIDATE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for envoy --mode validate") {
            break status;
        }
        if Instant::now() >= deadline {
            kill_and_wait(&mut child);
            return Err(format!(
                "envoy --mode validate did not finish within {VALIDATE_TIMEOUT:?}\n{}",
                read_lossy(&output_path)
            ));
        }
        std::thread::sleep(POLL);
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "envoy --mode validate failed ({status}):\n{}",
            read_lossy(&output_path)
        ))
    }
}

/// Parses the listener names and ports from the admin `/listeners?format=json` body.
fn parse_listeners(body: &[u8]) -> Result<Vec<(String, u16)>, String> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let statuses = json["listener_statuses"]
        .as_array()
        .ok_or("no listener_statuses array")?;
    statuses
        .iter()
        .map(|status| {
            let name = status["name"].as_str().unwrap_or_default().to_owned();
            let port = status["local_address"]["socket_address"]["port_value"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("listener {name:?} has no socket port"))?;
            Ok((name, port))
        })
        .collect()
}

fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory")
}

fn create(path: &Path) -> File {
    File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

/// Runs a blocking closure on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

#[cfg(test)]
mod tests {
    use super::parse_listeners;

    #[test]
    fn parses_listener_ports() {
        let body = br#"{"listener_statuses":[
            {"name":"http","local_address":{"socket_address":{"address":"127.0.0.1","port_value":34567}}},
            {"name":"other","local_address":{"socket_address":{"address":"127.0.0.1","port_value":34568}}}
        ]}"#;
        assert_eq!(
            parse_listeners(body).unwrap(),
            vec![("http".to_owned(), 34567), ("other".to_owned(), 34568)]
        );
        assert_eq!(
            parse_listeners(br#"{"listener_statuses":[]}"#).unwrap(),
            vec![]
        );
        assert!(parse_listeners(b"{}").is_err());
    }
}
