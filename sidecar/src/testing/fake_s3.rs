//! A fake S3 endpoint on 127.0.0.1 for unit tests of what no local S3 server does (region
//! redirects, STS `AssumeRole`): every request is recorded with the region its SigV4 signature is scoped to, and
//! answered by a function of that record.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, `HEAD`, `PUT`, …
    pub method: String,
    /// The request target, e.g. `/b/a.jpg?x-id=GetObject`.
    pub target: String,
    /// The region of the `Credential=…/DATE/REGION/s3/aws4_request` scope of `Authorization`.
    pub region: String,
    /// The `Authorization` header as sent.
    pub authorization: String,
    /// The request body (STS sends its parameters there), lossily decoded.
    pub body: String,
    /// The `x-amz-expected-bucket-owner` header, if sent.
    pub expected_owner: Option<String>,
    /// The `x-request-id` header, if sent.
    pub request_id: Option<String>,
    /// The `traceparent` header, if sent.
    pub traceparent: Option<String>,
}

/// A complete HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// `status` (e.g. `"200 OK"`) with `body`.
    pub fn new(status: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {}\r\n", self.status);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("content-length: {}\r\n\r\n", self.body.len()));
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The fake: an endpoint URL and the log of requests it answered.
pub struct FakeS3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeS3 {
    /// Serves every request with `reply(&request)` until dropped.
    pub async fn start(reply: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeS3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(reply);
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, Arc::clone(&reply), Arc::clone(&log)));
            }
        });
        FakeS3 {
            endpoint,
            seen,
            task,
        }
    }

    /// The requests answered so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The signing region of each request answered so far, in order.
    pub fn regions(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.region).collect()
    }
}

impl Drop for FakeS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers the requests of one keep-alive connection until the client closes it.
async fn serve(
    mut conn: TcpStream,
    reply: Arc<impl Fn(&Seen) -> Reply>,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        buf.drain(..head_end + length);
        let mut request_line = head.lines().next().unwrap_or_default().split(' ');
        let authorization = header("authorization").unwrap_or_default();
        let seen = Seen {
            method: request_line.next().unwrap_or_default().to_owned(),
            target: request_line.next().unwrap_or_default().to_owned(),
            region: scope_region(&authorization).unwrap_or_default().to_owned(),
            authorization,
            body,
            expected_owner: header("x-amz-expected-bucket-owner"),
            request_id: header("x-request-id"),
            traceparent: header("traceparent"),
        };
        let answer = reply(&seen).to_bytes(seen.method == "HEAD");
        log.lock().unwrap().push(seen);
        if conn.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// The region of a SigV4 `Authorization` header's credential scope.
fn scope_region(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    // ACCESS_KEY/DATE/REGION/SERVICE/aws4_request
    scope.split('/').nth(2)
}

#[test]
fn scope_region_reads_the_credential_scope() {
    let auth = "AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/s3/aws4_request, \
                SignedHeaders=host, Signature=abc";
    assert_eq!(scope_region(auth), Some("eu-west-1"));
    assert_eq!(scope_region("Basic x"), None);
}
