//! Starts a container of a (patched) Pod as a local process, the way the kubelet would, but
//! without a container runtime and without a shell: the command comes from the container's
//! `command`/`args` with `$(VAR)` expanded, the environment from `env` with downward-API
//! `fieldRef`s resolved against the Pod, and each volume mount becomes a directory under a
//! root the test owns (the process is told where through its path flags' environment).
//!
//! This is how the end-to-end test runs `kubevirt-bmc serve` "exactly as the injected
//! container spec says".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    #[error("the Pod has no container named {0:?} (among containers and initContainers)")]
    NoContainer(String),
    #[error("container {container:?} has neither command nor args the launcher can run")]
    NoCommand { container: String },
    #[error("env {name:?}: unsupported source {source_kind}")]
    UnsupportedEnv { name: String, source_kind: String },
    #[error("env {name:?}: fieldPath {path:?} is not one the kubelet resolves")]
    UnsupportedFieldPath { name: String, path: String },
    #[error("volume mount {mount:?} names volume {volume:?}, which the Pod does not declare")]
    MissingVolume { mount: String, volume: String },
}

/// What the kubelet knows that the Pod object alone does not.
#[derive(Debug, Clone)]
pub struct PodRuntime {
    pub name: String,
    pub uid: String,
    pub ip: String,
    pub node_name: String,
}

/// A container ready to start as a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    /// The base name of the container's executable (`kubevirt-bmc` for
    /// `/usr/local/bin/kubevirt-bmc`); the caller maps it to a built binary.
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// mountPath -> volume, for the caller to materialise.
    pub mounts: Vec<VolumeMount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub mount_path: String,
    pub volume: Value,
    pub read_only: bool,
}

/// Plans `container` of `pod`. `default_program` stands in for the image's entrypoint when
/// the container gives only `args` (the Dockerfile's ENTRYPOINT, which the test knows).
pub fn plan_container(
    pod: &Value,
    container: &str,
    runtime: &PodRuntime,
    default_program: &str,
) -> Result<ContainerPlan, LaunchError> {
    let spec = &pod["spec"];
    let found = ["initContainers", "containers"]
        .iter()
        .filter_map(|list| spec[list].as_array())
        .flatten()
        .find(|c| c["name"] == container)
        .ok_or_else(|| LaunchError::NoContainer(container.to_owned()))?;

    let mut env = BTreeMap::new();
    for entry in found["env"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(value) = entry.get("value") {
            expand(value.as_str().unwrap_or_default(), &env)
        } else if let Some(field_path) = entry.pointer("/valueFrom/fieldRef/fieldPath") {
            let path = field_path.as_str().unwrap_or_default();
            resolve_field(pod, runtime, path).ok_or_else(|| LaunchError::UnsupportedFieldPath {
                name: name.clone(),
                path: path.to_owned(),
            })?
        } else {
            let source_kind = entry["valueFrom"]
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_else(|| "(none)".to_owned());
            return Err(LaunchError::UnsupportedEnv { name, source_kind });
        };
        env.insert(name, value);
    }

    let strings = |key: &str| -> Vec<String> {
        found[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| expand(s, &env))
            .collect()
    };
    let mut command = strings("command");
    let args = strings("args");
    if command.is_empty() {
        command.push(default_program.to_owned());
    }
    let program_path = command.remove(0);
    let program = Path::new(&program_path)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| LaunchError::NoCommand {
            container: container.to_owned(),
        })?
        .to_owned();
    command.extend(args);

    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in found["volumeMounts"].as_array().into_iter().flatten() {
        let volume_name = mount["name"].as_str().unwrap_or_default();
        let mount_path = mount["mountPath"].as_str().unwrap_or_default().to_owned();
        let volume = volumes
            .iter()
            .find(|v| v["name"] == volume_name)
            .cloned()
            .ok_or_else(|| LaunchError::MissingVolume {
                mount: mount_path.clone(),
                volume: volume_name.to_owned(),
            })?;
        mounts.push(VolumeMount {
            mount_path,
            volume,
            read_only: mount["readOnly"] == true,
        });
    }
    Ok(ContainerPlan {
        program,
        args: command,
        env,
        mounts,
    })
}

