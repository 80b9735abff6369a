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

/// Label the controller writes into an opted-in VM's template, so KubeVirt copies it onto the
/// launcher Pod (virt-controller `pkg/virt-controller/services/template.go`, `podLabels`: every
/// VMI label goes onto the Pod): the webhook's objectSelector matches only these Pods. The
/// same key as the opt-in annotation; the annotation stays the authority.
pub const OPT_IN_LABEL: &str = crate::annotations::ENABLED;
pub const OPT_IN_VALUE: &str = "true";
/// Label naming the VM on its launcher Pod and on every per-VM object, with [`vm_label`] as
/// value; the Service selects on it. KubeVirt's own `vm.kubevirt.io/name` cannot serve: it is
/// the VM's hostname (`pkg/util/net/dns` `SanitizeHostname`: the first DNS label of the name cut
/// to 63 characters, or `spec.hostname` when set), not its name.
pub const VM_LABEL: &str = "bmc.kubevirt.io/vm";

const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;
/// `-` and 8 hex digits.
const HASH_LEN: usize = 9;

/// FNV-1a, 32 bits: stable across releases and platforms (std's hasher is not), so the
/// controller, the webhook and the sidecar of any version derive the same names.
fn hash(vm: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in vm.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

fn is_label(name: &str, max: usize, letter_first: bool) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && (!letter_first || bytes[0].is_ascii_lowercase())
}

fn is_subdomain(name: &str) -> bool {
    name.len() <= SUBDOMAIN_MAX && name.split('.').all(|l| is_label(l, LABEL_MAX, false))
}

/// `<vm><suffix>` when that is valid; otherwise the VM name made valid and cut to fit, then
/// `<suffix>-<hash of the whole VM name>`. A derived name ends in 8 hex digits and a plain one
/// in the suffix (which holds letters that are not hex digits), so the two never meet, and the
/// hash keeps two long names with the same beginning apart.
fn derive(
    vm: &str,
    suffix: &str,
    valid: fn(&str) -> bool,
    max: usize,
    letter_first: bool,
) -> String {
    let plain = format!("{vm}{suffix}");
    if valid(&plain) {
        return plain;
    }
    let mut base: String = vm
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if letter_first && !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "vm-");
    }
    base.truncate(max.saturating_sub(suffix.len() + HASH_LEN));
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "vm" } else { base };
    format!("{base}{suffix}-{}", hash(vm))
}

/// A derived name is one DNS label (dots become dashes), so at most 63 characters even where
/// a subdomain of 253 is allowed.
fn subdomain(vm: &str, suffix: &str) -> String {
    derive(vm, suffix, is_subdomain, LABEL_MAX, false)
}

/// Per-VM object names: pure functions of the VM name, so the controller (which creates the
/// objects), the webhook (which names the ServiceAccount and Secret in the Pod) and users reading
/// the VM's status annotation agree without a lookup. Valid for every VM name (a DNS-1123
/// subdomain of up to 253 characters, possibly starting with a digit).
pub fn service_account(vm: &str) -> String {
    subdomain(vm, "-bmc")
}
pub fn role(vm: &str) -> String {
    subdomain(vm, "-bmc")
}
/// A Service name is a DNS-1035 label: a letter first, at most 63 characters, no dots.
pub fn service(vm: &str) -> String {
    derive(
        vm,
        "-bmc",
        |n| is_label(n, LABEL_MAX, true),
        LABEL_MAX,
        true,
    )
}
pub fn credentials_secret(vm: &str) -> String {
    subdomain(vm, "-bmc-credentials")
}
/// The token Secret of `<vm>-bmc`, filled by kube-controller-manager's token controller.
pub fn token_secret(vm: &str) -> String {
    subdomain(vm, "-bmc-token")
}
/// CDI accepts DataVolume names up to 253 characters (`validateDataVolumeName` in
/// pkg/apiserver/webhooks/datavolume-validate.go).
pub fn media_data_volume(vm: &str) -> String {
    subdomain(vm, "-bmc-media")
}
/// Value of [`VM_LABEL`]: the VM name when it is a valid label value (at most 63 characters),
/// otherwise its first 54 characters and a hash.
pub fn vm_label(vm: &str) -> String {
    let valid = |v: &str| {
        v.len() <= LABEL_MAX
            && v.split('.').all(|l| !l.is_empty())
            && is_label(&v.replace('.', "-"), LABEL_MAX, false)
    };
    if valid(vm) {
        return vm.to_owned();
    }
    derive(vm, "", valid, LABEL_MAX, false)
}

