//! The S3 behaviours Garage cannot show, against moto, which keeps what Garage ignores: object
//! versions (imgproxy's `s3://BUCKET/KEY?VERSION`, through the whole stack) and the storage
//! class, canned ACL and tags of renditions written to result storage, read back with the S3 API.

use std::sync::Arc;

use aws_sdk_s3::types::{Permission, StorageClass, Type};
use image::GenericImageView;
use pixmesh_proto::v1;
use pixmesh_proto::v1::image_service_server::ImageService as _;
use pixmesh_sidecar::config::Config;
use pixmesh_sidecar::serving::{grpc::ImageService, state::Renderer};
use pixmesh_tests::{Moto, Stack, eventually, tools};

/// `fit-in/100x100` of medium.jpg (1280x800) and of flower.webp (480x360).
const MEDIUM_100: (u32, u32) = (100, 63);
const FLOWER_100: (u32, u32) = (100, 75);
/// The group every anonymous client belongs to, as S3 ACLs name it.
const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";

/// The dimensions of a rendered image.
fn dims(bytes: &[u8]) -> (u32, u32) {
    image::load_from_memory(bytes)
        .expect("an image")
        .dimensions()
}

/// `s` percent-encoded for an imgproxy `plain/` source: everything but unreserved characters.
fn escaped(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_object_version_renders_through_the_stack() {
    let moto = Moto::start().await;
    moto.create_versioned_bucket("images").await;
    moto.create_bucket("results").await;
    let v1 = moto
        .put("images", "a.jpg", tools::test_image("medium.jpg"))
        .await;
    let v2 = moto
        .put("images", "a.jpg", tools::test_image("flower.webp"))
        .await;
    let (v1, v2) = (v1.expect("a version ID"), v2.expect("a version ID"));
    assert_ne!(v1, v2);

    let sidecar = format!(
        "{}{}[result_storage]\nstorage = \"results\"\nbase_dir = \"r\"\n",
        moto.storage_toml("photos", "images", ""),
        moto.storage_toml("results", "results", ""),
    );
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true,
          "handles": { "images": "photos" } },
    ]});
    let stack = Stack::builder(&filter.to_string(), &sidecar).start().await;
    let stack = &stack;
    let get = |source: String| {
        let path = format!("/ip/insecure/rs:fit:100:100/plain/{}", escaped(&source));
        async move { stack.get(&path, &[]).await }
    };

    let first = get(format!("s3://images/a.jpg?{v1}")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(dims(&first.body), MEDIUM_100, "version 1 is medium.jpg");
    let second = get(format!("s3://images/a.jpg?{v2}")).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(dims(&second.body), FLOWER_100, "version 2 is flower.webp");
    assert_ne!(first.header("etag"), second.header("etag"));
    let current = get("s3://images/a.jpg".to_owned()).await;
    assert_eq!(
        dims(&current.body),
        FLOWER_100,
        "no version: the current one"
    );
    assert_ne!(current.header("etag"), second.header("etag"));

    // Each version has its own rendition in result storage, and serving from there keeps them
    // apart; S3's own spelling of the version names the same rendition.
    eventually("three renditions in result storage", || async {
        moto.list("results", "r/").await.len() == 3
    })
    .await;
    let again = get(format!("s3://images/a.jpg?versionId={v1}")).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(dims(&again.body), MEDIUM_100);
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(moto.list("results", "r/").await.len(), 3);

    let unknown = get("s3://images/a.jpg?no-such-version".to_owned()).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    // Deleting the object only adds a delete marker: its versions still render, and the marker,
    // asked for as a version, is not found (moto answers 404; S3's 405 is unit-tested in
    // pixmesh-sidecar's storage tests).
    let deleted = moto
        .s3_client()
        .delete_object()
        .bucket("images")
        .key("a.jpg")
        .send();
    let marker = deleted
        .await
        .expect("delete")
        .version_id()
        .map(str::to_owned);
    let marker = marker.expect("a delete marker");
    let kept = get(format!("s3://images/a.jpg?{v2}")).await;
    assert_eq!(kept.status, 200, "{}", kept.text());
    let marked = get(format!("s3://images/a.jpg?{marker}")).await;
    assert_eq!(marked.status, 404, "{}", marked.text());
}