/// The downward-API field paths the kubelet supports for env.
fn resolve_field(pod: &Value, runtime: &PodRuntime, path: &str) -> Option<String> {
    let bracketed = |prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(key.to_owned())
    };
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match path {
        "metadata.name" => Some(runtime.name.clone()),
        "metadata.namespace" => text(&pod["metadata"]["namespace"]),
        "metadata.uid" => Some(runtime.uid.clone()),
        "status.podIP" => Some(runtime.ip.clone()),
        "spec.nodeName" => Some(runtime.node_name.clone()),
        "spec.serviceAccountName" => text(&pod["spec"]["serviceAccountName"]),
        _ => {
            if let Some(key) = bracketed("metadata.annotations['") {
                Some(text(&pod["metadata"]["annotations"][key.as_str()]).unwrap_or_default())
            } else {
                bracketed("metadata.labels['")
                    .map(|key| text(&pod["metadata"]["labels"][key.as_str()]).unwrap_or_default())
            }
        }
    }
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes, unknown
/// references stay as written.
fn expand(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = env.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Where a mount path lands under the test's root directory.
pub fn host_path(root: &Path, mount_path: &str) -> PathBuf {
    root.join(mount_path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/fixtures")
            .join(name);
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn runtime() -> PodRuntime {
        PodRuntime {
            name: "virt-launcher-vm1-abcde".to_owned(),
            uid: "pod-uid".to_owned(),
            ip: "127.0.0.1".to_owned(),
            node_name: "node01".to_owned(),
        }
    }

    #[test]
    fn plans_the_injected_sidecar_of_the_captured_pod() {
        let pod = fixture("pod-vm1-injected.json");
        let plan = plan_container(&pod, "bmc", &runtime(), "/usr/local/bin/kubevirt-bmc").unwrap();
        assert_eq!(plan.program, "kubevirt-bmc");
        assert_eq!(plan.env["VM_NAME"], "vm1");
        assert_eq!(
            plan.env["POD_NAMESPACE"],
            pod["metadata"]["namespace"].as_str().unwrap()
        );
        assert_eq!(plan.env["POD_IP"], "127.0.0.1");
        assert_eq!(plan.env["SERVICE_ACCOUNT"], "vm1-bmc");
        let vmi_uid = pod["metadata"]["labels"]["kubevirt.io/created-by"]
            .as_str()
            .unwrap();
        assert_eq!(plan.env["VMI_UID"], vmi_uid);
        let paths: Vec<_> = plan.mounts.iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/var/run/secrets/kubernetes.io/serviceaccount",
                "/etc/kubevirt-bmc/credentials"
            ]
        );
        assert!(plan.mounts.iter().all(|m| m.read_only));
        assert_eq!(
            plan.mounts[1].volume["secret"]["secretName"],
            "vm1-bmc-credentials"
        );
    }

    #[test]
    fn unknown_container_and_unsupported_env_are_clear_errors() {
        let pod = fixture("pod-vm1-injected.json");
        assert_eq!(
            plan_container(&pod, "nope", &runtime(), "x"),
            Err(LaunchError::NoContainer("nope".to_owned()))
        );
        let mut pod = pod;
        pod["spec"]["initContainers"][2]["env"] = serde_json::json!([{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]);
        let error = plan_container(&pod, "bmc", &runtime(), "x").unwrap_err();
        assert!(
            matches!(error, LaunchError::UnsupportedEnv { .. }),
            "{error}"
        );
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let env = BTreeMap::from([("IP".to_owned(), "10.0.0.1".to_owned())]);
        assert_eq!(expand("$(IP):623", &env), "10.0.0.1:623");
        assert_eq!(expand("$$(IP)", &env), "$(IP)");
        assert_eq!(expand("$(NOPE)-$", &env), "$(NOPE)-$");
    }
}
