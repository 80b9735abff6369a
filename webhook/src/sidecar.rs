//! The `bmc` native sidecar and its volumes, built as k8s-openapi types so the patch is a valid
//! Pod fragment by construction. Env and mounts follow notes/SERVE_CONTRACT.md.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecretProjection, SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::inject::InjectionConfig;
use crate::names;

/// Where the sidecar binary lives in the image (see the Dockerfile).
pub const SIDECAR_COMMAND: &str = "/usr/local/bin/kubevirt-bmc";
/// The sidecar's own user and group, whatever the Pod's: distroless's `nonroot`. A root VMI
/// (KubeVirt's `Root` feature gate) renders the Pod with `runAsUser: 0`
/// (kubevirt pkg/virt-controller/services/template.go `computePodSecurityContext`), which
/// `runAsNonRoot` alone would inherit and the kubelet refuse, so `compute` never started.
pub const SIDECAR_UID: i64 = 65532;

pub struct SidecarSpec<'a> {
    pub config: &'a InjectionConfig,
    pub high_ports: bool,
    /// The Pod has an `fsGroup` (every container gets it as a supplementary group), so Secret
    /// files can be group-readable only.
    pub group_readable_secret: bool,
    pub vm: &'a str,
    /// The user's Secret named by `bmc.kubevirt.io/credentials-secret`, already validated.
    pub user_credentials: Option<&'a str>,
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

/// The installation's egress ranges, only when it set any (the sidecar's default is the
/// built-in rules alone).
fn egress_env(policy: &kubevirt_bmc_contract::egress::EgressPolicy) -> Vec<EnvVar> {
    use kubevirt_bmc_contract::egress::{ALLOW_ENV, DENY_ENV};
    let (allow, deny) = policy.to_env();
    [(ALLOW_ENV, allow), (DENY_ENV, deny)]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| value_env(name, &value))
        .collect()
}

/// Where the sidecar gets its serving certificate, and the CA it checks that server with (a
/// public certificate, fine in the Pod spec).
fn certificate_env(endpoint: Option<&crate::inject::CertificateEndpoint>) -> Vec<EnvVar> {
    use kubevirt_bmc_contract::certificate::{CLUSTER_DOMAIN_ENV, SIGNER_CA_ENV, SIGNER_URL_ENV};
    endpoint
        .map(|e| {
            vec![
                value_env(SIGNER_URL_ENV, &e.url),
                value_env(SIGNER_CA_ENV, &e.ca_pem),
                value_env(CLUSTER_DOMAIN_ENV, &e.cluster_domain),
            ]
        })
        .unwrap_or_default()
}

fn port(name: &str, number: u16, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        protocol: Some(protocol.to_owned()),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(names::HEALTH_PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

pub fn container(spec: &SidecarSpec<'_>) -> Container {
    let (ipmi, redfish) = if spec.high_ports {
        (names::IPMI_HIGH_PORT, names::REDFISH_HIGH_PORT)
    } else {
        (names::IPMI_PORT, names::REDFISH_PORT)
    };
    let quantities = BTreeMap::from([
        ("cpu".to_owned(), Quantity(spec.config.cpu.clone())),
        ("memory".to_owned(), Quantity(spec.config.memory.clone())),
    ]);
    Container {
        name: names::CONTAINER.to_owned(),
        image: Some(spec.config.image.clone()),
        image_pull_policy: Some(spec.config.image_pull_policy.clone()),
        command: Some(vec![SIDECAR_COMMAND.to_owned()]),
        args: Some(vec!["serve".to_owned()]),
        // Native sidecar: started before `compute`, so the BMC is up before QEMU.
        restart_policy: Some("Always".to_owned()),
        ports: Some(vec![
            port(names::IPMI_PORT_NAME, ipmi, "UDP"),
            port(names::REDFISH_PORT_NAME, redfish, "TCP"),
            port(names::HEALTH_PORT_NAME, names::HEALTH_PORT, "TCP"),
        ]),
        env: Some(
            vec![
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_NAMESPACE", "metadata.namespace"),
                field_env(
                    "VM_NAME",
                    &format!("metadata.annotations['{}']", names::DOMAIN_ANNOTATION),
                ),
                field_env("POD_IP", "status.podIP"),
                value_env("KUBEVIRT_BMC_IPMI_PORT", &ipmi.to_string()),
                value_env("KUBEVIRT_BMC_REDFISH_PORT", &redfish.to_string()),
                value_env(
                    "KUBEVIRT_BMC_HEALTH_LISTEN",
                    &format!("0.0.0.0:{}", names::HEALTH_PORT),
                ),
                value_env("KUBEVIRT_BMC_CREDENTIALS_DIR", names::CREDENTIALS_MOUNT),
                value_env("KUBEVIRT_BMC_TOKEN_DIR", names::TOKEN_MOUNT),
            ]
            .into_iter()
            .chain(egress_env(&spec.config.egress))
            .chain(certificate_env(spec.config.certificate.as_ref()))
            .chain(
                spec.user_credentials
                    .map(|name| value_env("KUBEVIRT_BMC_USER_CREDENTIALS", name)),
            )
            .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(quantities.clone()),
            limits: Some(quantities),
            ..Default::default()
        }),
        // Ready means "listeners bound", independent of the VM: a powered-off (paused) VM
        // still has a reachable BMC.
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_UID),
            run_as_group: Some(SIDECAR_UID),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: names::TOKEN_VOLUME.to_owned(),
                mount_path: names::TOKEN_MOUNT.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: names::CREDENTIALS_VOLUME.to_owned(),
                mount_path: names::CREDENTIALS_MOUNT.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}

fn secret_items(name: &str, keys: &[(&str, &str)]) -> VolumeProjection {
    VolumeProjection {
        secret: Some(SecretProjection {
            name: name.to_owned(),
            items: Some(
                keys.iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).to_owned(),
                        path: (*path).to_owned(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            optional: Some(true),
        }),
        ..Default::default()
    }
}

/// The token Secret of `<vm>-bmc` and the credentials, both mounted in `bmc` only and both
/// optional: a Pod with a stale opt-in whose Secrets do not exist (yet, or any more) must still
/// start, since compute never waits for the BMC; the sidecar then reports what is missing.
pub fn volumes(spec: &SidecarSpec<'_>) -> Vec<Volume> {
    // Files are root-owned: group-readable suffices when the Pod has an fsGroup; otherwise the
    // non-root sidecar needs world-read (the volumes are in `bmc` only).
    let mode = if spec.group_readable_secret {
        0o440
    } else {
        0o444
    };
    let token = Volume {
        name: names::TOKEN_VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(names::token_secret(spec.vm)),
            default_mode: Some(mode),
            optional: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let generated = names::credentials_secret(spec.vm);
    let credentials = match spec.user_credentials {
        None => Volume {
            name: names::CREDENTIALS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(generated),
                default_mode: Some(mode),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
        // The kubelet mounts the user's pair and its consent key next to our session key: the
        // controller never reads (or copies) a Secret it did not create.
        Some(user) => Volume {
            name: names::CREDENTIALS_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(mode),
                sources: Some(vec![
                    secret_items(
                        user,
                        &[
                            ("username", "username"),
                            ("password", "password"),
                            (names::CONSENT_KEY, names::CONSENT_FILE),
                        ],
                    ),
                    secret_items(
                        &generated,
                        &[(names::SECRET_SESSION_KEY, names::SECRET_SESSION_KEY)],
                    ),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    vec![token, credentials]
}
