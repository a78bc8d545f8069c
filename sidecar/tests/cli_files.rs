//! What `pixmesh-sidecar` writes to disk: `from-imagor-env` turns imagor's environment, which
//! holds the S3 keys and the URL-signing secret, into two files that must never be readable by
//! other users, whether it creates them or overwrites files that were.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn from_imagor_env_writes_files_only_their_owner_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = dir.path().join("sidecar.toml");
    let filter = dir.path().join("filter.json");
    // One file left world-readable by an earlier run or another tool.
    std::fs::write(&filter, "{}").unwrap();
    std::fs::set_permissions(&filter, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pixmesh-sidecar"))
        .arg("from-imagor-env")
        .arg("--sidecar-out")
        .arg(&sidecar)
        .arg("--filter-out")
        .arg(&filter)
        .env_clear()
        .env("S3_LOADER_BUCKET", "photos")
        .env("AWS_LOADER_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env(
            "AWS_LOADER_SECRET_ACCESS_KEY",
            "a-secret-that-must-stay-private",
        )
        .env("AWS_REGION", "eu-west-1")
        .env("IMAGOR_SECRET", "an-imagor-signing-secret")
        .output()
        .expect("run pixmesh-sidecar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [&sidecar, &filter] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
    }
    assert!(
        std::fs::read_to_string(&sidecar)
            .unwrap()
            .contains("a-secret-that-must-stay-private"),
        "the keys are in the file, hence its mode"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("a-secret-that-must-stay-private")
            && !stdout.contains("an-imagor-signing-secret"),
        "{stdout}"
    );
}

/// `from-imgproxy-env` writes the same owner-only files from imgproxy's environment, and lists
/// every IMGPROXY_* variable it does not map on stderr instead of dropping it.
#[test]
fn from_imgproxy_env_writes_private_files_and_lists_what_it_does_not_map() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = dir.path().join("sidecar.toml");
    let filter = dir.path().join("filter.json");
    let salt = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5";
    let out = Command::new(env!("CARGO_BIN_EXE_pixmesh-sidecar"))
        .arg("from-imgproxy-env")
        .arg("--sidecar-out")
        .arg(&sidecar)
        .arg("--filter-out")
        .arg(&filter)
        .env_clear()
        .env(
            "IMGPROXY_KEY",
            "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881",
        )
        .env("IMGPROXY_SALT", salt)
        .env("IMGPROXY_USE_S3", "true")
        .env("IMGPROXY_BASE_URL", "s3://photos/")
        .env("IMGPROXY_S3_REGION", "eu-west-1")
        .env("IMGPROXY_LOG_FORMAT", "json")
        .env("IMGPROXY_FALLBACK_IMAGE_URL", "https://example.com/x.png")
        .output()
        .expect("run pixmesh-sidecar");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for file in [&sidecar, &filter] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
    }
    assert!(std::fs::read_to_string(&filter).unwrap().contains(salt));
    for name in ["IMGPROXY_LOG_FORMAT", "IMGPROXY_FALLBACK_IMAGE_URL"] {
        assert!(stderr.contains(&format!("not mapped: {name}")), "{stderr}");
    }
    assert!(!stderr.contains("IMGPROXY_S3_REGION"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(salt) && !stderr.contains(salt), "{stdout}");
}