/// Every per-VM object name of one VM, as recorded in the VM's status annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectNames {
    pub service_account: String,
    pub role: String,
    pub role_binding: String,
    pub secret: String,
    pub service: String,
    pub data_volume: String,
    /// Value of the `bmc.kubevirt.io/vm` label on the launcher Pod and the objects.
    pub label: String,
}

impl ObjectNames {
    pub fn of(vm: &str) -> ObjectNames {
        ObjectNames {
            service_account: service_account(vm),
            role: role(vm),
            role_binding: role(vm),
            secret: credentials_secret(vm),
            service: service(vm),
            data_volume: media_data_volume(vm),
            label: vm_label(vm),
        }
    }
}

/// Keys of the credentials Secret: the controller writes them, the sidecar reads them as files
/// under [`CREDENTIALS_MOUNT`], `kubectl bmc` hands them to installers.
pub const SECRET_USERNAME: &str = "username";
pub const SECRET_PASSWORD: &str = "password";
/// The key that signs Redfish session tokens, so every sidecar of the VM accepts them.
pub const SECRET_SESSION_KEY: &str = "session-key";

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

#[cfg(test)]
mod tests {
    use super::*;

    fn dns1035(name: &str) -> bool {
        is_label(name, LABEL_MAX, true)
    }

    #[test]
    fn short_names_keep_the_plain_form() {
        assert_eq!(service("vm1"), "vm1-bmc");
        assert_eq!(service_account("vm1"), "vm1-bmc");
        assert_eq!(credentials_secret("vm1"), "vm1-bmc-credentials");
        assert_eq!(media_data_volume("vm1"), "vm1-bmc-media");
        assert_eq!(vm_label("vm1"), "vm1");
    }

    #[test]
    fn a_name_starting_with_a_digit_gets_a_valid_service() {
        let name = service("1node");
        assert!(dns1035(&name), "{name}");
        // Pinned: a name that changed between releases would orphan the objects it names.
        assert_eq!(name, "vm-1node-bmc-128fd158");
        // The other objects accept a digit first: unchanged.
        assert_eq!(service_account("1node"), "1node-bmc");
        assert_eq!(vm_label("1node"), "1node");
    }

    #[test]
    fn long_and_dotted_names_get_valid_stable_distinct_names() {
        let n63 = format!("a{}", "b".repeat(62));
        let n64 = format!("a{}", "b".repeat(63));
        let n253 = format!(
            "{}.{}.{}.{}",
            "c".repeat(63),
            "d".repeat(63),
            "e".repeat(63),
            "f".repeat(61)
        );
        assert_eq!(n253.len(), 253);
        let n253b = format!(
            "{}.{}.{}.{}",
            "c".repeat(63),
            "d".repeat(63),
            "e".repeat(63),
            "g".repeat(61)
        );
        for vm in [
            &n63,
            &n64,
            &n253,
            &n253b,
            &"a.b".to_owned(),
            &"x.y-z".to_owned(),
        ] {
            let names = ObjectNames::of(vm);
            assert!(dns1035(&names.service), "{vm}: {}", names.service);
            for n in [
                &names.service_account,
                &names.secret,
                &names.data_volume,
                &names.role,
            ] {
                assert!(is_subdomain(n), "{vm}: {n}");
            }
            assert!(names.label.len() <= LABEL_MAX, "{vm}: {}", names.label);
            assert_eq!(names, ObjectNames::of(vm), "stable");
        }
        // 63 characters: a valid label value as is, but `-bmc` makes the Service too long.
        assert_eq!(vm_label(&n63), n63);
        assert_ne!(service(&n63), service(&n64));
        assert_eq!(service(&n63).len(), 63);
        // Same first 200 characters: still apart.
        assert_ne!(credentials_secret(&n253), credentials_secret(&n253b));
        assert_ne!(service(&n253), service(&n253b));
        assert_ne!(vm_label(&n253), vm_label(&n253b));
        // A dotted name cannot take the plain Service form; `a-b` can: they differ.
        assert_ne!(service("a.b"), service("a-b"));
        assert_eq!(service("a-b"), "a-b-bmc");
    }

    #[test]
    fn a_derived_name_is_never_anothers_plain_name() {
        // A crafted VM named like the derived name minus the suffix still gets its own names:
        // plain forms end in the suffix, derived ones in hex digits.
        let derived = service("1node");
        let crafted = derived.trim_end_matches("-bmc").to_owned();
        assert_ne!(service(&crafted), derived);
        assert!(!derived.ends_with("-bmc"));
    }
}
