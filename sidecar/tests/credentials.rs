//! Credentials end to end: the real `pixmesh-sidecar check` binary, run as a subprocess with a
//! controlled environment (no inherited `AWS_*`, its own `HOME`), against a real Garage, which
//! verifies SigV4 strictly: the right credentials pass, wrong ones fail, whichever link of the
//! default chain (environment, shared credentials file and profile, web identity, the container
//! endpoint of ECS and EKS Pod Identity, EC2 instance metadata) or STS assume-role supplies
//! them. STS and the credential endpoints are a fake ([`FakeAws`]) that hands out Garage keys.
//!
//! Also: a key that may only read the source bucket serves renders, the `[s3]` table's
//! settings reach every role that sets none, and no secret ever shows in the output or the log
//! (run at `debug`).

use std::path::Path;
use tokio::process::Command;

use pixmesh_sidecar::config::Config;
use pixmesh_tests::fake_aws::{CONTAINER_TOKEN, FakeAws};
use pixmesh_tests::{Garage, tools};
use tempfile::TempDir;

/// What one `check` run printed.
struct Run {
    ok: bool,
    /// stdout and stderr (the log), together.
    output: String,
}

/// A `[storages.photos]` on Garage's default bucket with `extra` lines (credentials).
fn photos(garage: &Garage, extra: &str) -> String {
    format!(
        "[limits]\nstorage_timeout_ms = 5000\n[storages.photos]\ntype = \"s3\"\n\
         bucket = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\n{extra}\n",
        garage.default_bucket(),
        garage.endpoint(),
        garage.region(),
    )
}

