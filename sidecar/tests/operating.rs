//! The real binary as an operator runs it: `serve --log-format json` with `metrics_listen`
//! answers `/livez`, `/readyz` and `/metrics`, logs JSON lines; `health --config` finds it from
//! the same file and says SERVING; `health` against nothing fails within its timeout; SIGTERM
//! drains and exits.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pixmesh_tests::ports;

/// The sidecar process, killed when dropped.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn health(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pixmesh-sidecar"))
        .arg("health")
        .args(args)
        .env_remove("PIXMESH_CONFIG")
        .output()
        .expect("run pixmesh-sidecar health")
}

/// GET `path` on `port`, `None` while nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = pixmesh_tests::http::try_get(&format!("http://127.0.0.1:{port}{path}"), &[]).ok()?;
    Some((r.status, r.text()))
}

#[test]
fn serve_health_metrics_and_json_logs_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let [grpc, metrics] = ports::free_ports::<2>();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"0.0.0.0:{grpc}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
             [storages.photos]\ntype = \"local\"\nroot = \"{}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pixmesh-sidecar"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("PIXMESH_LOG_FORMAT", "json")
        .env(
            pixmesh_core::config::RENDER_KEY_ENV,
            pixmesh_tests::vouch::render_key(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pixmesh-sidecar");
    let stderr = child.stderr.take().unwrap();
    let mut serving = Serving(child);
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    while get(metrics, "/readyz") != Some((200, "ready\n".into())) {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(metrics, "/livez"), Some((200, "alive\n".into())));
    let (status, scrape) = get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(scrape.contains("pixmesh_ready 1\n"), "{scrape}");
    assert!(scrape.contains("pixmesh_build_info{version=\""), "{scrape}");
    assert_eq!(get(metrics, "/nothing").map(|r| r.0), Some(404));

    // `health` finds the sidecar from its config (0.0.0.0 is asked on loopback).
    let out = health(&["--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "serving\n");
    let nowhere = format!("http://127.0.0.1:{}", ports::free_port());
    let out = health(&["--addr", &nowhere, "--timeout", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&nowhere),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM: the process drains and exits on its own.
    // SAFETY: kill(2) on our own child's pid.
    let pid = i32::try_from(serving.0.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while serving.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(serving.0.try_wait().unwrap().unwrap().success());
    let lines = lines.join().unwrap();
    let messages: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            v["message"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    for expected in [
        "pixmesh sidecar serving",
        "shutting down",
        "draining: finishing the requests in flight",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "{expected:?} not in {messages:?}"
        );
    }
}
