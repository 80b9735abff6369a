//! Names both sides derive the same way: the per-VM objects the controller creates and the
//! sidecar uses, the sidecar container's ports and mounts, and the KubeVirt labels we key on.

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
/// Where the sidecar reads `username`, `password` and `session-key` (its `--credentials-dir`).
pub const CREDENTIALS_MOUNT: &str = "/etc/kubevirt-bmc/credentials";
pub const LOW_PORT_SYSCTL: &str = "net.ipv4.ip_unprivileged_port_start";
/// CD-ROM disk and volume name on the VM for virtual media.
pub const MEDIA_DISK: &str = "bmc-media";

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