/// Runs `pixmesh-sidecar check --config` on `toml` with only `env` (and a `HOME` of its own,
/// no instance metadata) in its environment.
async fn check(dir: &Path, toml: &str, env: &[(&str, &str)]) -> Run {
    let config = dir.join("pixmesh.toml");
    std::fs::write(&config, toml).expect("write config");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let out = Command::new(env!("CARGO_BIN_EXE_pixmesh-sidecar"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env_clear()
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run pixmesh-sidecar check");
    Run {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn assert_passes(run: &Run, what: &str) {
    assert!(run.ok, "{what}: expected to pass\n{}", run.output);
    assert!(
        run.output
            .contains("ok   storage photos: bucket images is reachable and readable"),
        "{what}\n{}",
        run.output
    );
}

fn assert_denied(run: &Run, what: &str) {
    assert!(!run.ok, "{what}: expected to fail\n{}", run.output);
    assert!(
        run.output
            .contains("FAIL storage photos: bucket images: HeadBucket: "),
        "{what}\n{}",
        run.output
    );
}

fn assert_no_secret(run: &Run, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !run.output.contains(secret),
            "secret shown:\n{}",
            run.output
        );
    }
}

/// A secret Garage does not know for `access_key`.
const WRONG_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables() {
    let garage = Garage::start().await;
    let dir = TempDir::new().unwrap();
    let toml = photos(&garage, "");
    let key = garage.access_key();
    let run = check(
        dir.path(),
        &toml,
        &[
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", garage.secret_key()),
        ],
    )
    .await;
    assert_passes(&run, "right keys in the environment");
    assert_no_secret(&run, &[garage.secret_key()]);

    let run = check(
        dir.path(),
        &toml,
        &[
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", WRONG_SECRET),
        ],
    )
    .await;
    assert_denied(&run, "a wrong secret in the environment");
    assert_no_secret(&run, &[WRONG_SECRET, garage.secret_key()]);

    let run = check(dir.path(), &toml, &[]).await;
    assert!(!run.ok, "no credentials at all\n{}", run.output);
    assert!(run.output.contains("FAIL storage photos"), "{}", run.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_credentials_file_and_profile() {
    let garage = Garage::start().await;
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = {key}\naws_secret_access_key = {WRONG_SECRET}\n\n\
             [reader]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n",
            key = garage.access_key(),
            secret = garage.secret_key(),
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let env = [("AWS_SHARED_CREDENTIALS_FILE", file)];

    let run = check(dir.path(), &photos(&garage, "profile = \"reader\""), &env).await;
    assert_passes(&run, "the configured profile");
    assert_no_secret(&run, &[garage.secret_key()]);

    let run = check(dir.path(), &photos(&garage, ""), &env).await;
    assert_denied(&run, "the default profile holds a wrong secret");
    assert_no_secret(&run, &[WRONG_SECRET, garage.secret_key()]);

    let run = check(
        dir.path(),
        &photos(&garage, ""),
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", file),
            ("AWS_PROFILE", "reader"),
        ],
    )
    .await;
    assert_passes(&run, "AWS_PROFILE");

    // The file in its default place, ~/.aws/credentials.
    let aws = dir.path().join("home/.aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::copy(file, aws.join("credentials")).unwrap();
    let run = check(dir.path(), &photos(&garage, "profile = \"reader\""), &[]).await;
    assert_passes(&run, "~/.aws/credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_through_sts() {
    let garage = Garage::start().await;
    let dir = TempDir::new().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJ.web-identity-token.sig").unwrap();
    let token = token.to_str().unwrap();
    let role = "arn:aws:iam::123456789012:role/pixmesh-irsa";
    let toml = photos(&garage, "");
    let env = |endpoint: &str| {
        [
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_owned()),
            ("AWS_ROLE_ARN", role.to_owned()),
            ("AWS_ROLE_SESSION_NAME", "pixmesh-pod".to_owned()),
            ("AWS_ENDPOINT_URL_STS", endpoint.to_owned()),
        ]
    };

    let sts = FakeAws::start(garage.access_key(), garage.secret_key()).await;
    let vars = env(&sts.endpoint);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = check(dir.path(), &toml, &vars).await;
    assert_passes(&run, "credentials from AssumeRoleWithWebIdentity");
    assert_no_secret(&run, &[garage.secret_key()]);
    let requests = sts.requests();
    assert!(!requests.is_empty(), "STS was asked\n{}", run.output);
    let req = &requests[0];
    assert!(req.has("Action", "AssumeRoleWithWebIdentity"), "{req:?}");
    assert!(
        req.has(
            "RoleArn",
            "arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fpixmesh-irsa"
        ),
        "{req:?}"
    );
    assert!(
        req.has("WebIdentityToken", "eyJ.web-identity-token.sig"),
        "{req:?}"
    );
    assert!(req.has("RoleSessionName", "pixmesh-pod"), "{req:?}");

    let wrong = FakeAws::start(garage.access_key(), WRONG_SECRET).await;
    let vars = env(&wrong.endpoint);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = check(dir.path(), &toml, &vars).await;
    assert_denied(&run, "STS handed out a wrong secret");
    assert_no_secret(&run, &[WRONG_SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_with_external_id() {
    let garage = Garage::start().await;
    let dir = TempDir::new().unwrap();
    // The base key may do nothing itself: only the role's (temporary) key may read.
    let (base, base_secret) = garage.create_key("base").await;
    let (reader, reader_secret) = garage.create_key("reader").await;
    garage
        .allow(garage.default_bucket(), &reader, true, false)
        .await;
    let sts = FakeAws::start(&reader, &reader_secret).await;
    let role = |sts: &FakeAws| {
        format!(
            "access_key_id = \"{base}\"\nsecret_access_key = \"{base_secret}\"\n\
             role_arn = \"arn:aws:iam::123456789012:role/reader\"\n\
             external_id = \"pixmesh-ext-42\"\nsts_endpoint = \"{}\"\n",
            sts.endpoint
        )
    };
    let run = check(dir.path(), &photos(&garage, &role(&sts)), &[]).await;
    assert_passes(&run, "the assumed role's credentials");
    assert_no_secret(&run, &[&base_secret, &reader_secret]);
    let req = &sts.requests()[0];
    assert!(req.has("Action", "AssumeRole"), "{req:?}");
    assert!(req.has("ExternalId", "pixmesh-ext-42"), "{req:?}");
    assert!(
        req.has(
            "RoleArn",
            "arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Freader"
        ),
        "{req:?}"
    );
    assert!(
        req.authorization.contains(&format!("Credential={base}/")),
        "signed with the base key: {req:?}"
    );

    // Without the role, the base key alone is refused.
    let alone = format!("access_key_id = \"{base}\"\nsecret_access_key = \"{base_secret}\"\n");
    let run = check(dir.path(), &photos(&garage, &alone), &[]).await;
    assert_denied(&run, "the base key alone");
    assert_no_secret(&run, &[&base_secret]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_serves_renders_and_check_says_it_cannot_write() {
    use pixmesh_proto::v1;
    use pixmesh_proto::v1::image_service_server::ImageService as _;

    let garage = Garage::start().await;
    garage
        .put(
            garage.default_bucket(),
            "a.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    let (reader, secret) = garage.create_key("reader").await;
    garage
        .allow(garage.default_bucket(), &reader, true, false)
        .await;
    let keys = format!("access_key_id = \"{reader}\"\nsecret_access_key = \"{secret}\"\n");
    let toml = photos(&garage, &keys);
    let config = Config::from_toml(&toml).unwrap();
    let renderer = pixmesh_sidecar::serving::renderer(&config)
        .await
        .expect("renderer");
    let svc = pixmesh_tests::vouch::service(std::sync::Arc::new(renderer));
    let rendered = svc
        .render_unary(pixmesh_tests::vouch::vouched(v1::RenderRequest {
            storage: "photos".into(),
            key: "a.jpg".into(),
            width: 100,
            ..Default::default()
        }))
        .await
        .expect("a read-only key renders")
        .into_inner();
    let img = image::load_from_memory(&rendered.data).expect("an image");
    assert_eq!(img.width(), 100);

    let dir = TempDir::new().unwrap();
    let run = check(dir.path(), &toml, &[]).await;
    assert_passes(&run, "read-only key");
    // The same key as the result storage: reading is fine, writing is refused.
    let writing =
        format!("{toml}[result_storage]\nstorage = \"photos\"\nbase_dir = \"renditions\"\n");
    let run = check(dir.path(), &writing, &[]).await;
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.output
            .contains("ok   storage photos: bucket images is reachable and readable"),
        "{}",
        run.output
    );
    assert!(
        run.output.contains(
            "FAIL result_storage photos: bucket images: PutObject renditions/.pixmesh-check/"
        ) && run.output.contains("access denied"),
        "{}",
        run.output
    );
    assert_no_secret(&run, &[&secret]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_credentials_of_ecs_and_eks_pod_identity() {
    let garage = Garage::start().await;
    let dir = TempDir::new().unwrap();
    let token = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token, CONTAINER_TOKEN).unwrap();
    let token = token.to_str().unwrap();
    let toml = photos(&garage, "");

    let aws = FakeAws::start(garage.access_key(), garage.secret_key()).await;
    let uri = aws.container_uri();
    let run = check(
        dir.path(),
        &toml,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token),
        ],
    )
    .await;
    assert_passes(&run, "credentials from the container endpoint");
    assert_no_secret(&run, &[garage.secret_key(), CONTAINER_TOKEN]);
    let asked = aws.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.path == "/v1/credentials" && r.authorization == CONTAINER_TOKEN),
        "the endpoint was asked with the pod's token: {asked:?}"
    );

    // The endpoint refuses a request without the pod's token.
    let run = check(
        dir.path(),
        &toml,
        &[("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)],
    )
    .await;
    assert!(!run.ok, "no token, no credentials\n{}", run.output);

    let wrong = FakeAws::start(garage.access_key(), WRONG_SECRET).await;
    let run = check(
        dir.path(),
        &toml,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &wrong.container_uri()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token),
        ],
    )
    .await;
    assert_denied(&run, "the container endpoint handed out a wrong secret");
    assert_no_secret(&run, &[WRONG_SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_metadata_credentials() {
    let garage = Garage::start().await;
    let dir = TempDir::new().unwrap();
    let toml = photos(&garage, "");
    let aws = FakeAws::start(garage.access_key(), garage.secret_key()).await;
    let imds = [
        ("AWS_EC2_METADATA_DISABLED", "false"),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", aws.endpoint.as_str()),
    ];
    let run = check(dir.path(), &toml, &imds).await;
    assert_passes(&run, "credentials of the instance's role (IMDSv2)");
    assert_no_secret(&run, &[garage.secret_key()]);
    let asked: Vec<String> = aws
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        asked.iter().any(|r| r == "PUT /latest/api/token"),
        "an IMDSv2 session first: {asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|r| r == "GET /latest/meta-data/iam/security-credentials/pixmesh-node"),
        "then the role's credentials: {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_table_reaches_every_role_that_sets_nothing() {
    let garage = Garage::start().await;
    let dir = TempDir::new().unwrap();
    let (reader, reader_secret) = garage.create_key("reader").await;
    garage
        .allow(garage.default_bucket(), &reader, true, false)
        .await;
    // Endpoint, region and the writing key only in [s3]; the storages name their bucket.
    let config = |photos_extra: &str, results_extra: &str| {
        format!(
            "[limits]\nstorage_timeout_ms = 5000\n\
             [s3]\nendpoint = \"{}\"\nregion = \"{}\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n\
             [storages.photos]\ntype = \"s3\"\nbucket = \"{bucket}\"\n{photos_extra}\n\
             [storages.results]\ntype = \"s3\"\nbucket = \"{bucket}\"\n{results_extra}\n\
             [result_storage]\nstorage = \"results\"\nbase_dir = \"renditions\"\n",
            garage.endpoint(),
            garage.region(),
            garage.access_key(),
            garage.secret_key(),
            bucket = garage.default_bucket(),
        )
    };
    let read_only =
        format!("access_key_id = \"{reader}\"\nsecret_access_key = \"{reader_secret}\"");
    let written = "ok   result_storage results: bucket images: wrote and deleted probe object";

    let run = check(dir.path(), &config("", ""), &[]).await;
    assert_passes(&run, "every role on the [s3] settings");
    assert!(run.output.contains(written), "{}", run.output);
    assert_no_secret(&run, &[garage.secret_key()]);

    // The loader's own read-only key: it still reads; the result role keeps the global key.
    let run = check(dir.path(), &config(&read_only, ""), &[]).await;
    assert_passes(&run, "the loader's own key");
    assert!(run.output.contains(written), "{}", run.output);

    // The result role's own read-only key wins over the global one: writing is refused.
    let run = check(dir.path(), &config("", &read_only), &[]).await;
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.output
            .contains("FAIL result_storage results: bucket images: PutObject")
            && run.output.contains("access denied"),
        "{}",
        run.output
    );
    assert_no_secret(&run, &[garage.secret_key(), &reader_secret]);

    // Without [s3], the same storages have no endpoint: AWS, unreachable from here.
    let bare = config("", "").replace(&format!("endpoint = \"{}\"\n", garage.endpoint()), "");
    let run = check(dir.path(), &bare, &[]).await;
    assert!(!run.ok, "{}", run.output);
}
