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
/// Where the `bmc` container (and only it) gets the token Secret of `<vm>-bmc`: never the
/// Pod's default token path, which KubeVirt copies into the guest and other containers get.
pub const TOKEN_MOUNT: &str = "/var/run/secrets/kubevirt-bmc/serviceaccount";
pub const CREDENTIALS_VOLUME: &str = "bmc-credentials";
/// Where the sidecar reads `username`, `password` and `session-key` (its `--credentials-dir`).
pub const CREDENTIALS_MOUNT: &str = "/etc/kubevirt-bmc/credentials";
/// Key a user's credentials Secret must carry, listing (comma-separated) the VMs its owner lets
/// use it. The sidecar checks it from the mounted file [`CONSENT_FILE`]: the controller never
/// reads a user's Secret, so consent is proven by the one who can write the Secret.
pub const CONSENT_KEY: &str = "kubevirt-bmc-vms";
/// File name of [`CONSENT_KEY`] inside [`CREDENTIALS_MOUNT`].
pub const CONSENT_FILE: &str = "consent-vms";
/// Secret type and annotation of a token Secret (kubernetes pkg/apis/core/types.go
/// `SecretTypeServiceAccountToken`, `ServiceAccountNameKey`, `ServiceAccountUIDKey`).
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const SERVICE_ACCOUNT_NAME_KEY: &str = "kubernetes.io/service-account.name";
pub const SERVICE_ACCOUNT_UID_KEY: &str = "kubernetes.io/service-account.uid";
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
/// The token Secret of `<vm>-bmc`, filled by kube-controller-manager's token controller.
pub fn token_secret(vm: &str) -> String {
    format!("{vm}-bmc-token")
}
pub fn media_data_volume(vm: &str) -> String {
    format!("{vm}-bmc-media")
}

/// Keys of the credentials Secret: the controller writes them, the sidecar reads them as files
/// under [`CREDENTIALS_MOUNT`], `kubectl bmc` hands them to installers.
pub const SECRET_USERNAME: &str = "username";
pub const SECRET_PASSWORD: &str = "password";

/// The one Redfish System a VM's BMC serves: the sidecar names it after the VM
/// (sidecar `machine::kubevirt` inventory name, `redfish::models::Ids::system_uri`).
pub fn redfish_system_path(vm: &str) -> String {
    format!("/redfish/v1/Systems/{vm}")
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
