//! Values of our `bmc.kubevirt.io/*` annotations: parsed once, with errors that name the
//! annotation, the value and what is allowed (shown verbatim by `kubectl`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names;

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
    match annotations.get(names::ENABLED).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(invalid(
            names::ENABLED,
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
    match annotations.get(names::SERVICE_TYPE).map(String::as_str) {
        None | Some("ClusterIP") => Ok(ServiceType::ClusterIp),
        Some("NodePort") => Ok(ServiceType::NodePort),
        Some("LoadBalancer") => Ok(ServiceType::LoadBalancer),
        Some(other) => Err(invalid(
            names::SERVICE_TYPE,
            other,
            "allowed values are \"ClusterIP\", \"NodePort\" and \"LoadBalancer\"",
        )),
    }
}

/// `bmc.kubevirt.io/credentials-secret`: the name of a Secret in the VM's namespace.
pub fn credentials_secret(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<String>, AnnotationError> {
    match annotations.get(names::CREDENTIALS_SECRET) {
        None => Ok(None),
        Some(name) if is_dns_subdomain(name) => Ok(Some(name.clone())),
        Some(other) => Err(invalid(
            names::CREDENTIALS_SECRET,
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
}

fn yes() -> bool {
    true
}

const MEDIA_ALLOWED: &str = "expected JSON {\"image\": \"http(s)://...\", \"inserted\": true|false, \"writeProtected\": true|false}";

pub fn media(annotations: &BTreeMap<String, String>) -> Result<Option<Media>, AnnotationError> {
    let Some(raw) = annotations.get(names::MEDIA) else {
        return Ok(None);
    };
    let media: Media =
        serde_json::from_str(raw).map_err(|_| invalid(names::MEDIA, raw, MEDIA_ALLOWED))?;
    if !(media.image.starts_with("http://") || media.image.starts_with("https://")) {
        return Err(invalid(
            names::MEDIA,
            raw,
            "the image must be an http:// or https:// URL (CDI imports it)",
        ));
    }
    Ok(Some(media))
}

/// Every annotation of ours whose value we understand, checked at once; unknown keys under the
/// prefix are the sidecar's own desired-state annotations and are left to it.
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
        assert_eq!(enabled(&one(names::ENABLED, "true")), Ok(Some(true)));
        assert_eq!(enabled(&one(names::ENABLED, "false")), Ok(Some(false)));
        let err = enabled(&one(names::ENABLED, "maybe")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "annotation bmc.kubevirt.io/enabled=\"maybe\" is not valid: allowed values are \"true\" and \"false\""
        );
        assert!(enabled(&one(names::ENABLED, "True")).is_err());
    }

    #[test]
    fn service_type_names_the_three_types() {
        assert_eq!(
            service_type(&BTreeMap::new()).unwrap(),
            ServiceType::ClusterIp
        );
        assert_eq!(
            service_type(&one(names::SERVICE_TYPE, "NodePort")).unwrap(),
            ServiceType::NodePort
        );
        let err = service_type(&one(names::SERVICE_TYPE, "nodeport")).unwrap_err();
        assert!(err.to_string().contains("\"NodePort\""), "{err}");
    }

    #[test]
    fn credentials_secret_must_be_a_dns_subdomain() {
        assert_eq!(
            credentials_secret(&one(names::CREDENTIALS_SECRET, "my-bmc.creds")).unwrap(),
            Some("my-bmc.creds".to_owned())
        );
        for bad in ["", "Upper", "-lead", "a..b", "under_score"] {
            assert!(
                credentials_secret(&one(names::CREDENTIALS_SECRET, bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn media_parses_the_contract_json() {
        let m = media(&one(
            names::MEDIA,
            r#"{"image":"https://example.org/boot.iso","inserted":true,"writeProtected":true}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(m.image, "https://example.org/boot.iso");
        assert!(m.inserted && m.write_protected);
        assert!(media(&one(names::MEDIA, "not json")).is_err());
        let err = media(&one(names::MEDIA, r#"{"image":"file:///etc/passwd"}"#)).unwrap_err();
        assert!(err.to_string().contains("http"), "{err}");
    }

    #[test]
    fn check_all_reports_each_bad_annotation_and_ignores_unknown_keys() {
        let mut a = one(names::ENABLED, "yes");
        a.insert(names::SERVICE_TYPE.to_owned(), "Ingress".to_owned());
        a.insert("bmc.kubevirt.io/power".to_owned(), "on".to_owned());
        let errors = check_all(&a);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].annotation, names::ENABLED);
        assert_eq!(errors[1].annotation, names::SERVICE_TYPE);
    }
}