/// The in-process service for `toml`, and its renderer.
async fn service(toml: &str) -> (ImageService, Arc<Renderer>) {
    let config = Config::from_toml(toml).unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    let renderer = Arc::new(
        pixmesh_sidecar::serving::renderer(&config)
            .await
            .expect("renderer"),
    );
    (
        pixmesh_tests::vouch::service(Arc::clone(&renderer)),
        renderer,
    )
}

/// Renders `photos`/`a.jpg` at `fit-in/100x100` and returns the key of its rendition in
/// `results`, the only object there.
async fn render_into(moto: &Moto, svc: &ImageService, results: &str) -> String {
    let request = v1::RenderRequest {
        storage: "photos".into(),
        key: "a.jpg".into(),
        width: 100,
        height: 100,
        fit: v1::Fit::FitIn.into(),
        ..Default::default()
    };
    let rendered = svc
        .render_unary(pixmesh_tests::vouch::vouched(request))
        .await
        .expect("render")
        .into_inner();
    assert_eq!(dims(&rendered.data), MEDIUM_100);
    // report_errors: the write is done before the response.
    let keys = moto.list(results, "").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys.into_iter().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renditions_keep_their_storage_class_acl_and_tags_and_get_none_unasked() {
    let moto = Moto::start().await;
    for bucket in ["images", "dressed", "plain"] {
        moto.create_bucket(bucket).await;
    }
    moto.put("images", "a.jpg", tools::test_image("medium.jpg"))
        .await;
    let config = |bucket: &str, writes: &str| {
        format!(
            "{}{}[result_storage]\nstorage = \"results\"\nreport_errors = true\n",
            moto.storage_toml("photos", "images", ""),
            moto.storage_toml("results", bucket, writes),
        )
    };
    let writes = "storage_class = \"STANDARD_IA\"\nacl = \"public-read\"\n\
                  tagging = \"source=pixmesh&lifecycle=derived\"";
    let (dressed, _) = service(&config("dressed", writes)).await;
    let (plain, _) = service(&config("plain", "")).await;
    let s3 = moto.s3_client();

    let key = render_into(&moto, &dressed, "dressed").await;
    let object = s3.get_object().bucket("dressed").key(&key).send().await;
    let object = object.expect("rendition written");
    assert_eq!(object.storage_class(), Some(&StorageClass::StandardIa));
    let tags = s3.get_object_tagging().bucket("dressed").key(&key).send();
    let tags = tags.await.expect("tags");
    let mut tags: Vec<(&str, &str)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    tags.sort();
    assert_eq!(tags, [("lifecycle", "derived"), ("source", "pixmesh")]);
    let acl = s3.get_object_acl().bucket("dressed").key(&key).send();
    let acl = acl.await.expect("ACL");
    let public_read = acl.grants().iter().any(|g| {
        g.permission() == Some(&Permission::Read)
            && g.grantee()
                .is_some_and(|who| who.r#type() == &Type::Group && who.uri() == Some(ALL_USERS))
    });
    assert!(public_read, "public-read grants everyone READ: {acl:?}");

    // Unset, nothing is sent: the bucket's defaults apply (standard class, owner-only, no tags).
    let key = render_into(&moto, &plain, "plain").await;
    let object = s3.get_object().bucket("plain").key(&key).send().await;
    let class = object.expect("rendition written").storage_class().cloned();
    assert!(
        matches!(class, None | Some(StorageClass::Standard)),
        "{class:?}"
    );
    let tags = s3.get_object_tagging().bucket("plain").key(&key).send();
    assert!(tags.await.expect("tags").tag_set().is_empty());
    let acl = s3.get_object_acl().bucket("plain").key(&key).send();
    let acl = acl.await.expect("ACL");
    let grantees: Vec<_> = acl.grants().iter().filter_map(|g| g.grantee()).collect();
    assert!(
        grantees
            .iter()
            .all(|who| who.r#type() == &Type::CanonicalUser),
        "owner only: {acl:?}"
    );
}
