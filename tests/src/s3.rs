//! S3 client plumbing shared by the S3 server harnesses ([`crate::garage`], [`crate::moto`]):
//! a client configured for a local test server, and the bucket operations tests use. Every
//! operation panics with the SDK's whole error chain, since a failing fixture ends the test.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::primitives::ByteStream;

/// The client configuration for a local server: path-style, static keys, checksums only when
/// an operation requires them (as the sidecar sends them).
pub fn config_builder(
    endpoint: &str,
    region: &str,
    access_key: &str,
    secret_key: &str,
) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "pixmesh-tests",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
}

/// Uploads `bytes` to `bucket`/`key`.
pub async fn put(client: &Client, bucket: &str, key: &str, bytes: Vec<u8>) -> PutObjectOutput {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {}", display(e)))
}

/// The keys in `bucket` that start with `prefix`, sorted, over every page.
pub async fn list(client: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("list s3://{bucket}/{prefix}: {}", display(e)));
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    keys.sort();
    keys
}

/// Formats an SDK error with its whole source chain.
pub fn display<E: std::error::Error>(e: E) -> String {
    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
}
