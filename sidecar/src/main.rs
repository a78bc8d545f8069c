//! `pixmesh-sidecar`: serve the image service, or help deploy it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixmesh_core::router::Router;
use pixmesh_sidecar::config::Config;
use pixmesh_sidecar::telemetry::logging::LogFormat;

/// Large freed blocks are kept for reuse, within a share of the memory budget.
#[global_allocator]
static ALLOCATOR: pixmesh_sidecar::serving::block_cache::BlockCache =
    pixmesh_sidecar::serving::block_cache::BlockCache;

#[derive(Parser)]
#[command(name = "pixmesh-sidecar", version, about)]
struct Cli {
    /// Log lines as text or JSON objects (levels from RUST_LOG, default info).
    #[arg(
        long,
        global = true,
        env = "PIXMESH_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC image service.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short, env = "PIXMESH_CONFIG")]
        config: PathBuf,
    },
    /// Probe every configured storage and the result storage: bucket reachable with these
    /// credentials, readable, and (result storage) a probe object written and deleted. Prints
    /// one `ok`/`FAIL` line each; exits 1 on any failure.
    Check {
        /// The TOML configuration file.
        #[arg(long, short, env = "PIXMESH_CONFIG")]
        config: PathBuf,
    },
    /// Write the descriptor set Envoy's gRPC-JSON transcoder loads.
    Descriptor {
        /// Output file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print the signed form of unsigned image URLs, one a line, with the keys of the filter
    /// configuration. Each URL is in its route's grammar: thumbor `PREFIX/unsafe/…`, imgproxy
    /// `PREFIX/insecure/…`, ImageKit or query URLs without `ik-s`/`sig`; a path or an absolute
    /// URL.
    Sign {
        /// The filter's JSON configuration (it holds the signing keys).
        #[arg(long, short = 'c', env = "PIXMESH_FILTER_CONFIG")]
        filter_config: PathBuf,
        /// Unsigned URLs.
        #[arg(required = true)]
        urls: Vec<String>,
    },
    /// Write the sidecar TOML and the filter JSON that do what imagor's environment variables
    /// (S3_LOADER_BUCKET, AWS_LOADER_REGION, S3_SAFE_CHARS, IMAGOR_SECRET, …) in this process's
    /// environment say. Unsupported or contradictory values are errors; imagor variables
    /// pixmesh does not map are listed on stderr, all of them.
    FromImagorEnv {
        /// Where the sidecar's TOML goes.
        #[arg(long)]
        sidecar_out: PathBuf,
        /// Where the filter's JSON goes.
        #[arg(long)]
        filter_out: PathBuf,
        /// The route's path prefix (imagor serves at the root).
        #[arg(long, default_value = "/")]
        prefix: String,
    },
    /// The same for imgproxy's environment (IMGPROXY_KEY/SALT, IMGPROXY_BASE_URL=s3://…,
    /// IMGPROXY_S3_ENDPOINT, IMGPROXY_MAX_SRC_RESOLUTION, …); unmapped IMGPROXY_* variables
    /// are listed on stderr.
    FromImgproxyEnv {
        /// Where the sidecar's TOML goes.
        #[arg(long)]
        sidecar_out: PathBuf,
        /// Where the filter's JSON goes.
        #[arg(long)]
        filter_out: PathBuf,
        /// The route's path prefix when IMGPROXY_PATH_PREFIX is unset (imgproxy serves at the
        /// root).
        #[arg(long, default_value = "/")]
        prefix: String,
    },
    /// Write pixmesh's Envoy configuration for a filter configuration: a whole bootstrap, or
    /// the fragment to add to an existing Envoy.
    Envoy {
        #[command(subcommand)]
        command: EnvoyCommand,
    },
    /// Ask a running sidecar whether it is serving (exit 0) or not (exit 1).
    /// Uses the standard grpc.health.v1 service (the sidecar as a whole).
    Health {
        /// The sidecar's gRPC address; default: the `listen` of --config, else
        /// http://127.0.0.1:50051.
        #[arg(long)]
        addr: Option<String>,
        /// The TOML configuration file whose `listen` to ask.
        #[arg(long, short, env = "PIXMESH_CONFIG")]
        config: Option<PathBuf>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
}

/// `pixmesh-sidecar envoy …`: the filter configuration decides call or transcoder mode; the
/// secrets it names (`{"env": NAME}`, the render key) are read from Envoy's environment.
#[derive(Subcommand)]
enum EnvoyCommand {
    /// A whole Envoy bootstrap: listener with pixmesh's edge settings, filters, sidecar route
    /// and cluster.
    Bootstrap {
        #[command(flatten)]
        common: EnvoyArgs,
        /// The listener's address.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// The admin interface's port (on 127.0.0.1).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// The stats listener's port (on the listener's address): GET /stats/prometheus only,
        /// for Prometheus.
        #[arg(long, default_value_t = 9902)]
        stats_port: u16,
        /// The path Envoy answers with the sidecar's health (200, or 503 while it is not
        /// ready), for a load balancer's health check.
        #[arg(long, default_value = "/healthz")]
        health_path: String,
    },
    /// The fragment for an existing Envoy: `http_filters` (before the router), `routes` (first
    /// in the virtual host) and `clusters` (appended), one YAML document.
    Fragment {
        #[command(flatten)]
        common: EnvoyArgs,
        /// The sidecar's cluster name (call mode: must equal the configuration's call.cluster).
        #[arg(long)]
        cluster: Option<String>,
    },
}

/// What both `envoy` subcommands take.
#[derive(clap::Args)]
struct EnvoyArgs {
    /// The filter's JSON configuration, validated before anything is written.
    #[arg(long, short = 'c', env = "PIXMESH_FILTER_CONFIG")]
    filter_config: PathBuf,
    /// The filter's .wasm, as Envoy will find it.
    #[arg(long)]
    wasm: String,
    /// The sidecar's address: IP:PORT (a STATIC cluster) or NAME:PORT (STRICT_DNS).
    #[arg(long, default_value = "127.0.0.1:50051")]
    sidecar: pixmesh_sidecar::envoy_config::Endpoint,
    /// The sidecar route's timeout (transcoder mode).
    #[arg(long, default_value = "30s")]
    route_timeout: String,
    /// Copy secrets written inline in the filter configuration into the output (refused
    /// otherwise; the output is then written readable by its owner only).
    #[arg(long)]
    allow_inline_secrets: bool,
    /// Output file; standard output when unset.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    pixmesh_sidecar::telemetry::logging::init(cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pixmesh-sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve { config } => {
            pixmesh_sidecar::serving::budget::tune_allocator();
            let config = Config::load(&config)?;
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "pixmesh sidecar serving");
            let shutdown = shutdown_signal()?;
            pixmesh_sidecar::serving::serve(&config, listener, shutdown).await?;
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            let lines = pixmesh_sidecar::storage::check::check(&config).await;
            for line in &lines {
                println!("{line}");
            }
            let failed = lines.iter().filter(|l| !l.ok).count();
            if failed > 0 {
                return Err(format!("{failed} of {} checks failed", lines.len()).into());
            }
        }
        Command::Descriptor { out } => std::fs::write(out, pixmesh_proto::DESCRIPTOR_SET)?,
        Command::Sign {
            filter_config,
            urls,
        } => {
            let router = Router::from_json(&std::fs::read(&filter_config)?)?;
            for url in urls {
                println!("{}", router.sign(&url)?);
            }
        }
        Command::FromImagorEnv {
            sidecar_out,
            filter_out,
            prefix,
        } => {
            use pixmesh_sidecar::config::imagor_env;
            from_env(imagor_env::map, &sidecar_out, &filter_out, &prefix)?;
        }
        Command::FromImgproxyEnv {
            sidecar_out,
            filter_out,
            prefix,
        } => {
            use pixmesh_sidecar::config::imgproxy_env;
            from_env(imgproxy_env::map, &sidecar_out, &filter_out, &prefix)?;
        }
        Command::Envoy { command } => envoy(command)?,
        Command::Health {
            addr,
            config,
            timeout,
        } => {
            use pixmesh_sidecar::telemetry::health;
            let addr = match (addr, config) {
                (Some(addr), _) => addr,
                (None, Some(config)) => health::probe_address(Config::load(&config)?.listen),
                (None, None) => "http://127.0.0.1:50051".to_owned(),
            };
            let timeout = std::time::Duration::try_from_secs_f64(timeout)
                .map_err(|e| format!("--timeout: {e}"))?;
            health::probe(&addr, timeout).await?;
            println!("serving");
        }
    }
    Ok(())
}

