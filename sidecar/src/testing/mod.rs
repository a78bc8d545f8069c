//! Helpers for the unit tests only (compiled with `cfg(test)`, never part of the product):
//! [`fake_s3`], a recording fake S3 endpoint.

pub mod fake_s3;
