//! Every `bmc.kubevirt.io/*` annotation and the value each holds, parsed once, with errors that
//! name the annotation, the value and what is allowed (shown verbatim by `kubectl`).
//!
//! | annotation | on | value | written by |
//! |---|---|---|---|
//! | `enabled` | VM, VM template, launcher Pod; label on a namespace | `"true"` / `"false"` | user; controller (template) |
//! | `credentials-secret` | VM | name of a Secret in the VM's namespace | user |
//! | `service-type` | VM | `ClusterIP` / `NodePort` / `LoadBalancer` | user |
//! | `ipmi-auth` | VM | [`IpmiAuth`]: `strict` (default) / `compatible` | user |
//! | `injected` | launcher Pod | marker of the injection | webhook |
//! | `status` | VM | JSON [`Status`]: address, readiness, reason, per-VM object names | controller |
//! | `original` | VM | JSON [`Original`]: the user's strategies before opt-in | controller |
//! | `sidecar-problem` | VM | why the sidecar refuses to serve (e.g. no consent) | sidecar |
//! | `created` | VM | JSON [`Created`]: UIDs of the Secrets the controller created | controller |
//! | `media-status` | VM | JSON [`MediaStatus`] | controller |
//! | `media` | VM | JSON [`Media`] (absent: ejected) | sidecar |
//! | `power-state` | VM | [`PowerState`]: the power a client last asked for | sidecar |
//! | `boot-override` | VM | [`BootOverride`] text, e.g. `Pxe/Once/UEFI` | sidecar |
//! | `boot-override-state` | VM | JSON: generation, VMI then running, order to restore | sidecar |
//! | `booted-vmi` | VM | UID of the VMI the BMC last booted or found running | sidecar |
//! | `restart-of` | VM | UID of the VMI whose end the BMC accounted for (its own restart or shutdown, the guest's own power-off) | sidecar |
//! | `power-restore-policy` | VM | [`RestorePolicy`]: what an unplanned loss of the VMI comes back as | sidecar |
//! | `power-settled-vmi` | VM | UID of a VMI the BMC decided to leave off after an accounted end | sidecar |
//! | `reboot-policy-unsupported` | VM | why the cluster refused `rebootPolicy: Terminate` (a guest's own reboot then boots a one-time device again) | sidecar |
//! | `event-subscriptions` | VM | Redfish subscriptions document | sidecar |
//! | `session-settings` | VM | Redfish SessionService settings and logouts | sidecar |
//! | `indicators` | VM | JSON: the Redfish indicator LEDs of System and Chassis | sidecar |
//! | `power-on-waits-for-media` | VM | JSON [`MediaBootWait`]: a power-on held until the medium is attached | sidecar |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::boot::BootOverride;

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
/// Which IPMI logins the BMC accepts: [`IpmiAuth`]. Read by the sidecar when it starts.
pub const IPMI_AUTH: &str = "bmc.kubevirt.io/ipmi-auth";
/// Controller-written summary on the VM: address, readiness, reason.
pub const STATUS: &str = "bmc.kubevirt.io/status";
/// The user's `runStrategy` and `startStrategy` before opt-in, restored on opt-out.
pub const ORIGINAL: &str = "bmc.kubevirt.io/original";
/// Why the sidecar does not serve although it has its token (credentials missing, or a user's
/// Secret whose owner did not agree); the controller reports it until the sidecar is ready.
pub const SIDECAR_PROBLEM: &str = "bmc.kubevirt.io/sidecar-problem";
/// What the controller created but may not read back (Secrets): see [`Created`].
pub const CREATED: &str = "bmc.kubevirt.io/created";
/// Desired virtual media, written by the sidecar.
pub const MEDIA: &str = "bmc.kubevirt.io/media";
/// Import state of the virtual media, written by the controller.
pub const MEDIA_STATUS: &str = "bmc.kubevirt.io/media-status";
/// A power-on asked for while the virtual medium was still importing: the BMC holds the boot
/// until the CD-ROM is attached ([`MediaBootWait`]), or gives up after a bound and says why.
pub const MEDIA_BOOT_WAIT: &str = "bmc.kubevirt.io/power-on-waits-for-media";
/// The power a client last asked for.
pub const POWER: &str = "bmc.kubevirt.io/power-state";
/// UID of the VMI the BMC last booted or found running (it has run).
pub const BOOTED_VMI: &str = "bmc.kubevirt.io/booted-vmi";
/// UID of the VMI whose end the BMC accounted for: it restarted or shut it down itself, or saw
/// the guest power itself off. Its successor follows the desired power; any other successor
/// comes after a loss, and the restore policy decides.
pub const RESTART_OF: &str = "bmc.kubevirt.io/restart-of";
/// The power restore policy ([`RestorePolicy`]), as IPMI and Redfish clients set it.
pub const POWER_RESTORE_POLICY: &str = "bmc.kubevirt.io/power-restore-policy";
/// UID of a VMI the BMC left off after an accounted end, so that decision is made once.
pub const POWER_SETTLED_VMI: &str = "bmc.kubevirt.io/power-settled-vmi";
pub const BOOT_OVERRIDE: &str = "bmc.kubevirt.io/boot-override";
/// The sidecar's bookkeeping of an active override (its own JSON; nobody else reads it).
pub const BOOT_STATE: &str = "bmc.kubevirt.io/boot-override-state";
/// Set when the cluster refused or dropped `rebootPolicy: Terminate` (KubeVirt before 1.8, or
/// its feature gate off): why, so the owner sees that a one-time override also applies to the
/// guest's own reboots.
pub const REBOOT_POLICY_UNSUPPORTED: &str = "bmc.kubevirt.io/reboot-policy-unsupported";
pub const EVENT_SUBSCRIPTIONS: &str = "bmc.kubevirt.io/event-subscriptions";
pub const SESSION_SETTINGS: &str = "bmc.kubevirt.io/session-settings";
/// The Redfish indicator LEDs, JSON `{"system","chassis"}` of `Lit`/`Blinking`/`Off`
/// (the sidecar's own; nobody else reads it).
pub const INDICATORS: &str = "bmc.kubevirt.io/indicators";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}={value:?} is not valid: {allowed}")]
pub struct AnnotationError {
    pub annotation: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

fn invalid(annotation: &'static str, value: &str, allowed: &'static str) -> AnnotationError {
    AnnotationError {
        annotation,
        value: value.to_owned(),
        allowed,
    }
}

/// `bmc.kubevirt.io/enabled`: absent and `"false"` mean off; only the exact strings are accepted
/// so that a typo (`"yes"`, `"True "`) is reported instead of silently ignored.
pub fn enabled(annotations: &BTreeMap<String, String>) -> Result<Option<bool>, AnnotationError> {
    match annotations.get(ENABLED).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(invalid(
            ENABLED,
            other,
            "allowed values are \"true\" and \"false\"",
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

pub fn service_type(
    annotations: &BTreeMap<String, String>,
) -> Result<ServiceType, AnnotationError> {
    match annotations.get(SERVICE_TYPE).map(String::as_str) {
        None | Some("ClusterIP") => Ok(ServiceType::ClusterIp),
        Some("NodePort") => Ok(ServiceType::NodePort),
        Some("LoadBalancer") => Ok(ServiceType::LoadBalancer),
        Some(other) => Err(invalid(
            SERVICE_TYPE,
            other,
            "allowed values are \"ClusterIP\", \"NodePort\" and \"LoadBalancer\"",
        )),
    }
}

/// The IPMI logins a VM's BMC accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpmiAuth {
    /// RMCP+ (IPMI v2.0) with cipher suites 3 and 17 only: every message authenticated and
    /// encrypted. The default.
    #[default]
    Strict,
    /// Also IPMI v1.5 sessions (MD5 and straight-password authentication, no encryption)
    /// and cipher suites 1 (no integrity, no confidentiality) and 2 (no confidentiality),
    /// for old clients.
    Compatible,
}

/// The longest password each IPMI login carries: v2.0 keys are 20 bytes, v1.5 ones 16.
pub const IPMI_V20_PASSWORD_MAX: usize = 20;
pub const IPMI_V15_PASSWORD_MAX: usize = 16;

impl IpmiAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            IpmiAuth::Strict => "strict",
            IpmiAuth::Compatible => "compatible",
        }
    }

