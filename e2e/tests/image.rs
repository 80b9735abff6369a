//! No Docker engine runs here, so the Dockerfile is checked against the workspace instead:
//! every binary it copies exists under that name, lands where the manifests expect it, and
//! the runtime image runs as non-root without a shell.

use std::path::Path;

fn workspace_file(path: &str) -> String {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(top.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn binary_names(manifest: &str) -> Vec<String> {
    let value: toml_like::Doc = toml_like::parse(manifest);
    value.bin_names
}

/// Just enough TOML reading for `[[bin]] name = "..."`, to avoid a TOML dependency.
mod toml_like {
    pub struct Doc {
        pub bin_names: Vec<String>,
    }
    pub fn parse(text: &str) -> Doc {
        let mut in_bin = false;
        let mut bin_names = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(value) = line.strip_prefix("name = ") {
                bin_names.push(value.trim_matches('"').to_owned());
            }
        }
        Doc { bin_names }
    }
}

#[test]
fn dockerfile_builds_and_copies_both_binaries_by_their_real_names() {
    let dockerfile = workspace_file("Dockerfile");
    let mut binaries = binary_names(&workspace_file("sidecar/Cargo.toml"));
    binaries.extend(binary_names(&workspace_file("webhook/Cargo.toml")));
    assert_eq!(binaries, ["kubevirt-bmc", "kubevirt-bmc-webhook"]);
    for binary in &binaries {
        assert!(
            dockerfile.contains(&format!("--bin {binary}")),
            "not built: {binary}"
        );
        let copy = format!("release/{binary} /usr/local/bin/{binary}\n");
        assert!(
            dockerfile.contains(&copy),
            "not copied to /usr/local/bin: {binary}"
        );
    }
}

#[test]
fn runtime_image_is_static_non_root_and_shell_free() {
    let dockerfile = workspace_file("Dockerfile");
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        runtime.starts_with("gcr.io/distroless/static"),
        "runtime stage: {runtime}"
    );
    assert!(
        dockerfile.contains("x86_64-unknown-linux-musl"),
        "static musl build"
    );
    assert!(runtime.contains("USER 65532:65532"), "non-root user");
    assert!(
        !runtime.contains("RUN "),
        "the runtime stage has no shell to run anything"
    );
    assert!(
        runtime.contains("ENTRYPOINT [\""),
        "exec-form entrypoint needs no shell"
    );
}
