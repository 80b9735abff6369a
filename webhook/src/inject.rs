//! The injection decision: a launcher Pod and the configuration in, skip / deny / patch out.
//! Pure: no API call on the admission path (the Pod carries everything we need).

use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::annotations;
use crate::launcher_pod::{LauncherPod, SpecView};
use crate::names;
use crate::sidecar;

/// What the webhook puts into the Pod; from flags, so an operator can tune it.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectionConfig {
    pub image: String,
    pub image_pull_policy: String,
    /// Used for both requests and limits: guaranteed-QoS VMs (dedicated CPUs) reject a Pod
    /// with any container whose requests differ from its limits.
    pub cpu: String,
    pub memory: String,
    /// Add `net.ipv4.ip_unprivileged_port_start=0` so the non-root sidecar binds 623 and 443;
    /// without it the sidecar listens on high ports and the Service maps the standard ones.
    pub low_port_sysctl: bool,
    /// Where the sidecar may send requests on a Redfish user's behalf (event destinations,
    /// media images) beyond its built-in rules; passed to it as environment.
    pub egress: kubevirt_bmc_contract::egress::EgressPolicy,
    /// Where the sidecar asks for its serving certificate; `None`: it serves a self-signed one.
    pub certificate: Option<CertificateEndpoint>,
}

/// The controller's signing endpoint as the sidecar needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateEndpoint {
    pub url: String,
    /// PEM bundle the sidecar verifies that URL's server with.
    pub ca_pem: String,
    pub cluster_domain: String,
}

impl InjectionConfig {
    pub fn test() -> Self {
        InjectionConfig {
            image: "example.org/kubevirt-bmc:dev".to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            cpu: "50m".to_owned(),
            memory: "64Mi".to_owned(),
            low_port_sysctl: true,
            egress: Default::default(),
            certificate: None,
        }
    }
}

/// Why a Pod was left alone; a bounded set, used as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NotLauncher,
    NotOptedIn,
    OptedOut,
    EphemeralProvisioning,
    AlreadyInjected,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotLauncher => "not-launcher",
            SkipReason::NotOptedIn => "not-opted-in",
            SkipReason::OptedOut => "opted-out",
            SkipReason::EphemeralProvisioning => "ephemeral-provisioning",
            SkipReason::AlreadyInjected => "already-injected",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Skip(SkipReason),
    /// Only ever for a Pod that carries one of our annotations with a bad value.
    Deny(String),
    Patch {
        patch: Patch,
        /// Shown by the client that created the Pod (virt-controller logs them).
        warnings: Vec<String>,
        vm: String,
    },
}

pub fn decide(pod: &Pod, config: &InjectionConfig) -> Decision {
    decide_launcher(&LauncherPod::from(pod), config)
}