    pub fn parse(value: &str) -> Result<IpmiAuth, AnnotationError> {
        match value {
            "strict" => Ok(IpmiAuth::Strict),
            "compatible" => Ok(IpmiAuth::Compatible),
            other => Err(invalid(
                IPMI_AUTH,
                other,
                "allowed values are \"strict\" (RMCP+ cipher suites 3 and 17 only, the default) and \"compatible\" (also IPMI v1.5 and cipher suites 1 and 2)",
            )),
        }
    }

    /// Why IPMI cannot use `password` as it is (IPMI would silently cut it, or it is
    /// empty), or None. The text names no part of the password.
    pub fn password_problem(self, password: &[u8]) -> Option<String> {
        if password.is_empty() {
            return Some("the BMC password is empty; IPMI needs one".to_owned());
        }
        if password.len() > IPMI_V20_PASSWORD_MAX {
            return Some(format!(
                "the BMC password is {} bytes; IPMI v2.0 carries at most {IPMI_V20_PASSWORD_MAX} and would silently use only the first {IPMI_V20_PASSWORD_MAX}: use a shorter one",
                password.len()
            ));
        }
        if self == IpmiAuth::Compatible && password.len() > IPMI_V15_PASSWORD_MAX {
            return Some(format!(
                "the BMC password is {} bytes; IPMI v1.5 (allowed by {IPMI_AUTH}=compatible) carries at most {IPMI_V15_PASSWORD_MAX} and would silently use only the first {IPMI_V15_PASSWORD_MAX}: use a shorter one or {IPMI_AUTH}=strict",
                password.len()
            ));
        }
        None
    }
}

