//! A fake of AWS's credential endpoints on 127.0.0.1: no local server implements them, and the
//! sidecar's credential chains must be tested against something that answers. One server
//! plays all of them:
//!
//! - STS: `AssumeRole` and `AssumeRoleWithWebIdentity` (form-encoded `POST`s);
//! - the container credentials endpoint of ECS tasks and EKS Pod Identity
//!   (`AWS_CONTAINER_CREDENTIALS_FULL_URI` = [`FakeAws::container_uri`], requests authorized by
//!   the [`CONTAINER_TOKEN`]);
//! - the EC2 instance metadata service, IMDSv2 (`AWS_EC2_METADATA_SERVICE_ENDPOINT` =
//!   [`FakeAws::endpoint`]: a session token first, then the instance role's credentials).
//!
//! Each answers with the credentials the server was started with (e.g. a real Garage key, so
//! the S3 requests that follow are verified by Garage) and a session token; every request is
//! recorded.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The token the container endpoint expects in `Authorization`
/// (`AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`).
pub const CONTAINER_TOKEN: &str = "pod-identity-token";
/// The path of the container endpoint.
const CONTAINER_PATH: &str = "/v1/credentials";
/// The IMDSv2 session token the fake hands out and then requires.
const IMDS_TOKEN: &str = "fake-imds-session-token";
/// The instance profile's role name.
const INSTANCE_ROLE: &str = "pixmesh-node";
/// Where IMDS lists the instance's role, and serves its credentials under.
const IMDS_CREDENTIALS: &str = "/latest/meta-data/iam/security-credentials/";

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsRequest {
    /// `GET`, `PUT`, `POST`.
    pub method: String,
    /// The request target, e.g. `/v1/credentials`.
    pub path: String,
    /// The `Authorization` header (empty when absent, as for `AssumeRoleWithWebIdentity`).
    pub authorization: String,
    /// The body: for STS the form `Action=…&RoleArn=…&…`.
    pub body: String,
}

impl AwsRequest {
    /// Whether the body has the form parameter `name=value` (`value` as encoded on the wire).
    pub fn has(&self, name: &str, value: &str) -> bool {
        self.body.split('&').any(|p| p == format!("{name}={value}"))
    }
}

/// The fake, serving until dropped.
pub struct FakeAws {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    seen: Arc<Mutex<Vec<AwsRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAws {
    /// Answers every credential request with the temporary credentials `access_key` /
    /// `secret_key` (and a session token), valid until 2099.
    pub async fn start(access_key: &str, secret_key: &str) -> FakeAws {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake AWS");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let credentials = Arc::new((access_key.to_owned(), secret_key.to_owned()));
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (log, credentials) = (Arc::clone(&log), Arc::clone(&credentials));
                tokio::spawn(async move {
                    if let Some(req) = serve(conn, &credentials.0, &credentials.1).await {
                        log.lock().expect("log").push(req);
                    }
                });
            }
        });
        FakeAws {
            endpoint,
            seen,
            task,
        }
    }

    /// The container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
    pub fn container_uri(&self) -> String {
        format!("{}{CONTAINER_PATH}", self.endpoint)
    }

    /// The requests answered so far, in order.
    pub fn requests(&self) -> Vec<AwsRequest> {
        self.seen.lock().expect("log").clone()
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response with `status` (which may end in more header lines) and `body` that closes the
/// connection.
fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one request from `conn`, answers it and closes the connection.
async fn serve(mut conn: TcpStream, access_key: &str, secret_key: &str) -> Option<AwsRequest> {
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
    let mut request_line = head.lines().next()?.split(' ');
    let (method, path) = (
        request_line.next()?.to_owned(),
        request_line.next()?.to_owned(),
    );
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: usize = match header("content-length") {
        Some(v) => v.parse().ok()?,
        None => 0,
    };
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    let authorization = header("authorization").unwrap_or_default();

    let json_credentials = |extra: &str| {
        format!(
            "{{{extra}\"AccessKeyId\":\"{access_key}\",\"SecretAccessKey\":\"{secret_key}\",\
             \"Token\":\"fake-session-token\",\"Expiration\":\"2099-01-01T00:00:00Z\"}}"
        )
    };
    let imds_session = header("x-aws-ec2-metadata-token").as_deref() == Some(IMDS_TOKEN);
    let not_found = || response("404 Not Found", "text/plain", "");
    let answer = match (method.as_str(), path.as_str()) {
        ("POST", _) => sts(&body, access_key, secret_key),
        ("GET", CONTAINER_PATH) if authorization == CONTAINER_TOKEN => {
            response("200 OK", "application/json", &json_credentials(""))
        }
        ("GET", CONTAINER_PATH) => response("403 Forbidden", "text/plain", ""),
        ("PUT", "/latest/api/token") => match header("x-aws-ec2-metadata-token-ttl-seconds") {
            // The token's lifetime, echoed as IMDS does.
            Some(ttl) => response(
                &format!("200 OK\r\nx-aws-ec2-metadata-token-ttl-seconds: {ttl}"),
                "text/plain",
                IMDS_TOKEN,
            ),
            None => response("400 Bad Request", "text/plain", ""),
        },
        ("GET", p) if p.starts_with("/latest/") && !imds_session => {
            response("401 Unauthorized", "text/plain", "")
        }
        ("GET", IMDS_CREDENTIALS) => response("200 OK", "text/plain", INSTANCE_ROLE),
        ("GET", p) if p.strip_prefix(IMDS_CREDENTIALS) == Some(INSTANCE_ROLE) => response(
            "200 OK",
            "application/json",
            &json_credentials(
                "\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\
                 \"LastUpdated\":\"2026-01-01T00:00:00Z\",",
            ),
        ),
        _ => not_found(),
    };
    conn.write_all(answer.as_bytes()).await.ok()?;
    let _ = conn.shutdown().await;
    Some(AwsRequest {
        method,
        path,
        authorization,
        body,
    })
}

/// STS's answer to the form `body`: credentials for the two AssumeRole actions, else 400.
fn sts(body: &str, access_key: &str, secret_key: &str) -> String {
    let action = body
        .split('&')
        .find_map(|p| p.strip_prefix("Action="))
        .unwrap_or_default();
    if action != "AssumeRole" && action != "AssumeRoleWithWebIdentity" {
        return response("400 Bad Request", "text/plain", "");
    }
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
    response("200 OK", "text/xml", &xml)
}
