//! AdmissionReview in, AdmissionReview out. Glue around the pure decisions: decode, dispatch,
//! one response shape; the outcome label goes to metrics.

use std::collections::BTreeMap;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::annotations;
use crate::inject::{Decision, InjectionConfig, decide_launcher};
use crate::launcher_pod::LauncherPod;
use crate::network;

/// A review we could not read at all: answered `invalid` with the reason, uid unknown.
fn unreadable(reason: String) -> (AdmissionReview<DynamicObject>, String) {
    (
        AdmissionResponse::invalid(reason).into_review(),
        "invalid".to_owned(),
    )
}

/// Reads the uid and version even when the object does not parse as the expected type, so
/// such a request can still be allowed (never deny what we cannot read as opted in).
fn allow_unparsed(body: &[u8], error: String) -> (AdmissionReview<DynamicObject>, String) {
    match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
        .ok()
        .and_then(|r| {
            let req: Result<AdmissionRequest<DynamicObject>, _> = r.try_into();
            req.ok()
        }) {
        Some(req) => {
            let mut resp = AdmissionResponse::from(&req);
            resp.warnings = Some(vec![format!(
                "kubevirt-bmc could not read the object ({error}); admitted unchanged"
            )]);
            (resp.into_review(), "unreadable-object".to_owned())
        }
        None => unreadable(format!("not an AdmissionReview: {error}")),
    }
}

/// `/mutate-pods`: the outcome is `injected`, `denied`, `skipped-<reason>`, `invalid` or
/// `unreadable-object`.
pub fn mutate_pods(
    body: &[u8],
    config: &InjectionConfig,
) -> (AdmissionReview<DynamicObject>, String) {
    let review: AdmissionReview<LauncherPod> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return allow_unparsed(body, e.to_string()),
    };
    let req: AdmissionRequest<LauncherPod> = match review.try_into() {
        Ok(req) => req,
        Err(_) => return unreadable("AdmissionReview has no request".to_owned()),
    };
    let resp = AdmissionResponse::from(&req);
    let Some(pod) = req
        .object
        .as_ref()
        .filter(|_| req.operation == Operation::Create)
    else {
        return (resp.into_review(), "skipped-not-create".to_owned());
    };
    let generate_name = pod.metadata.generate_name.as_deref().unwrap_or_default();
    match decide_launcher(pod, config) {
        Decision::Skip(reason) => {
            tracing::debug!(uid = %req.uid, generate_name, reason = reason.as_str(), "not injecting");
            (resp.into_review(), format!("skipped-{}", reason.as_str()))
        }
        Decision::Deny(message) => {
            tracing::info!(uid = %req.uid, generate_name, %message, "denied");
            (resp.deny(message).into_review(), "denied".to_owned())
        }
        Decision::Patch {
            patch,
            warnings,
            vm,
        } => match resp.clone().with_patch(patch) {
            Ok(mut resp) => {
                tracing::info!(uid = %req.uid, generate_name, vm, "injected BMC sidecar");
                if !warnings.is_empty() {
                    resp.warnings = Some(warnings);
                }
                (resp.into_review(), "injected".to_owned())
            }
            Err(e) => {
                // Cannot happen with serde_json values; admit rather than block a VM.
                tracing::error!(uid = %req.uid, error = %e, "patch did not serialise");
                (resp.into_review(), "error".to_owned())
            }
        },
    }
}

fn annotations_of(obj: Option<&DynamicObject>) -> BTreeMap<String, String> {
    obj.and_then(|o| o.metadata.annotations.clone())
        .unwrap_or_default()
}

/// `/validate-virtualmachines`: bad values of our annotations are denied (on UPDATE only when
/// that annotation changed, so a VM that predates the webhook is never locked); networking that
/// makes the BMC unreachable becomes warnings on an opted-in VM.
pub fn validate_vms(body: &[u8]) -> (AdmissionReview<DynamicObject>, String) {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return unreadable(format!("not an AdmissionReview: {e}")),
    };
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(req) => req,
        Err(_) => return unreadable("AdmissionReview has no request".to_owned()),
    };
    let resp = AdmissionResponse::from(&req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return (resp.into_review(), "allowed".to_owned());
    }
    let new = annotations_of(req.object.as_ref());
    let old = annotations_of(req.old_object.as_ref());
    let errors: Vec<String> = annotations::check_all(&new)
        .into_iter()
        .filter(|e| old.get(e.annotation) != new.get(e.annotation))
        .map(|e| e.to_string())
        .collect();
    if !errors.is_empty() {
        return (
            resp.deny(errors.join("; ")).into_review(),
            "denied".to_owned(),
        );
    }
    let opted_in = annotations::enabled(&new) == Ok(Some(true));
    let warnings: Vec<String> = match (&req.object, opted_in) {
        (Some(vm), true) => {
            let vm = serde_json::to_value(vm).unwrap_or_default();
            network::check_vm(&vm).iter().map(|u| u.message()).collect()
        }
        _ => Vec::new(),
    };
    if warnings.is_empty() {
        (resp.into_review(), "allowed".to_owned())
    } else {
        let mut resp = resp;
        resp.warnings = Some(warnings);
        (resp.into_review(), "warned".to_owned())
    }
}

/// The wire form. kube serialises `patch` as an array of numbers; the API server's Go decoder
/// and every captured response use base64 (Go's encoding of `[]byte`), so we write that.
pub fn encode(review: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine;
    let mut value = serde_json::to_value(review)?;
    if let Some(patch) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
        value["response"]["patch"] = base64::engine::general_purpose::STANDARD
            .encode(patch)
            .into();
    }
    serde_json::to_vec(&value)
}

/// Name used in logs and metrics for each route.
pub const MUTATE: &str = "mutate-pods";
pub const VALIDATE: &str = "validate-virtualmachines";