/// The decision on the fields admission actually reads (see `launcher_pod`).
pub fn decide_launcher(pod: &LauncherPod, config: &InjectionConfig) -> Decision {
    let meta = &pod.metadata;
    let empty = Default::default();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    // The objectSelector already narrows to launcher Pods; checked again so a widened selector
    // can never make us touch other workloads.
    if labels.get(names::LAUNCHER_LABEL).map(String::as_str) != Some(names::LAUNCHER_VALUE) {
        return Decision::Skip(SkipReason::NotLauncher);
    }
    match annotations::enabled(annotations) {
        Err(e) => return Decision::Deny(e.to_string()),
        Ok(None) => return Decision::Skip(SkipReason::NotOptedIn),
        Ok(Some(false)) => return Decision::Skip(SkipReason::OptedOut),
        Ok(Some(true)) => {}
    }
    if annotations.contains_key(names::EPHEMERAL_PROVISIONING) {
        return Decision::Skip(SkipReason::EphemeralProvisioning);
    }
    let no_spec = SpecView::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let has_bmc = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .any(|c| c.name == names::CONTAINER);
    if has_bmc || annotations.contains_key(annotations::INJECTED) {
        return Decision::Skip(SkipReason::AlreadyInjected);
    }
    let Some(vm) = annotations
        .get(names::DOMAIN_ANNOTATION)
        .or_else(|| labels.get(names::VM_NAME_LABEL))
        .filter(|vm| !vm.is_empty())
        .cloned()
    else {
        return Decision::Deny(format!(
            "{} is \"true\" but the Pod has neither the {} annotation nor the {} label, so the BMC cannot tell which VM it serves",
            annotations::ENABLED,
            names::DOMAIN_ANNOTATION,
            names::VM_NAME_LABEL
        ));
    };
    // Every operation of the patch adds under /spec: on a Pod without one the API server would
    // fail the whole patch with a 500 ("doc is missing path") that tells its creator nothing.
    if pod.spec.is_none() {
        return Decision::Deny(format!(
            "{} is \"true\" but the Pod has no spec, so there is nothing to add the BMC sidecar to",
            annotations::ENABLED
        ));
    }
    for taken in [names::TOKEN_VOLUME, names::CREDENTIALS_VOLUME] {
        if spec.volumes.iter().flatten().any(|v| v.name == taken) {
            return Decision::Deny(format!(
                "{} is \"true\" but the Pod already has a volume named {taken:?}, which the BMC sidecar needs; rename that volume",
                annotations::ENABLED
            ));
        }
    }

    let mut warnings = Vec::new();
    let mut ops = Vec::new();
    let security = spec.security_context.clone().unwrap_or_default();
    // The VM template carries the user's Secret name down to its Pods (the controller copies
    // it there). A bad name in a volume would make the API server refuse the whole Pod, so it
    // is left out with a warning instead: compute never waits for the BMC.
    let user_credentials = match annotations::credentials_secret(annotations) {
        Ok(name) => name,
        Err(e) => {
            warnings.push(format!(
                "{e}; the BMC sidecar mounts no user credentials and will report it"
            ));
            None
        }
    };
    let sidecar_spec = sidecar::SidecarSpec {
        config,
        high_ports: !config.low_port_sysctl,
        group_readable_secret: security.fs_group.is_some(),
        vm: &vm,
        user_credentials: user_credentials.as_deref(),
    };
    let container = serde_json::to_value(sidecar::container(&sidecar_spec))
        .expect("a Container always serialises");
    ops.push(add_to_array(
        "/spec/initContainers",
        spec.init_containers.is_some(),
        container,
    ));
    let volumes = sidecar::volumes(&sidecar_spec)
        .into_iter()
        .map(|v| serde_json::to_value(v).expect("a Volume always serialises"));
    let mut volumes_exist = spec.volumes.is_some();
    for volume in volumes {
        ops.push(add_to_array("/spec/volumes", volumes_exist, volume));
        volumes_exist = true;
    }
    // The Pod's service account is KubeVirt's to choose and never ours to change: with a
    // `serviceAccount` volume (or Istio) KubeVirt mounts that account's token and virt-launcher
    // copies it into the guest (kubevirt pkg/virt-controller/services/rendervolumes.go,
    // pkg/config/service-account.go), so the BMC's identity lives in the `bmc` container only.

    if config.low_port_sysctl {
        let sysctl = json!({"name": names::LOW_PORT_SYSCTL, "value": "0"});
        match (&spec.security_context, &security.sysctls) {
            (None, _) => ops.push(add("/spec/securityContext", json!({"sysctls": [sysctl]}))),
            (Some(_), None) => ops.push(add("/spec/securityContext/sysctls", json!([sysctl]))),
            (Some(_), Some(sysctls)) => {
                match sysctls.iter().find(|s| s.name == names::LOW_PORT_SYSCTL) {
                    None => ops.push(add("/spec/securityContext/sysctls/-", sysctl)),
                    Some(existing) => {
                        if existing.value.parse::<u32>().map_or(true, |start| {
                            start > u32::from(names::REDFISH_PORT.min(names::IPMI_PORT))
                        }) {
                            warnings.push(format!(
                            "Pod already sets {}={:?}, which keeps the non-root BMC sidecar from binding ports {} and {}; left unchanged",
                            names::LOW_PORT_SYSCTL, existing.value, names::IPMI_PORT, names::REDFISH_PORT
                        ));
                        }
                    }
                }
            }
        }
    }

    ops.push(add(
        &format!("/metadata/annotations/{}", escape(annotations::INJECTED)),
        json!("true"),
    ));
    Decision::Patch {
        patch: Patch(ops),
        warnings,
        vm,
    }
}

/// `add .../-` fails on a missing array (the API server answers 500 "doc is missing path"), so
/// a missing array is created whole.
fn add_to_array(path: &str, exists: bool, value: Value) -> PatchOperation {
    if exists {
        add(&format!("{path}/-"), value)
    } else {
        add(path, Value::Array(vec![value]))
    }
}

fn add(path: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: path.parse().expect("static JSON pointers are valid"),
        value,
    })
}

/// RFC 6901 escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
