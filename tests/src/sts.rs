//! A fake AWS STS endpoint on 127.0.0.1: no local server implements STS, and the sidecar's
//! credential chains (assume-role, web identity) must be tested against something that answers.
//!
//! It answers `AssumeRole` and `AssumeRoleWithWebIdentity` with the credentials it was started
//! with (e.g. a real Garage key, so the S3 requests that follow are verified by Garage) and
//! records every request.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRequest {
    /// The `Authorization` header (empty for the unsigned `AssumeRoleWithWebIdentity`).
    pub authorization: String,
    /// The form-encoded body: `Action=…&RoleArn=…&…`.
    pub body: String,
}

impl StsRequest {
    /// Whether the body has the form parameter `name=value` (`value` as encoded on the wire).
    pub fn has(&self, name: &str, value: &str) -> bool {
        self.body.split('&').any(|p| p == format!("{name}={value}"))
    }
}

/// The fake, serving until dropped.
pub struct FakeSts {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    seen: Arc<Mutex<Vec<StsRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSts {
    /// Answers every AssumeRole* request with the temporary credentials `access_key` /
    /// `secret_key` (and a session token), valid until 2099.
    pub async fn start(access_key: &str, secret_key: &str) -> FakeSts {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake STS");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let (access_key, secret_key) = (access_key.to_owned(), secret_key.to_owned());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (log, access_key, secret_key) =
                    (Arc::clone(&log), access_key.clone(), secret_key.clone());
                tokio::spawn(async move {
                    if let Some(req) = read_request(conn, &access_key, &secret_key).await {
                        log.lock().expect("log").push(req);
                    }
                });
            }
        });
        FakeSts {
            endpoint,
            seen,
            task,
        }
    }

    /// The requests answered so far, in order.
    pub fn requests(&self) -> Vec<StsRequest> {
        self.seen.lock().expect("log").clone()
    }
}

impl Drop for FakeSts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request from `conn`, answers it and closes the connection.
async fn read_request(
    mut conn: TcpStream,
    access_key: &str,
    secret_key: &str,
) -> Option<StsRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")?.parse().ok()?;
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    let action = body
        .split('&')
        .find_map(|p| p.strip_prefix("Action="))
        .unwrap_or_default()
        .to_owned();
    let answer = match action.as_str() {
        "AssumeRole" | "AssumeRoleWithWebIdentity" => {
            let xml = format!(
                "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                 <{action}Result><Credentials><AccessKeyId>{access_key}</AccessKeyId>\
                 <SecretAccessKey>{secret_key}</SecretAccessKey>\
                 <SessionToken>fake-sts-session-token</SessionToken>\
                 <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
                 <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn>\
                 <AssumedRoleId>AROAFAKE:s</AssumedRoleId></AssumedRoleUser>\
                 </{action}Result><ResponseMetadata><RequestId>fake</RequestId>\
                 </ResponseMetadata></{action}Response>"
            );
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{xml}",
                xml.len()
            )
        }
        _ => "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
    };
    conn.write_all(answer.as_bytes()).await.ok()?;
    let _ = conn.shutdown().await;
    Some(StsRequest {
        authorization: header("authorization").unwrap_or_default(),
        body,
    })
}
