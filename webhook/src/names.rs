//! Names shared by the webhook, the controller, the manifests and the sidecar contract.
//!
//! The manifest test reads these, so a rename here that the YAML does not follow fails a test.

/// Prefix of every annotation we own.
pub const PREFIX: &str = "bmc.kubevirt.io/";
/// Opt-in, `"true"` or `"false"`: on the VM, on its template (what the webhook keys on) and so on
/// every launcher Pod; as a label `bmc.kubevirt.io/enabled=true` on a namespace.
pub const ENABLED: &str = "bmc.kubevirt.io/enabled";
/// Stamped on the Pod by the webhook: the injection happened (idempotency marker).
pub const INJECTED: &str = "bmc.kubevirt.io/injected";
/// Name of a user-owned Secret with `username` and `password` to use instead of generated ones.
pub const CREDENTIALS_SECRET: &str = "bmc.kubevirt.io/credentials-secret";
/// `ClusterIP` (default), `NodePort` or `LoadBalancer` for the `<vm>-bmc` Service.
pub const SERVICE_TYPE: &str = "bmc.kubevirt.io/service-type";
/// Controller-written summary on the VM: address, readiness, reason.
pub const STATUS: &str = "bmc.kubevirt.io/status";
/// Desired virtual media, written by the sidecar.
pub const MEDIA: &str = "bmc.kubevirt.io/media";
/// Import state of the virtual media, written by the controller.
pub const MEDIA_STATUS: &str = "bmc.kubevirt.io/media-status";
/// The user's `runStrategy` and `startStrategy` before opt-in, restored on opt-out.
pub const ORIGINAL: &str = "bmc.kubevirt.io/original";

/// Label KubeVirt puts on every launcher Pod; the webhook's objectSelector.
pub const LAUNCHER_LABEL: &str = "kubevirt.io";
pub const LAUNCHER_VALUE: &str = "virt-launcher";
/// Label carrying the VM name on launcher Pods; the Service selects on it.
pub const VM_NAME_LABEL: &str = "vm.kubevirt.io/name";
/// Annotation carrying the VM (domain) name on launcher Pods.
pub const DOMAIN_ANNOTATION: &str = "kubevirt.io/domain";
/// KubeVirt's doppelganger Pod that only binds WaitForFirstConsumer PVCs.
pub const EPHEMERAL_PROVISIONING: &str = "kubevirt.io/ephemeral-provisioning";

/// The sidecar container.
pub const CONTAINER: &str = "bmc";
pub const IPMI_PORT_NAME: &str = "ipmi";
pub const IPMI_PORT: u16 = 623;
pub const REDFISH_PORT_NAME: &str = "redfish";
pub const REDFISH_PORT: u16 = 443;
pub const HEALTH_PORT_NAME: &str = "health";
pub const HEALTH_PORT: u16 = 8623;
/// Ports used when the low-port sysctl is turned off; the Service targets ports by name.
pub const IPMI_HIGH_PORT: u16 = 10623;
pub const REDFISH_HIGH_PORT: u16 = 10443;
pub const TOKEN_VOLUME: &str = "bmc-token";
pub const TOKEN_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const CREDENTIALS_VOLUME: &str = "bmc-credentials";
pub const CREDENTIALS_MOUNT: &str = "/etc/kubevirt-bmc/credentials";
pub const LOW_PORT_SYSCTL: &str = "net.ipv4.ip_unprivileged_port_start";
/// CD-ROM disk and volume name on the VM for virtual media.
pub const MEDIA_DISK: &str = "bmc-media";

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

/// Per-VM object names.
pub fn service_account(vm: &str) -> String {
    format!("{vm}-bmc")
}
pub fn role(vm: &str) -> String {
    format!("{vm}-bmc")
}
pub fn service(vm: &str) -> String {
    format!("{vm}-bmc")
}
pub fn credentials_secret(vm: &str) -> String {
    format!("{vm}-bmc-credentials")
}
pub fn media_data_volume(vm: &str) -> String {
    format!("{vm}-bmc-media")
}

/// One RBAC rule of the per-VM Role, as (apiGroup, resources, verbs); every rule is limited to
/// `resourceNames: [<vm>]`. Exactly what the sidecar calls (fixtures/README "RBAC with resourceNames").
pub type Rule = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);
pub const VM_ROLE_RULES: &[Rule] = &[
    (
        "kubevirt.io",
        &["virtualmachines"],
        &["get", "list", "watch", "patch"],
    ),
    (
        "kubevirt.io",
        &["virtualmachineinstances"],
        &["get", "list", "watch"],
    ),
    (
        "subresources.kubevirt.io",
        &[
            "virtualmachines/start",
            "virtualmachines/stop",
            "virtualmachines/restart",
        ],
        &["update"],
    ),
    (
        "subresources.kubevirt.io",
        &[
            "virtualmachineinstances/pause",
            "virtualmachineinstances/unpause",
            "virtualmachineinstances/reset",
            "virtualmachineinstances/softreboot",
        ],
        &["update"],
    ),
    // Serial over LAN: the VMI's serial console (a WebSocket GET).
    (
        "subresources.kubevirt.io",
        &["virtualmachineinstances/console"],
        &["get"],
    ),
];

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
        &["serviceaccounts", "secrets", "services"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "rbac.authorization.k8s.io",
        &["roles", "rolebindings"],
        &["get", "create", "patch", "delete"],
    ),
    ("events.k8s.io", &["events"], &["create", "patch"]),
    (
        "cdi.kubevirt.io",
        &["datavolumes"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
];
/// Secret the serving certificate lives in (cert-manager Certificate / self-signed generator).
pub const TLS_SECRET: &str = "kubevirt-bmc-webhook-tls";
