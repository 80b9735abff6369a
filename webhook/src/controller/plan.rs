//! The reconcile decision, pure: VM + namespace + what exists now -> what to write.
//! Randomness (new passwords) comes in as an argument so the decision is deterministic.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::children::{self, VmRef};
use super::media::{self, MediaPlan};
use crate::annotations::{self, AnnotationError, Created, Original, Status, StatusWarning};
use crate::names;
use crate::network;
use kubevirt_bmc_contract::nic;

pub const DEFAULT_USERNAME: &str = "admin";

/// What the installation allows, from the controller's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `NodePort` and `LoadBalancer` BMC Services (IPMI reachable beyond the cluster).
    pub external_services: bool,
    /// StorageClass of the media imports (`--media-storage-class`); `None`: CDI's default.
    pub media_storage_class: Option<String>,
    /// How often API discovery is asked again while CDI is missing (`cdi::RECHECK`).
    pub cdi_recheck: Option<std::time::Duration>,
}

/// What the controller read before deciding. No Secret is among it: the controller may not
/// read Secrets (see manifests/base/rbac.yaml); what it created is on the VM ([`Created`]).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub namespace_labels: BTreeMap<String, String>,
    pub launcher: Option<Launcher>,
    /// The media DataVolume when it exists (JSON, CDI has no Rust types).
    pub data_volume: Option<Value>,
    pub policy: Policy,
    /// API discovery found no CDI DataVolumes (`run::CdiDiscovery`).
    pub cdi_missing: bool,
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

/// The Secrets of one opted-in VM, created once and never read, updated or deleted by the
/// controller: they are owned by the `<vm>-bmc` ServiceAccount and go with it.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretsPlan {
    /// Data of `<vm>-bmc-credentials` if it has to be created: generated `username` and
    /// `password` (unless the user names a Secret, which the kubelet mounts instead) and the
    /// Redfish `session-key`.
    pub credentials: BTreeMap<String, Vec<u8>>,
    /// What the VM says was created, under which ServiceAccount.
    pub created: Created,
}

