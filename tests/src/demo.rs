//! What `scripts/run` (`pixmesh-demo`) serves and prints, shared with the test that requests
//! every URL it prints (`tests/tests/demo.rs`), so a printed link never answers an error.

use std::path::Path;

/// The demo's one route.
pub const ROUTE: &str = "/img/";

/// One [`ROUTE`] route on `storage`, unsigned URLs allowed, with `canonical_base` for `Link`.
pub fn open_route(storage: &str, canonical_base: &str) -> String {
    serde_json::json!({ "routes": [{
        "prefix": ROUTE, "storage": storage, "allow_unsafe": true,
        "canonical_base_url": canonical_base,
    }]})
    .to_string()
}

/// The sidecar configuration serving the directory `dir` as storage `samples`.
pub fn directory_sidecar(dir: &Path) -> String {
    format!(
        "[storages.samples]\ntype = \"local\"\nroot = {}\n",
        serde_json::to_string(&dir.display().to_string()).expect("a string serializes")
    )
}

/// The example URLs printed for image `name`: paths under [`ROUTE`].
pub fn example_paths(name: &str) -> Vec<String> {
    [
        "unsafe/fit-in/400x400/",
        "unsafe/300x300/filters:format(webp):quality(70)/",
        "unsafe/-200x0/filters:format(png)/",
        "unsafe/fit-in/400x400/filters:grayscale():rotate(90):fill(ffd700)/",
        "unsafe/300x0/filters:blur(8)/",
    ]
    .iter()
    .map(|options| format!("{ROUTE}{options}{name}"))
    .collect()
}

/// The JPEG, PNG and WebP files directly in `dir`, sorted.
pub fn image_names(dir: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut images: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            let n = n.to_ascii_lowercase();
            [".jpg", ".jpeg", ".png", ".webp"]
                .iter()
                .any(|ext| n.ends_with(ext))
        })
        .collect();
    images.sort();
    Ok(images)
}
