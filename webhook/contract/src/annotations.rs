//! Every `bmc.kubevirt.io/*` annotation and the value each holds, parsed once, with errors that
//! name the annotation, the value and what is allowed (shown verbatim by `kubectl`).
//!
//! | annotation | on | value | written by |
//! |---|---|---|---|
//! | `enabled` | VM, VM template, launcher Pod; label on a namespace | `"true"` / `"false"` | user; controller (template) |
//! | `credentials-secret` | VM | name of a Secret in the VM's namespace | user |
//! | `service-type` | VM | `ClusterIP` / `NodePort` / `LoadBalancer` | user |
//! | `injected` | launcher Pod | marker of the injection | webhook |
//! | `status` | VM | JSON [`Status`]: address, readiness, reason | controller |
//! | `original` | VM | JSON [`Original`]: the user's strategies before opt-in | controller |
//! | `media-status` | VM | JSON [`MediaStatus`] | controller |
//! | `media` | VM | JSON [`Media`] (absent: ejected) | sidecar |
//! | `power-state` | VM | [`PowerState`]: the power a client last asked for | sidecar |
//! | `boot-override` | VM | [`BootOverride`] text, e.g. `Pxe/Once/UEFI` | sidecar |
//! | `boot-override-state` | VM | JSON: generation, VMI then running, order to restore | sidecar |
//! | `booted-vmi` | VM | UID of the VMI the BMC last booted or found running | sidecar |
//! | `restart-of` | VM | UID of the VMI the BMC restarted for a fresh boot | sidecar |
//! | `event-subscriptions` | VM | Redfish subscriptions document | sidecar |
//! | `session-settings` | VM | Redfish SessionService settings and logouts | sidecar |

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
/// Controller-written summary on the VM: address, readiness, reason.
pub const STATUS: &str = "bmc.kubevirt.io/status";
/// The user's `runStrategy` and `startStrategy` before opt-in, restored on opt-out.
pub const ORIGINAL: &str = "bmc.kubevirt.io/original";
/// Desired virtual media, written by the sidecar.
pub const MEDIA: &str = "bmc.kubevirt.io/media";
/// Import state of the virtual media, written by the controller.
pub const MEDIA_STATUS: &str = "bmc.kubevirt.io/media-status";
/// The power a client last asked for.
pub const POWER: &str = "bmc.kubevirt.io/power-state";
/// UID of the VMI the BMC last booted or found running (it has run).
pub const BOOTED_VMI: &str = "bmc.kubevirt.io/booted-vmi";
/// UID of the VMI the BMC restarted for a fresh boot: boot its successor.
pub const RESTART_OF: &str = "bmc.kubevirt.io/restart-of";
pub const BOOT_OVERRIDE: &str = "bmc.kubevirt.io/boot-override";
/// The sidecar's bookkeeping of an active override (its own JSON; nobody else reads it).
pub const BOOT_STATE: &str = "bmc.kubevirt.io/boot-override-state";
pub const EVENT_SUBSCRIPTIONS: &str = "bmc.kubevirt.io/event-subscriptions";
pub const SESSION_SETTINGS: &str = "bmc.kubevirt.io/session-settings";

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