/// `pixmesh-sidecar envoy …`.
fn envoy(command: EnvoyCommand) -> Result<(), Box<dyn std::error::Error>> {
    use pixmesh_sidecar::envoy_config::{self, Bootstrap, Fragment, InlineSecrets};
    let common = match &command {
        EnvoyCommand::Bootstrap { common, .. } | EnvoyCommand::Fragment { common, .. } => common,
    };
    let filter_config = std::fs::read_to_string(&common.filter_config)
        .map_err(|e| format!("{}: {e}", common.filter_config.display()))?;
    let inline_secrets = match common.allow_inline_secrets {
        true => InlineSecrets::Allow,
        false => InlineSecrets::Refuse,
    };
    let text = match &command {
        EnvoyCommand::Bootstrap {
            listen,
            admin_port,
            stats_port,
            health_path,
            ..
        } => envoy_config::bootstrap(&Bootstrap {
            filter_config,
            filter_wasm: common.wasm.clone(),
            listen: *listen,
            admin_port: *admin_port,
            stats_port: *stats_port,
            health_path: health_path.clone(),
            sidecar: common.sidecar.clone(),
            route_timeout: common.route_timeout.clone(),
            inline_secrets,
        })?,
        EnvoyCommand::Fragment { cluster, .. } => envoy_config::fragment(&Fragment {
            filter_config,
            filter_wasm: common.wasm.clone(),
            sidecar: common.sidecar.clone(),
            cluster: cluster.clone(),
            route_timeout: common.route_timeout.clone(),
            inline_secrets,
        })?,
    };
    match &common.out {
        Some(path) if common.allow_inline_secrets => write_private(path, &text)?,
        Some(path) => std::fs::write(path, &text)?,
        None => print!("{text}"),
    }
    Ok(())
}