/// Which Secrets to create now that the ServiceAccount's UID is known: those not recorded as
/// created under this very account (a recreated account took its Secrets with it).
pub fn secrets_to_create(created: &Created, account_uid: &str) -> (Created, bool, bool) {
    let current = created.under(account_uid);
    let credentials = current.credentials.is_none();
    let token = current.token.is_none();
    (current, credentials, token)
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
        secrets: SecretsPlan,
        /// When false the VM is not prepared. The plan always prepares; the execution stops
        /// before the VM when a child's name is taken by an object we did not create.
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

/// The namespace-wide opt-in, which a VM's own annotation overrides.
pub fn namespace_opts_in(namespace_labels: &BTreeMap<String, String>) -> bool {
    namespace_labels
        .get(annotations::ENABLED)
        .map(String::as_str)
        == Some("true")
}

/// The VM's own annotation wins; otherwise the namespace label.
pub fn wants_bmc(
    vm: &BTreeMap<String, String>,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<bool, AnnotationError> {
    Ok(match annotations::enabled(vm)? {
        Some(v) => v,
        None => namespace_opts_in(namespace_labels),
    })
}

fn status_patch(current: &BTreeMap<String, String>, status: &Status) -> Option<(String, Value)> {
    let text = status.to_annotation();
    (current.get(annotations::STATUS) != Some(&text))
        .then(|| (annotations::STATUS.to_owned(), json!(text)))
}

fn previous_status(current: &BTreeMap<String, String>) -> Option<Status> {
    current
        .get(annotations::STATUS)
        .and_then(|s| Status::parse(s))
}

/// Reason of the warning that the boot NIC's MAC is not pinned.
pub const BOOT_MAC_NOT_PINNED: &str = "BootMacNotPinned";

/// Warnings that do not stop the BMC: the VM gets it, but something will bite later.
fn warnings(vm: &Value, vm_ref: &VmRef) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    // Installers key the host on the boot NIC's MAC (bootMACAddress); the BMC's power cycles
    // make new VMIs, each with a new MAC unless the template pins one (see
    // kubevirt_bmc_contract::nic). No interface: no NIC to boot from, nothing to pin.
    if let Some((index, nic)) = nic::unpinned_boot_nic(vm) {
        found.push((
            BOOT_MAC_NOT_PINNED,
            format!(
                "boot interface {nic:?} has no pinned MAC: KubeVirt gives each new VMI (every BMC power cycle) a new one, and an installer's bootMACAddress (Metal3, OpenShift) then no longer matches; set spec.template.spec.domain.devices.interfaces[{index}].macAddress (kubectl patch vm {name} -n {namespace} --type=json -p '[{{\"op\":\"add\",\"path\":\"/spec/template/spec/domain/devices/interfaces/{index}/macAddress\",\"value\":\"52:54:00:xx:xx:xx\"}}]') or install kubemacpool, which pins one when the VM is created",
                name = vm_ref.name,
                namespace = vm_ref.namespace,
            ),
        ));
    }
    found
}

/// True when the VM neither opts in (its annotation, else its namespace's label) nor was
/// prepared by us: nothing to read, nothing to write. Decided before any API read, so a VM
/// that did not opt in costs nothing beyond the shared watches.
pub fn untouched(vm: &Value, namespace_labels: &BTreeMap<String, String>) -> bool {
    let annotations = vm_annotations(vm);
    matches!(wants_bmc(&annotations, namespace_labels), Ok(false))
        && !was_prepared(vm, &annotations)
}

pub fn was_prepared(vm: &Value, annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(annotations::ORIGINAL)
        || template_annotation(vm, annotations::ENABLED).is_some()
        || template_label(vm, names::OPT_IN_LABEL).is_some()
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
                objects: None,
                ..Default::default()
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
    let prepared = was_prepared(vm, &annotations);
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

/// A generated password IPMI carries whole: 20 characters, 16 when the VM allows IPMI v1.5.
fn fresh_password(fresh: &Fresh, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let mut password = fresh.password.as_bytes().to_vec();
    if annotations::ipmi_auth(annotations) == Ok(annotations::IpmiAuth::Compatible) {
        password.truncate(annotations::IPMI_V15_PASSWORD_MAX);
    }
    password
}

/// Why the BMC could not use the password for IPMI as it stands (the sidecar refuses to
/// start with it too), with what to do; the message names no part of it.
fn ipmi_password_problem(
    annotations: &BTreeMap<String, String>,
    desired: &BTreeMap<String, Vec<u8>>,
) -> Option<String> {
    let auth = annotations::ipmi_auth(annotations).unwrap_or_default();
    let problem = auth.password_problem(desired.get(names::SECRET_PASSWORD)?)?;
    let secret = annotations
        .get(annotations::CREDENTIALS_SECRET)
        .map_or("the generated credentials Secret", String::as_str);
    Some(format!("{problem} (password of {secret})"))
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

    let mut service_type = service_type;
    if matches!(
        service_type,
        annotations::ServiceType::NodePort | annotations::ServiceType::LoadBalancer
    ) && !observed.policy.external_services
    {
        reasons.push((
            true,
            "ExternalServiceNotAllowed",
            format!(
                "{}={} would expose IPMI and Redfish beyond the cluster, which this installation does not allow (controller flag --allow-external-services); the BMC Service is ClusterIP",
                annotations::SERVICE_TYPE,
                service_type.as_str()
            ),
        ));
        service_type = annotations::ServiceType::ClusterIp;
    }

    // Credentials: generated once into a Secret the controller creates and never reads back.
    // A user-named Secret is mounted by the kubelet, never copied; its owner's consent is a key
    // inside it, checked by the sidecar (the controller cannot see it).
    let mut prepare = true;
    let user_secret = annotations::credentials_secret(annotations).ok().flatten();
    let mut credentials = BTreeMap::new();
    if user_secret.is_none() {
        credentials.insert(
            names::SECRET_USERNAME.to_owned(),
            DEFAULT_USERNAME.as_bytes().to_vec(),
        );
        credentials.insert(
            names::SECRET_PASSWORD.to_owned(),
            fresh_password(fresh, annotations),
        );
    }
    // A user's password never reaches the controller: the sidecar refuses one unfit for IPMI.
    if let Some(problem) = ipmi_password_problem(annotations, &credentials) {
        prepare = false;
        reasons.push((true, "CredentialsUnfitForIpmi", problem));
    }
    credentials.insert(
        names::SECRET_SESSION_KEY.to_owned(),
        fresh.session_key.as_bytes().to_vec(),
    );
    let secrets = SecretsPlan {
        credentials,
        created: Created::parse_or_default(
            annotations.get(annotations::CREATED).map(String::as_str),
        ),
    };

    // The sidecar's own report (it has its token but refuses to serve), until it is ready.
    if let Some(problem) = annotations.get(annotations::SIDECAR_PROBLEM)
        && !observed.launcher.as_ref().is_some_and(|l| l.bmc_ready)
    {
        reasons.push((true, "BmcRefusesToServe", problem.clone()));
    }

    for u in network::check_vm(vm) {
        reasons.push((true, u.reason(), u.message()));
    }

    let mut patch = Map::new();
    let mut annotation_changes: Vec<(String, Value)> = Vec::new();
    let spec = &vm["spec"];
    let first_time = !annotations.contains_key(annotations::ORIGINAL);
    if prepare
        && first_time
        && let Some((why, message)) = refusal(vm, &vm_ref.name)
    {
        prepare = false;
        reasons.push((true, why, message));
    }
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
        // The webhook mounts the user's Secret from the Pod's annotation, inherited from here.
        if template_annotation(vm, annotations::CREDENTIALS_SECRET) != user_secret.as_deref() {
            let s = patch.entry("spec").or_insert_with(|| json!({}));
            s["template"]["metadata"]["annotations"][annotations::CREDENTIALS_SECRET] =
                json!(user_secret);
        }
        // Labels KubeVirt copies onto the launcher Pod: the webhook's objectSelector and the
        // Service's selector.
        let label = names::vm_label(&vm_ref.name);
        for (key, value) in [
            (names::OPT_IN_LABEL, names::OPT_IN_VALUE),
            (names::VM_LABEL, label.as_str()),
        ] {
            if template_label(vm, key) != Some(value) {
                let s = patch.entry("spec").or_insert_with(|| json!({}));
                s["template"]["metadata"]["labels"][key] = json!(value);
            }
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

    let media_env = media::MediaEnv {
        storage_class: observed.policy.media_storage_class.clone(),
        cdi_missing: observed.cdi_missing,
    };
    let media = media::plan(
        vm,
        vm_ref,
        annotations,
        observed.data_volume.as_ref(),
        &media_env,
    );
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
    let mut status = Status {
        address: launcher.and_then(|l| l.ip.clone()),
        service: format!("{}.{}.svc", names::service(&vm_ref.name), vm_ref.namespace),
        ready,
        reason: reason.clone(),
        objects: Some(names::ObjectNames::of(&vm_ref.name)),
        warnings: Vec::new(),
    };
    let previous = previous_status(annotations);
    // One Event when a warning appears, none while it stays; it leaves the status when fixed.
    for (why, message) in warnings(vm, vm_ref) {
        if !previous
            .as_ref()
            .is_some_and(|p| p.warnings.iter().any(|w| w.reason == why))
        {
            notes.push(Note {
                warning: true,
                reason: why,
                message: message.clone(),
            });
        }
        status.warnings.push(StatusWarning {
            reason: why.to_owned(),
            message,
        });
    }
    if previous.map(|p| p.reason).as_deref() != Some(reason.as_str()) {
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
        secrets,
        prepare,
        vm_patch,
        media,
        notes,
    }
}

/// What KubeVirt would refuse, or what the BMC must not overwrite, found before the VM is
/// touched: the reason goes on the VM instead of a template patch the API server rejects.
fn refusal(vm: &Value, name: &str) -> Option<(&'static str, String)> {
    let template = &vm["spec"]["template"]["spec"];
    // pkg/virt-api/webhooks/validating-webhook/admitters/vmi-create-admitter.go,
    // validateStartStrategy (also run on the VM template by the VM admitter): startStrategy
    // Paused with any livenessProbe is rejected; pkg/virt-api/rest/lifecycle.go,
    // PauseVMIRequestHandler, refuses to pause a VMI with a non-guest-agent probe.
    if !template["livenessProbe"].is_null() {
        return Some((
            "LivenessProbeBlocksPause",
            format!(
                "KubeVirt refuses startStrategy Paused together with a livenessProbe (\"Pausing VMI \
                 with LivenessProbe is not supported\"), and the BMC keeps a powered-off VM \
                 paused: remove spec.template.spec.livenessProbe from VM {name} to opt in"
            ),
        ));
    }
    // WaitAsReceiver marks the target of a cross-cluster migration: virt-controller
    // (pkg/virt-controller/watch/vm/vm.go) waits for the migration to create the VMI, so
    // replacing it with Always would start a second copy.
    if vm["spec"]["runStrategy"].as_str() == Some("WaitAsReceiver") {
        return Some((
            "MigrationReceiver",
            format!(
                "VM {name} has runStrategy WaitAsReceiver (the receiving end of a migration); \
                 the BMC does not replace it: opt in once the migration has completed"
            ),
        ));
    }
    None
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

fn template_label<'a>(vm: &'a Value, key: &str) -> Option<&'a str> {
    vm["spec"]["template"]["metadata"]["labels"][key].as_str()
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
            "metadata": {
                "annotations": {annotations::ENABLED: null, annotations::CREDENTIALS_SECRET: null},
                "labels": {names::OPT_IN_LABEL: null, names::VM_LABEL: null}
            },
            "spec": {"startStrategy": original.start_strategy}
        }
    });
    // The power a BMC client last asked for wins over the strategy saved at opt-in: on stays
    // running, off becomes Halted (a paused VMI would be left with no BMC to unpause it).
    let intent = annotations
        .get(annotations::POWER)
        .and_then(|p| annotations::PowerState::parse(p));
    if annotations.contains_key(annotations::ORIGINAL) {
        let keeps_running = |rs: &str| matches!(rs, "Always" | "RerunOnFailure" | "Manual");
        match (intent, original.run_strategy, original.running) {
            (Some(annotations::PowerState::Off), None, Some(_)) => {
                spec["running"] = json!(false);
                spec["runStrategy"] = Value::Null;
            }
            (Some(annotations::PowerState::Off), _, _) => spec["runStrategy"] = json!("Halted"),
            (Some(annotations::PowerState::On), None, Some(_)) => {
                spec["running"] = json!(true);
                spec["runStrategy"] = Value::Null;
            }
            (Some(annotations::PowerState::On), Some(rs), _) if keeps_running(&rs) => {
                spec["runStrategy"] = json!(rs)
            }
            (Some(annotations::PowerState::On), _, _) => spec["runStrategy"] = json!("Always"),
            (None, Some(rs), _) => spec["runStrategy"] = json!(rs),
            (None, None, Some(running)) => {
                spec["running"] = json!(running);
                spec["runStrategy"] = Value::Null;
            }
            (None, None, None) => spec["runStrategy"] = Value::Null,
        }
    }
    if let Some(without_media) = media::detach(vm) {
        merge(&mut spec, &without_media);
    }
    let mut p = json!({
        "metadata": {"annotations": {
            annotations::ORIGINAL: null, annotations::STATUS: null, annotations::MEDIA_STATUS: null,
            annotations::CREATED: null, annotations::SIDECAR_PROBLEM: null
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
