#![allow(dead_code)]

pub mod tls;

use std::path::PathBuf;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../e2e/testdata/fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> serde_json::Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture_pod(name: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(fixture(name)).unwrap()
}