/// Writes `text` to `path`, readable and writable by its owner only: created so (never
/// world-readable for a moment), and an existing file is made so before it is written.
/// Writes the two files a peer's environment maps onto (owner-only: they may hold secrets),
/// checks the sidecar's as `serve` reads it, and lists the peer's variables left unmapped.
fn from_env(
    map: fn(
        &std::collections::BTreeMap<String, String>,
        &str,
    ) -> Result<
        pixmesh_sidecar::config::imagor_env::Mapped,
        pixmesh_sidecar::config::imagor_env::EnvError,
    >,
    sidecar_out: &std::path::Path,
    filter_out: &std::path::Path,
    prefix: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let mapped = map(&env, prefix)?;
    write_private(sidecar_out, &mapped.sidecar_toml)?;
    write_private(filter_out, &mapped.filter_json)?;
    // Validated as `serve` will read it (a routing file must exist and parse).
    Config::load(sidecar_out)?;
    println!(
        "wrote {} and {} (readable by their owner only: they may hold secrets)",
        sidecar_out.display(),
        filter_out.display()
    );
    println!(
        "set {} (at least 32 bytes, e.g. `openssl rand -hex 32`) for both the sidecar \
         and Envoy's wasm VM (vm_config.environment_variables): the filter vouches for \
         render requests with it",
        pixmesh_core::config::RENDER_KEY_ENV
    );
    for name in &mapped.unmapped {
        eprintln!("not mapped: {name} (pixmesh has no equivalent, or it is misspelt)");
    }
    Ok(())
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or Ctrl-C; tonic then stops accepting and
/// lets in-flight renders finish.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}