pub fn ipmi_auth(annotations: &BTreeMap<String, String>) -> Result<IpmiAuth, AnnotationError> {
    annotations
        .get(IPMI_AUTH)
        .map_or(Ok(IpmiAuth::default()), |value| IpmiAuth::parse(value))
}

/// `bmc.kubevirt.io/credentials-secret`: the name of a Secret in the VM's namespace.
pub fn credentials_secret(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<String>, AnnotationError> {
    match annotations.get(CREDENTIALS_SECRET) {
        None => Ok(None),
        Some(name) if is_dns_subdomain(name) => Ok(Some(name.clone())),
        Some(other) => Err(invalid(
            CREDENTIALS_SECRET,
            other,
            "must name a Secret in the VM's namespace (a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253 characters)",
        )),
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `bmc.kubevirt.io/power-state`: the power a client last asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "On",
            PowerState::Off => "Off",
        }
    }

    /// Anything but the two words is no recorded wish (a client never asked).
    pub fn parse(text: &str) -> Option<PowerState> {
        match text {
            "On" => Some(PowerState::On),
            "Off" => Some(PowerState::Off),
            _ => None,
        }
    }

    pub fn from_on(on: bool) -> PowerState {
        if on { PowerState::On } else { PowerState::Off }
    }

    pub fn is_on(self) -> bool {
        self == PowerState::On
    }
}

/// What a VM comes back as after an unplanned loss of its VMI (node failure, eviction, crash,
/// `virtctl restart`), as a server's BMC does after an AC power loss. `bmc.kubevirt.io/power-restore-policy`;
/// absent means `previous`, the default of most servers and the only one a plain `runStrategy:
/// Always` VM matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestorePolicy {
    /// The power state a client last asked for.
    #[default]
    Previous,
    AlwaysOn,
    AlwaysOff,
}

