//! Names of the installation (manifests/base): the webhook's paths and port, its namespace and
//! configurations, the controller's rights. What the controller and the sidecar share (per-VM
//! object names, the sidecar's ports and mounts) is the contract crate's, re-exported here so
//! the webhook reads every name from one module.
//!
//! The manifest test reads these, so a rename here that the YAML does not follow fails a test.

pub use kubevirt_bmc_contract::names::*;

/// Webhook HTTP paths, as registered in the webhook configurations.
pub const MUTATE_PODS_PATH: &str = "/mutate-pods";
pub const VALIDATE_VMS_PATH: &str = "/validate-virtualmachines";
/// Port the webhook's HTTPS server listens on in the Pod (the Service maps 443 to it).
pub const WEBHOOK_PORT: u16 = 8443;
/// Install names (manifests/base).
pub const INSTALL_NAMESPACE: &str = "kubevirt-bmc";
pub const WEBHOOK_NAME: &str = "kubevirt-bmc-webhook";
pub const MUTATING_WEBHOOK: &str = "pods.bmc.kubevirt.io";
pub const VALIDATING_WEBHOOK: &str = "virtualmachines.bmc.kubevirt.io";
/// Field manager for server-side apply by the controller.
pub const FIELD_MANAGER: &str = "kubevirt-bmc-controller";

/// The controller's ClusterRole (manifests/base/rbac.yaml), rule by rule. It holds the per-VM
/// Role's rules (RBAC refuses to grant what the granter lacks) plus what it reads and writes.
pub const CONTROLLER_RULES: &[Rule] = &[
    VM_ROLE_RULES[0],
    VM_ROLE_RULES[1],
    VM_ROLE_RULES[2],
    VM_ROLE_RULES[3],
    VM_ROLE_RULES[4],
    ("", &["namespaces"], &["get", "list", "watch"]),
    ("", &["pods"], &["list", "watch"]),
    (
        "",
        &["serviceaccounts", "services"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // Create only, never read: see manifests/base/rbac.yaml.
    ("", &["secrets"], &["create"]),
    (
        "rbac.authorization.k8s.io",
        &["roles", "rolebindings"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("events.k8s.io", &["events"], &["create", "patch"]),
    (
        "cdi.kubevirt.io",
        &["datavolumes"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    ),
    // Who a sidecar's certificate request comes from (crate::certs).
    ("authentication.k8s.io", &["tokenreviews"], &["create"]),
];
/// Secret the serving certificate lives in (cert-manager Certificate / self-signed generator).
pub const TLS_SECRET: &str = "kubevirt-bmc-webhook-tls";
