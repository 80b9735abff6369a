//! The reconcile decision, pure: VM + namespace + what exists now -> what to write.
//! Randomness (new passwords) comes in as an argument so the decision is deterministic.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::children::{self, VmRef};
use super::media::{self, MediaPlan};
use crate::annotations::{self, AnnotationError, Original, Status};
use crate::names;
use crate::network;

/// Secret keys of the credentials Secret (the sidecar's contract).
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";
pub const SESSION_KEY: &str = "session-key";
pub const DEFAULT_USERNAME: &str = "admin";

/// What the controller read before deciding.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub namespace_labels: BTreeMap<String, String>,
    /// Data of `<vm>-bmc-credentials` when it exists.
    pub credentials: Option<BTreeMap<String, Vec<u8>>>,
    /// The user's Secret named by `bmc.kubevirt.io/credentials-secret`: `None` when none is
    /// named, `Some(None)` when it is named but missing.
    pub user_credentials: Option<Option<BTreeMap<String, Vec<u8>>>>,
    pub launcher: Option<Launcher>,
    /// The media DataVolume when it exists (JSON, CDI has no Rust types).
    pub data_volume: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    pub ip: Option<String>,
    /// Carries the sidecar (the webhook's stamp).
    pub injected: bool,
    pub bmc_ready: bool,
}

/// Fresh random values, used only for keys that do not exist yet.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub password: String,
    pub session_key: String,
}