impl RestorePolicy {
    pub const ALL: [RestorePolicy; 3] = [
        RestorePolicy::AlwaysOff,
        RestorePolicy::Previous,
        RestorePolicy::AlwaysOn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RestorePolicy::Previous => "previous",
            RestorePolicy::AlwaysOn => "always-on",
            RestorePolicy::AlwaysOff => "always-off",
        }
    }

    pub fn parse(text: &str) -> Result<RestorePolicy, AnnotationError> {
        RestorePolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or_else(|| {
                invalid(
                    POWER_RESTORE_POLICY,
                    text,
                    "one of previous, always-on, always-off",
                )
            })
    }
}

/// Desired virtual media, `bmc.kubevirt.io/media` (written by the sidecar, read by the controller).
/// Unknown fields are ignored so the sidecar can record more than the controller needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    pub image: String,
    #[serde(default = "yes")]
    pub inserted: bool,
    #[serde(default = "yes")]
    pub write_protected: bool,
    /// The image's size as its server announced it (`Content-Length`), recorded by the
    /// sidecar at insert time so the import can be sized to fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

fn yes() -> bool {
    true
}

const MEDIA_ALLOWED: &str = "expected JSON {\"image\": \"http(s)://...\", \"inserted\": true|false, \"writeProtected\": true|false, \"sizeBytes\": N}";

