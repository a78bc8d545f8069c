//! The whole pixmesh stack, for the e2e tests and the demo: the sidecar (in this process, on an
//! ephemeral port) and a real Envoy running the real wasm filter, configured as
//! `pixmesh-sidecar envoy bootstrap` configures it ([`pixmesh_sidecar::envoy_config`]).

use std::net::SocketAddr;

use pixmesh_sidecar::envoy_config::{self, Bootstrap, Endpoint, InlineSecrets};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::envoy::Envoy;
use crate::http::Response;
use crate::{http, tools};

/// `filter_config` (JSON) keyed with this process's [`crate::vouch::render_key`], unless it
/// has a key, and in call mode when `call_mode`.
fn with_render_key(filter_config: &str, call_mode: bool) -> String {
    let mut json: serde_json::Value = serde_json::from_str(filter_config)
        .unwrap_or_else(|e| panic!("filter config: {e}\n{filter_config}"));
    if let Some(cfg) = json.as_object_mut() {
        cfg.entry("render_key")
            .or_insert_with(|| crate::vouch::render_key().into());
        if call_mode {
            cfg.entry("call")
                .or_insert_with(|| serde_json::json!({ "cluster": SIDECAR_CLUSTER }));
        }
    }
    json.to_string()
}

/// The sidecar, serving in this process until dropped.
pub struct Sidecar {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Sidecar {
    /// Starts the sidecar with `config_toml` (its `listen` is ignored: 127.0.0.1:0 is used),
    /// keyed with this process's [`crate::vouch::render_key`] unless the config has a key.
    pub async fn start(config_toml: &str) -> Sidecar {
        let mut config = pixmesh_sidecar::config::Config::from_toml(config_toml)
            .unwrap_or_else(|e| panic!("sidecar config: {e}\n{config_toml}"));
        config
            .render_key
            .get_or_insert_with(|| crate::vouch::render_key().into());
        Self::start_with(config, "127.0.0.1:0").await
    }

    /// Starts the sidecar with a parsed config on `addr`.
    pub async fn start_with(config: pixmesh_sidecar::config::Config, addr: &str) -> Sidecar {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind sidecar on {addr}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = pixmesh_sidecar::serving::serve(&config, listener, shutdown).await {
                panic!("sidecar stopped: {e}");
            }
        });
        Sidecar {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it and waits until it stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// Envoy + filter + sidecar.
pub struct Stack {
    /// The running Envoy.
    pub envoy: Envoy,
    /// The in-process sidecar; `None` with [`StackBuilder::external_sidecar`].
    pub sidecar: Option<Sidecar>,
}

/// Builds a [`Stack`].
#[derive(Debug, Clone)]
pub struct StackBuilder {
    filter_config: String,
    sidecar_config: String,
    listen_port: u16,
    sidecar_port: Option<u16>,
    route_timeout: String,
    envoy_workers: usize,
    call_mode: bool,
    envoy_env: Vec<(String, String)>,
}

/// The cluster of the sidecar in the Envoy template.
pub const SIDECAR_CLUSTER: &str = envoy_config::DEFAULT_CLUSTER;

impl Stack {
    /// A stack whose filter uses `filter_config` (JSON) and whose sidecar uses `sidecar_config`
    /// (TOML).
    pub fn builder(filter_config: &str, sidecar_config: &str) -> StackBuilder {
        StackBuilder {
            filter_config: filter_config.to_owned(),
            sidecar_config: sidecar_config.to_owned(),
            listen_port: 0,
            sidecar_port: None,
            route_timeout: "30s".to_owned(),
            envoy_workers: 1,
            call_mode: false,
            envoy_env: Vec::new(),
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.envoy.base_url())
    }

    /// GET through Envoy without blocking the runtime the sidecar runs on.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let url = self.url(path);
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            http::get(&url, &h)
        })
        .await
        .expect("GET task")
    }

    /// HEAD through Envoy.
    pub async fn head(&self, path: &str) -> Response {
        let url = self.url(path);
        tokio::task::spawn_blocking(move || http::head(&url, &[]))
            .await
            .expect("HEAD task")
    }

    /// GET that may fail at the transport level (reset, truncated body).
    pub async fn try_get(&self, path: &str) -> Result<Response, http::Error> {
        let url = self.url(path);
        tokio::task::spawn_blocking(move || http::try_get(&url, &[]))
            .await
            .expect("GET task")
    }
}

impl StackBuilder {
    /// Listen on this port instead of an ephemeral one (the demo).
    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }

    /// Point Envoy at an already running sidecar (or a closed port) instead of starting one.
    pub fn external_sidecar(mut self, port: u16) -> Self {
        self.sidecar_port = Some(port);
        self
    }

    /// Envoy's worker threads (`--concurrency`): 1 unless set (tests), one per core in
    /// production and in benchmarks.
    pub fn envoy_workers(mut self, workers: usize) -> Self {
        self.envoy_workers = workers.max(1);
        self
    }

    /// The filter in call mode: it calls the sidecar itself ([`pixmesh_core::call`]) instead of
    /// handing image requests to the transcoder (a `"call"` in the filter config wins).
    pub fn call_mode(mut self) -> Self {
        self.call_mode = true;
        self
    }

    /// Sets `name` to `value` in Envoy's environment (for `{"env": …}` secrets).
    pub fn envoy_env(mut self, name: &str, value: &str) -> Self {
        self.envoy_env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Envoy's route timeout, e.g. `2s`.
    pub fn route_timeout(mut self, timeout: &str) -> Self {
        self.route_timeout = timeout.to_owned();
        self
    }

    /// The rendered Envoy configuration this builder would start with (the tests' secrets are
    /// inline: the render key unless the config has one).
    pub fn envoy_config(&self, sidecar_port: u16) -> String {
        envoy_config::bootstrap(&Bootstrap {
            filter_config: with_render_key(&self.filter_config, self.call_mode),
            filter_wasm: tools::filter_wasm().display().to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], self.listen_port)),
            admin_port: 0,
            stats_port: 0,
            health_path: "/healthz".into(),
            sidecar: Endpoint::loopback(sidecar_port),
            route_timeout: self.route_timeout.clone(),
            inline_secrets: InlineSecrets::Allow,
        })
        .unwrap_or_else(|e| panic!("envoy config: {e}"))
    }

    /// Starts the sidecar (unless external) and Envoy, and waits until both are ready.
    pub async fn start(self) -> Stack {
        let (sidecar, port) = match self.sidecar_port {
            Some(port) => (None, port),
            None => {
                let sidecar = Sidecar::start(&self.sidecar_config).await;
                let port = sidecar.addr().port();
                (Some(sidecar), port)
            }
        };
        let config = self.envoy_config(port);
        let workers = self.envoy_workers.to_string();
        let envoy =
            Envoy::start_with_env(&config, &["--concurrency", &workers], &self.envoy_env).await;
        Stack { envoy, sidecar }
    }
}