impl Fresh {
    pub fn test() -> Self {
        Fresh {
            password: "generated-password".to_owned(),
            session_key: "generated-session-key".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SecretAction {
    None,
    Create(BTreeMap<String, Vec<u8>>),
    /// Merge these keys into the existing Secret.
    Update(BTreeMap<String, Vec<u8>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Our annotation on the VM is malformed: report and touch nothing else.
    Invalid { vm_patch: Option<Value>, note: Note },
    /// Apply children in order (ServiceAccount, Role, RoleBinding, Secret, Service), and only
    /// then the VM patch that writes the opt-in into the template.
    OptedIn {
        service_type: annotations::ServiceType,
        secret: SecretAction,
        /// When false the VM is not prepared (e.g. the user's Secret is missing).
        prepare: bool,
        vm_patch: Option<Value>,
        media: MediaPlan,
        notes: Vec<Note>,
    },
    /// Opt-out of a VM we prepared: restore it, then delete what it owned.
    OptOut { vm_patch: Value },
    /// Not opted in and never prepared: nothing to do.
    Nothing,
}

pub fn vm_annotations(vm: &Value) -> BTreeMap<String, String> {
    vm["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The VM's own annotation wins; otherwise the namespace label.
pub fn wants_bmc(
    vm: &BTreeMap<String, String>,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<bool, AnnotationError> {
    Ok(match annotations::enabled(vm)? {
        Some(v) => v,
        None => {
            namespace_labels
                .get(annotations::ENABLED)
                .map(String::as_str)
                == Some("true")
        }
    })
}

fn status_patch(current: &BTreeMap<String, String>, status: &Status) -> Option<(String, Value)> {
    let text = status.to_annotation();
    (current.get(annotations::STATUS) != Some(&text))
        .then(|| (annotations::STATUS.to_owned(), json!(text)))
}

fn previous_reason(current: &BTreeMap<String, String>) -> Option<String> {
    current
        .get(annotations::STATUS)
        .and_then(|s| Status::parse(s))
        .map(|s| s.reason)
}

pub fn plan(vm: &Value, vm_ref: &VmRef, observed: &Observed, fresh: &Fresh) -> Plan {
    let annotations = vm_annotations(vm);
    let wants = match wants_bmc(&annotations, &observed.namespace_labels) {
        Ok(w) => w,
        Err(e) => {
            let status = Status {
                address: None,
                service: String::new(),
                ready: false,
                reason: e.to_string(),
            };
            return Plan::Invalid {
                vm_patch: status_patch(&annotations, &status)
                    .map(|(k, v)| merge_annotations(vm, [(k, v)])),
                note: Note {
                    warning: true,
                    reason: "InvalidAnnotation",
                    message: e.to_string(),
                },
            };
        }
    };
    let prepared = annotations.contains_key(annotations::ORIGINAL)
        || template_annotation(vm, annotations::ENABLED).is_some();
    if !wants {
        return if prepared {
            Plan::OptOut {
                vm_patch: restore_patch(vm, &annotations),
            }
        } else {
            Plan::Nothing
        };
    }
    opted_in(vm, vm_ref, &annotations, observed, fresh)
}

fn opted_in(
    vm: &Value,
    vm_ref: &VmRef,
    annotations: &BTreeMap<String, String>,
    observed: &Observed,
    fresh: &Fresh,
) -> Plan {
    let mut notes = Vec::new();
    let mut reasons: Vec<(bool, &'static str, String)> = Vec::new();
    let service_type =
        annotations::service_type(annotations).unwrap_or(annotations::ServiceType::ClusterIp);
    if let Some(e) = annotations::check_all(annotations).into_iter().next() {
        reasons.push((true, "InvalidAnnotation", e.to_string()));
    }

    // Credentials: keep what exists, take the user's pair when named, generate the rest.
    let mut prepare = true;
    let existing = observed.credentials.clone();
    let mut desired = existing.clone().unwrap_or_default();
    match &observed.user_credentials {
        None => {
            desired
                .entry(USERNAME.to_owned())
                .or_insert_with(|| DEFAULT_USERNAME.as_bytes().to_vec());
            desired
                .entry(PASSWORD.to_owned())
                .or_insert_with(|| fresh.password.as_bytes().to_vec());
        }
        Some(Some(user)) => match (user.get(USERNAME), user.get(PASSWORD)) {
            (Some(u), Some(p)) => {
                desired.insert(USERNAME.to_owned(), u.clone());
                desired.insert(PASSWORD.to_owned(), p.clone());
            }
            _ => {
                prepare = false;
                reasons.push((
                    true,
                    "CredentialsSecretIncomplete",
                    format!(
                        "Secret {:?} named by {} lacks the keys \"username\" and \"password\"",
                        annotations
                            .get(annotations::CREDENTIALS_SECRET)
                            .cloned()
                            .unwrap_or_default(),
                        annotations::CREDENTIALS_SECRET
                    ),
                ));
            }
        },
        Some(None) => {
            prepare = false;
            reasons.push((
                true,
                "CredentialsSecretMissing",
                format!(
                    "Secret {:?} named by {} does not exist",
                    annotations
                        .get(annotations::CREDENTIALS_SECRET)
                        .cloned()
                        .unwrap_or_default(),
                    annotations::CREDENTIALS_SECRET
                ),
            ));
        }
    }
    desired
        .entry(SESSION_KEY.to_owned())
        .or_insert_with(|| fresh.session_key.as_bytes().to_vec());
    let secret = match existing {
        None if prepare => SecretAction::Create(desired),
        None => SecretAction::None,
        Some(existing) if existing != desired && prepare => SecretAction::Update(
            desired
                .into_iter()
                .filter(|(k, v)| existing.get(k) != Some(v))
                .collect(),
        ),
        Some(_) => SecretAction::None,
    };

    for u in network::check_vm(vm) {
        reasons.push((true, u.reason(), u.message()));
    }

    let mut patch = Map::new();
    let mut annotation_changes: Vec<(String, Value)> = Vec::new();
    let spec = &vm["spec"];
    let first_time = !annotations.contains_key(annotations::ORIGINAL);
    if prepare {
        if first_time {
            let original = Original {
                run_strategy: spec["runStrategy"].as_str().map(str::to_owned),
                running: spec["running"].as_bool(),
                start_strategy: spec["template"]["spec"]["startStrategy"]
                    .as_str()
                    .map(str::to_owned),
            };
            annotation_changes.push((
                annotations::ORIGINAL.to_owned(),
                json!(original.to_annotation()),
            ));
            let mut s = json!({
                "runStrategy": "Always",
                "template": {"spec": {"startStrategy": "Paused"}}
            });
            if !spec["running"].is_null() {
                // runStrategy and the deprecated `running` are mutually exclusive.
                s["running"] = Value::Null;
            }
            patch.insert("spec".to_owned(), s);
            let running = vm["status"]["created"].as_bool() == Some(true)
                || observed.launcher.as_ref().is_some_and(|l| !l.injected);
            notes.push(Note {
                warning: false,
                reason: "BmcPrepared",
                message: format!(
                    "BMC objects created ({sa} ServiceAccount, Role, RoleBinding, {secret} Secret, {svc} Service); runStrategy set to Always and startStrategy to Paused: BMC power off pauses the VM",
                    sa = names::service_account(&vm_ref.name),
                    secret = names::credentials_secret(&vm_ref.name),
                    svc = names::service(&vm_ref.name),
                ),
            });
            if running {
                reasons.push((
                    true,
                    "RestartRequired",
                    format!(
                        "the VM is running without its BMC sidecar; restart it (virtctl restart {}) to get one",
                        vm_ref.name
                    ),
                ));
            }
        } else if spec["runStrategy"].as_str() != Some("Always") {
            reasons.push((
                true,
                "VmHaltedByHand",
                format!(
                    "runStrategy is {:?}: the VM was stopped by hand, so it has no Pod and no BMC; start it (virtctl start {}) to bring the BMC back",
                    spec["runStrategy"].as_str().unwrap_or("unset"),
                    vm_ref.name
                ),
            ));
        }
        if template_annotation(vm, annotations::ENABLED) != Some("true") {
            let s = patch.entry("spec").or_insert_with(|| json!({}));
            s["template"]["metadata"]["annotations"][annotations::ENABLED] = json!("true");
        }
    }
    if observed.launcher.as_ref().is_some_and(|l| !l.injected) && (!first_time || !prepare) {
        reasons.push((
            true,
            "RestartRequired",
            format!(
                "the VM's Pod has no BMC sidecar; restart the VM (virtctl restart {}) to get one",
                vm_ref.name
            ),
        ));
    }

    let media = media::plan(vm, vm_ref, annotations, observed.data_volume.as_ref());
    if let Some(spec_media) = &media.vm_spec {
        let s = patch.entry("spec").or_insert_with(|| json!({}));
        merge(s, spec_media);
    }
    if let Some((k, v)) = &media.status_annotation {
        annotation_changes.push((k.clone(), v.clone()));
    }

    let launcher = observed.launcher.as_ref();
    let (ready, reason) = match reasons.first() {
        Some((_, _, message)) => (false, message.clone()),
        None => match launcher {
            None => (false, "waiting for the VM's launcher Pod".to_owned()),
            Some(l) if !l.bmc_ready => (false, "BMC sidecar starting".to_owned()),
            Some(_) => (true, "ready".to_owned()),
        },
    };
    let status = Status {
        address: launcher.and_then(|l| l.ip.clone()),
        service: format!("{}.{}.svc", names::service(&vm_ref.name), vm_ref.namespace),
        ready,
        reason: reason.clone(),
    };
    if previous_reason(annotations).as_deref() != Some(reason.as_str()) {
        for (warning, why, message) in &reasons {
            notes.push(Note {
                warning: *warning,
                reason: why,
                message: message.clone(),
            });
        }
    }
    if let Some(change) = status_patch(annotations, &status) {
        annotation_changes.push(change);
    }
    if !annotation_changes.is_empty() {
        let meta = patch.entry("metadata").or_insert_with(|| json!({}));
        for (k, v) in annotation_changes {
            meta["annotations"][k] = v;
        }
    }
    let vm_patch = (!patch.is_empty()).then(|| {
        let mut p = Value::Object(patch);
        with_resource_version(&mut p, vm);
        p
    });
    Plan::OptedIn {
        service_type,
        secret,
        prepare,
        vm_patch,
        media,
        notes,
    }
}

/// Optimistic concurrency: the merge patch fails with 409 if the VM changed since we read it.
fn with_resource_version(patch: &mut Value, vm: &Value) {
    if let Some(rv) = vm["metadata"]["resourceVersion"].as_str() {
        patch["metadata"]["resourceVersion"] = json!(rv);
    }
}

fn merge(target: &mut Value, source: &Value) {
    match (target, source) {
        (Value::Object(t), Value::Object(s)) => {
            for (k, v) in s {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, s) => *t = s.clone(),
    }
}

fn template_annotation<'a>(vm: &'a Value, key: &str) -> Option<&'a str> {
    vm["spec"]["template"]["metadata"]["annotations"][key].as_str()
}

fn merge_annotations(vm: &Value, changes: impl IntoIterator<Item = (String, Value)>) -> Value {
    let mut p = json!({"metadata": {"annotations": {}}});
    for (k, v) in changes {
        p["metadata"]["annotations"][k] = v;
    }
    with_resource_version(&mut p, vm);
    p
}

/// Puts back what opt-in changed: the user's run/start strategies, no template opt-in, no
/// status, no media disk.
pub fn restore_patch(vm: &Value, annotations: &BTreeMap<String, String>) -> Value {
    let original =
        Original::parse_or_default(annotations.get(annotations::ORIGINAL).map(String::as_str));
    let mut spec = json!({
        "template": {
            "metadata": {"annotations": {annotations::ENABLED: null}},
            "spec": {"startStrategy": original.start_strategy}
        }
    });
    if annotations.contains_key(annotations::ORIGINAL) {
        match (original.run_strategy, original.running) {
            (Some(rs), _) => spec["runStrategy"] = json!(rs),
            (None, Some(running)) => {
                spec["running"] = json!(running);
                spec["runStrategy"] = Value::Null;
            }
            (None, None) => spec["runStrategy"] = Value::Null,
        }
    }
    if let Some(without_media) = media::detach(vm) {
        merge(&mut spec, &without_media);
    }
    let mut p = json!({
        "metadata": {"annotations": {
            annotations::ORIGINAL: null, annotations::STATUS: null, annotations::MEDIA_STATUS: null
        }},
        "spec": spec
    });
    with_resource_version(&mut p, vm);
    p
}

/// Children in creation order.
pub fn ordered_children(
    vm_ref: &VmRef,
    service_type: annotations::ServiceType,
) -> (
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::rbac::v1::RoleBinding,
    k8s_openapi::api::core::v1::Service,
) {
    (
        children::service_account(vm_ref),
        children::role(vm_ref),
        children::role_binding(vm_ref),
        children::service(vm_ref, service_type),
    )
}