impl Media {
    pub fn parse(raw: &str) -> Result<Media, AnnotationError> {
        let media: Media =
            serde_json::from_str(raw).map_err(|_| invalid(MEDIA, raw, MEDIA_ALLOWED))?;
        if !(media.image.starts_with("http://") || media.image.starts_with("https://")) {
            return Err(invalid(
                MEDIA,
                raw,
                "the image must be an http:// or https:// URL (CDI imports it)",
            ));
        }
        Ok(media)
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

pub fn media(annotations: &BTreeMap<String, String>) -> Result<Option<Media>, AnnotationError> {
    annotations
        .get(MEDIA)
        .map(|raw| Media::parse(raw))
        .transpose()
}

/// Where the import of the virtual media stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaPhase {
    /// Being imported (or about to be): not attached to the VM yet.
    #[default]
    Importing,
    /// Imported and attached as the `bmc-media` CD-ROM.
    Ready,
    Failed,
}

/// `bmc.kubevirt.io/media-status`, written by the controller from the DataVolume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaStatus {
    #[serde(default)]
    pub phase: MediaPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl MediaStatus {
    /// A status the controller has not written yet, or cannot be read, is an import under way.
    pub fn parse_or_default(raw: Option<&str>) -> MediaStatus {
        raw.and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// `bmc.kubevirt.io/power-on-waits-for-media`, written by the sidecar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaBootWait {
    /// UID of the (paused) VMI whose boot waits.
    pub vmi: String,
    /// When the wait began, seconds since the Unix epoch.
    pub since: u64,
    /// Set when the BMC gave up (import failed, or not done within the bound): the VM stays
    /// off and this says why, until the next power-on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<String>,
}

impl MediaBootWait {
    /// `None` for a value that does not parse (edited by hand): no wait.
    pub fn parse(raw: &str) -> Option<MediaBootWait> {
        serde_json::from_str(raw).ok()
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// `bmc.kubevirt.io/status`: the controller's summary of a VM's BMC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub reason: String,
    /// The per-VM objects' names (derived by [`crate::names`], recorded so users and tools
    /// find them without knowing the derivation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<crate::names::ObjectNames>,
    /// What works but will bite later (e.g. `BootMacNotPinned`); unlike `reason`, these do
    /// not hold back `ready`: the BMC serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<StatusWarning>,
}

/// One warning in [`Status`]: a machine-readable reason (the Event's too) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusWarning {
    pub reason: String,
    pub message: String,
}

impl Status {
    pub fn parse(raw: &str) -> Option<Status> {
        serde_json::from_str(raw).ok()
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// `bmc.kubevirt.io/original`: what opt-in changed, to put back at opt-out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Original {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_strategy: Option<String>,
}

impl Original {
    /// Unreadable reads as "nothing to restore" rather than failing the opt-out.
    pub fn parse_or_default(raw: Option<&str>) -> Original {
        raw.and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// `bmc.kubevirt.io/created`: the Secrets the controller created, which it may neither read nor
/// list. Each holds the UID the API server gave it at creation and the UID of the `<vm>-bmc`
/// ServiceAccount that owns it (the Secrets go with that account). A Secret of our name that is
/// not recorded here, under the account we have now, is someone else's (or one being garbage
/// collected) and is never taken over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Created {
    /// Unreadable reads as "nothing recorded": creating again then meets the existing Secret
    /// (409) and reports it, never overwrites it.
    pub fn parse_or_default(raw: Option<&str>) -> Created {
        raw.and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    /// What still holds for `account`: a record made under another ServiceAccount UID is
    /// void (that account's Secrets are garbage collected with it).
    pub fn under(&self, account: &str) -> Created {
        if self.service_account.as_deref() == Some(account) {
            self.clone()
        } else {
            Created {
                service_account: Some(account.to_owned()),
                ..Created::default()
            }
        }
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// Every annotation of ours that a user sets, checked at once; the keys the sidecar and the
/// controller write are theirs to read.
pub fn check_all(annotations: &BTreeMap<String, String>) -> Vec<AnnotationError> {
    let mut errors = Vec::new();
    if let Err(e) = enabled(annotations) {
        errors.push(e);
    }
    if let Err(e) = service_type(annotations) {
        errors.push(e);
    }
    if let Err(e) = credentials_secret(annotations) {
        errors.push(e);
    }
    if let Err(e) = ipmi_auth(annotations) {
        errors.push(e);
    }
    if let Err(e) = media(annotations) {
        errors.push(e);
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str, value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(key.to_owned(), value.to_owned())])
    }

    #[test]
    fn restore_policies_read_back_exactly_and_others_are_named() {
        for policy in RestorePolicy::ALL {
            assert_eq!(RestorePolicy::parse(policy.as_str()), Ok(policy));
        }
        assert_eq!(RestorePolicy::default(), RestorePolicy::Previous);
        let err = RestorePolicy::parse("last-state").unwrap_err();
        assert!(err.to_string().contains("power-restore-policy"), "{err}");
    }

    #[test]
    fn ipmi_auth_is_strict_unless_asked_and_refuses_passwords_ipmi_would_cut() {
        assert_eq!(ipmi_auth(&BTreeMap::new()).unwrap(), IpmiAuth::Strict);
        assert_eq!(
            ipmi_auth(&one(IPMI_AUTH, "compatible")).unwrap(),
            IpmiAuth::Compatible
        );
        let error = ipmi_auth(&one(IPMI_AUTH, "legacy")).unwrap_err();
        assert!(error.to_string().contains("\"strict\""), "{error}");
        assert_eq!(check_all(&one(IPMI_AUTH, "Strict")).len(), 1);

        let strict = IpmiAuth::Strict;
        let compatible = IpmiAuth::Compatible;
        assert_eq!(strict.password_problem(b"0123456789abcdef0123"), None);
        assert_eq!(compatible.password_problem(b"0123456789abcdef"), None);
        let long = strict.password_problem(b"0123456789abcdef01234").unwrap();
        assert!(
            long.contains("21 bytes") && long.contains("at most 20"),
            "{long}"
        );
        assert!(!long.contains("0123"), "the password leaked: {long}");
        let v15 = compatible.password_problem(b"0123456789abcdefg").unwrap();
        assert!(
            v15.contains("IPMI v1.5") && v15.contains("at most 16"),
            "{v15}"
        );
        assert!(strict.password_problem(b"").unwrap().contains("empty"));
    }

    #[test]
    fn enabled_accepts_exactly_true_and_false() {
        assert_eq!(enabled(&BTreeMap::new()), Ok(None));
        assert_eq!(enabled(&one(ENABLED, "true")), Ok(Some(true)));
        assert_eq!(enabled(&one(ENABLED, "false")), Ok(Some(false)));
        let err = enabled(&one(ENABLED, "maybe")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "annotation bmc.kubevirt.io/enabled=\"maybe\" is not valid: allowed values are \"true\" and \"false\""
        );
        assert!(enabled(&one(ENABLED, "True")).is_err());
    }

    #[test]
    fn service_type_names_the_three_types() {
        assert_eq!(
            service_type(&BTreeMap::new()).unwrap(),
            ServiceType::ClusterIp
        );
        assert_eq!(
            service_type(&one(SERVICE_TYPE, "NodePort")).unwrap(),
            ServiceType::NodePort
        );
        let err = service_type(&one(SERVICE_TYPE, "nodeport")).unwrap_err();
        assert!(err.to_string().contains("\"NodePort\""), "{err}");
    }

    #[test]
    fn credentials_secret_must_be_a_dns_subdomain() {
        assert_eq!(
            credentials_secret(&one(CREDENTIALS_SECRET, "my-bmc.creds")).unwrap(),
            Some("my-bmc.creds".to_owned())
        );
        for bad in ["", "Upper", "-lead", "a..b", "under_score"] {
            assert!(
                credentials_secret(&one(CREDENTIALS_SECRET, bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn media_parses_the_contract_json() {
        let m = media(&one(
            MEDIA,
            r#"{"image":"https://example.org/boot.iso","inserted":true,"writeProtected":true}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(m.image, "https://example.org/boot.iso");
        assert!(m.inserted && m.write_protected);
        assert_eq!(Media::parse(&m.to_annotation()), Ok(m));
        assert!(media(&one(MEDIA, "not json")).is_err());
        let err = media(&one(MEDIA, r#"{"image":"file:///etc/passwd"}"#)).unwrap_err();
        assert!(err.to_string().contains("http"), "{err}");
    }

    #[test]
    fn media_status_reads_what_the_controller_writes_and_defaults_to_importing() {
        let failed = MediaStatus {
            phase: MediaPhase::Failed,
            progress: None,
            reason: Some("got 404".into()),
        };
        assert_eq!(
            failed.to_annotation(),
            r#"{"phase":"Failed","reason":"got 404"}"#
        );
        assert_eq!(
            MediaStatus::parse_or_default(Some(&failed.to_annotation())),
            failed
        );
        assert_eq!(
            MediaStatus::parse_or_default(None).phase,
            MediaPhase::Importing
        );
        assert_eq!(
            MediaStatus::parse_or_default(Some("{")).phase,
            MediaPhase::Importing
        );
    }

    #[test]
    fn power_state_is_one_of_two_words() {
        for p in [PowerState::On, PowerState::Off] {
            assert_eq!(PowerState::parse(p.as_str()), Some(p));
        }
        assert_eq!(PowerState::parse("on"), None);
        assert!(PowerState::from_on(true).is_on());
    }

    #[test]
    fn check_all_reports_each_bad_annotation_and_ignores_unknown_keys() {
        let mut a = one(ENABLED, "yes");
        a.insert(SERVICE_TYPE.to_owned(), "Ingress".to_owned());
        a.insert(POWER.to_owned(), "on".to_owned());
        let errors = check_all(&a);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].annotation, ENABLED);
        assert_eq!(errors[1].annotation, SERVICE_TYPE);
    }
}
