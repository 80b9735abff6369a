//! The kube calls around the pure plan: read what exists, then write in the order the API
//! server needs (a Pod naming a missing ServiceAccount is refused, so the identity comes first
//! and the VM template opt-in last).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Namespace, ObjectReference, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder};
use serde_json::{Value, json};

use super::cache;
use super::children::{self, VmRef};
use super::media::DvAction;
use super::plan::{Launcher, Note, Observed, Plan, ordered_children, secrets_to_create};
use crate::annotations;
use crate::names;

#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct ApplyError {
    pub step: &'static str,
    #[source]
    pub source: kube::Error,
}

impl ApplyError {
    /// Bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        self.step
    }

    pub fn is_conflict(&self) -> bool {
        matches!(&self.source, kube::Error::Api(s) if s.code == 409)
    }
}

fn at(step: &'static str) -> impl FnOnce(kube::Error) -> ApplyError {
    move |source| ApplyError { step, source }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn vm_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    )
}

pub fn data_volume_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cdi.kubevirt.io", "v1beta1", "DataVolume"),
        "datavolumes",
    )
}

async fn get_opt<K>(api: &Api<K>, name: &str, step: &'static str) -> Result<Option<K>, ApplyError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(obj) => Ok(Some(obj)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(at(step)(e)),
    }
}

/// What exists of the objects a VM owns, as far as the caller knows.
#[derive(Debug, Clone, Default)]
pub enum Seen<K> {
    /// Not known: ask the API server before writing (the owner check).
    #[default]
    Unknown,
    /// Known not to exist.
    Absent,
    Present(K),
}

impl<K> Seen<K> {
    pub fn from_option(object: Option<K>) -> Self {
        object.map_or(Seen::Absent, Seen::Present)
    }
}

/// The four named children of an opted-in VM and its media DataVolume, as last seen: the
/// controller's caches, or GETs ([`observe`]). A child that already holds what we would apply
/// is not written again; one whose owner is not this VM is never written.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    pub service_account: Seen<ServiceAccount>,
    pub role: Seen<Role>,
    pub role_binding: Seen<RoleBinding>,
    pub service: Seen<Service>,
    pub data_volume: Seen<DynamicObject>,
}

/// What one execution wrote: how many writes, and whether the VM was patched (after which
/// the controller's cached VM is stale until the watch delivers the new one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub writes: u32,
    pub vm_patched: bool,
}

/// A merge patch of the VM, counted. `vm_patched` only when the API server stored a new
/// version: a patch that changed nothing leaves the resourceVersion (and our cache) as it was.
async fn patch_vm<P: serde::Serialize + std::fmt::Debug>(
    vms: &Api<DynamicObject>,
    name: &str,
    patch: &P,
    basis: Option<&str>,
    outcome: &mut Outcome,
) -> Result<(), ApplyError> {
    let stored = vms
        .patch(name, &patch_params(), &Patch::Merge(patch))
        .await
        .map_err(at("patch-vm"))?;
    outcome.writes += 1;
    outcome.vm_patched |= stored.metadata.resource_version.as_deref() != basis;
    Ok(())
}

/// Everything `plan` and `execute` need beyond the VM itself, read from the API server: the
/// namespace, the launcher Pods, the children and the media DataVolume. The controller reads
/// the same from its caches instead (`run`); this is the uncached path the tests drive.
pub async fn observe(
    client: &Client,
    vm: &Value,
    vm_ref: &VmRef,
) -> Result<(Observed, Existing), ApplyError> {
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&vm_ref.namespace)
        .await
        .map_err(at("get-namespace"))?;
    let ns = vm_ref.namespace.as_str();
    let annotations = super::plan::vm_annotations(vm);
    let selector = format!(
        "{}={},{}={}",
        names::LAUNCHER_LABEL,
        names::LAUNCHER_VALUE,
        names::VM_LABEL,
        names::vm_label(&vm_ref.name)
    );
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(at("list-pods"))?;
    let launcher = cache::launcher(&pods.items, ns, &vm_ref.name);
    let mut existing = Existing::default();
    let data_volume = if wants_data_volume(&annotations) {
        let (value, seen) = observe_data_volume(client, vm_ref).await?;
        existing.data_volume = seen;
        value
    } else {
        None
    };
    let n = &vm_ref.name;
    existing.service_account = Seen::from_option(
        get_opt(
            &Api::<ServiceAccount>::namespaced(client.clone(), ns),
            &names::service_account(n),
            "get-serviceaccount",
        )
        .await?,
    );
    existing.role = Seen::from_option(
        get_opt(
            &Api::<Role>::namespaced(client.clone(), ns),
            &names::role(n),
            "get-role",
        )
        .await?,
    );
    existing.role_binding = Seen::from_option(
        get_opt(
            &Api::<RoleBinding>::namespaced(client.clone(), ns),
            &names::role(n),
            "get-rolebinding",
        )
        .await?,
    );
    existing.service = Seen::from_option(
        get_opt(
            &Api::<Service>::namespaced(client.clone(), ns),
            &names::service(n),
            "get-service",
        )
        .await?,
    );
    Ok((
        Observed {
            namespace_labels: namespace.metadata.labels.unwrap_or_default(),
            launcher,
            data_volume,
            policy: Default::default(),
            cdi_missing: false,
        },
        existing,
    ))
}

/// The media DataVolume matters only while the VM asks for media or reports on it.
pub fn wants_data_volume(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(annotations::MEDIA)
        || annotations.contains_key(annotations::MEDIA_STATUS)
}

/// The media DataVolume for plan (JSON) and for the owner check (the object), read with a GET:
/// media is rare and short-lived, so it has no cache of its own.
pub async fn observe_data_volume(
    client: &Client,
    vm_ref: &VmRef,
) -> Result<(Option<Value>, Seen<DynamicObject>), ApplyError> {
    let api = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &vm_ref.namespace,
        &data_volume_resource(),
    );
    let dv = get_opt(
        &api,
        &names::media_data_volume(&vm_ref.name),
        "get-datavolume",
    )
    .await?;
    Ok(data_volume_seen(dv))
}

/// The media DataVolume as `plan` reads it (JSON) and as the owner check holds it.
pub fn data_volume_seen(dv: Option<DynamicObject>) -> (Option<Value>, Seen<DynamicObject>) {
    let value = dv
        .as_ref()
        .map(|dv| serde_json::to_value(dv).unwrap_or_default());
    (value, Seen::from_option(dv))
}

pub fn launcher(pod: &Pod) -> Launcher {
    cache::launcher_of(pod)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(names::FIELD_MANAGER).force()
}

/// Merge patches name us too: without it they show up in managedFields as `unknown`.
fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(names::FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(names::FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

/// Writes the plan. Children first, the VM last. `basis` is the resourceVersion of the VM the
/// plan was made from.
pub async fn execute(
    client: &Client,
    vm_ref: &VmRef,
    plan: &Plan,
    existing: &Existing,
    basis: Option<&str>,
    recorder: Option<&Recorder>,
) -> Result<Outcome, ApplyError> {
    let mut outcome = Outcome::default();
    let ns = vm_ref.namespace.as_str();
    let vms = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &vm_resource());
    let mut notes: Vec<Note> = Vec::new();
    match plan {
        Plan::Nothing => {}
        Plan::Invalid { vm_patch, note } => {
            if let Some(p) = vm_patch {
                patch_vm(&vms, &vm_ref.name, p, basis, &mut outcome).await?;
            }
            notes.push(note.clone());
        }
        Plan::OptedIn {
            service_type,
            secrets,
            prepare: _,
            vm_patch,
            media,
            notes: plan_notes,
        } => {
            let (sa, role, binding, service) = ordered_children(vm_ref, *service_type);
            let n = &vm_ref.name;
            let writes = &mut outcome.writes;
            let result: Result<Option<Value>, Clash> = async {
                let account = apply_ours(
                    &Api::<ServiceAccount>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::service_account(n),
                    &sa,
                    &existing.service_account,
                    "apply-serviceaccount",
                    writes,
                )
                .await?;
                apply_ours(
                    &Api::<Role>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::role(n),
                    &role,
                    &existing.role,
                    "apply-role",
                    writes,
                )
                .await?;
                apply_ours(
                    &Api::<RoleBinding>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::role(n),
                    &binding,
                    &existing.role_binding,
                    "apply-rolebinding",
                    writes,
                )
                .await?;
                let account_uid = account.metadata.uid.clone().unwrap_or_default();
                let (mut created, credentials, token) =
                    secrets_to_create(&secrets.created, &account_uid);
                let secret_api = Api::<Secret>::namespaced(client.clone(), ns);
                // Create, never overwrite or read: a second replica racing us gets 409 and
                // requeues, so the password is generated exactly once.
                if credentials {
                    let secret = children::credentials_secret(
                        vm_ref,
                        &account_uid,
                        secrets.credentials.clone(),
                    );
                    created.credentials =
                        Some(create_ours(&secret_api, &secret, "create-secret").await?);
                    *writes += 1;
                }
                if token {
                    let secret = children::token_secret(vm_ref, &account_uid);
                    created.token =
                        Some(create_ours(&secret_api, &secret, "create-token-secret").await?);
                    *writes += 1;
                }
                apply_ours(
                    &Api::<Service>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::service(n),
                    &service,
                    &existing.service,
                    "apply-service",
                    writes,
                )
                .await?;
                let dvs = Api::<DynamicObject>::namespaced_with(
                    client.clone(),
                    ns,
                    &data_volume_resource(),
                );
                let dv_name = names::media_data_volume(n);
                match &media.data_volume {
                    DvAction::None => {}
                    DvAction::Apply(dv) => {
                        apply_ours(
                            &dvs,
                            vm_ref,
                            &dv_name,
                            dv,
                            &existing.data_volume,
                            "apply-datavolume",
                            writes,
                        )
                        .await?;
                    }
                    DvAction::Delete => {
                        delete_ours(
                            &dvs,
                            vm_ref,
                            &dv_name,
                            &existing.data_volume,
                            "delete-datavolume",
                        )
                        .await?;
                        *writes += 1;
                    }
                }
                let record = (created != secrets.created).then(|| created.to_annotation());
                Ok(match (vm_patch.clone(), record) {
                    (p, None) => p,
                    (Some(mut p), Some(record)) => {
                        p["metadata"]["annotations"][annotations::CREATED] = json!(record);
                        Some(p)
                    }
                    (None, Some(record)) => {
                        Some(json!({"metadata": {"annotations": {annotations::CREATED: record}}}))
                    }
                })
            }
            .await;
            match result {
                Ok(patch) => {
                    if let Some(p) = patch {
                        patch_vm(&vms, &vm_ref.name, &p, basis, &mut outcome).await?;
                    }
                }
                Err(Clash::Api(e)) => return Err(e),
                // Someone else's object holds one of our names: nothing of it is touched and
                // the VM is not prepared further; the user learns why on the VM.
                Err(Clash::Taken(message)) => {
                    let status = annotations::Status {
                        address: None,
                        service: format!("{}.{}.svc", names::service(n), ns),
                        ready: false,
                        reason: message.clone(),
                        objects: Some(names::ObjectNames::of(n)),
                        ..Default::default()
                    };
                    let patch = json!({"metadata": {"annotations": {
                        annotations::STATUS: status.to_annotation()
                    }}});
                    patch_vm(&vms, &vm_ref.name, &patch, basis, &mut outcome).await?;
                    notes.push(Note {
                        warning: true,
                        reason: "NameTaken",
                        message,
                    });
                    publish(recorder, vm_ref, notes).await;
                    return Ok(outcome);
                }
            }
            notes.extend(plan_notes.iter().cloned());
        }
        Plan::OptOut { vm_patch } => {
            // Restore first: once the template no longer opts in, new Pods stop naming the
            // ServiceAccount we are about to delete.
            patch_vm(&vms, &vm_ref.name, vm_patch, basis, &mut outcome).await?;
            let dvs =
                Api::<DynamicObject>::namespaced_with(client.clone(), ns, &data_volume_resource());
            let n = &vm_ref.name;
            // Only what carries this VM's UID goes; the Secrets follow the ServiceAccount
            // (garbage collector, token controller).
            let results = [
                delete_ours(
                    &dvs,
                    vm_ref,
                    &names::media_data_volume(n),
                    &existing.data_volume,
                    "delete-datavolume",
                )
                .await,
                delete_ours(
                    &Api::<Service>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::service(n),
                    &existing.service,
                    "delete-service",
                )
                .await,
                delete_ours(
                    &Api::<RoleBinding>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::role(n),
                    &existing.role_binding,
                    "delete-rolebinding",
                )
                .await,
                delete_ours(
                    &Api::<Role>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::role(n),
                    &existing.role,
                    "delete-role",
                )
                .await,
                delete_ours(
                    &Api::<ServiceAccount>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::service_account(n),
                    &existing.service_account,
                    "delete-serviceaccount",
                )
                .await,
            ];
            for result in results {
                match result {
                    Ok(()) => {}
                    Err(Clash::Api(e)) => return Err(e),
                    Err(Clash::Taken(message)) => notes.push(Note {
                        warning: true,
                        reason: "NameTaken",
                        message,
                    }),
                }
            }
            notes.push(Note {
                warning: false,
                reason: "BmcRemoved",
                message: "BMC opt-out: the last power a BMC client asked for kept (on: running, off: Halted), start strategy restored, BMC objects deleted; restart the VM to drop its sidecar".to_owned(),
            });
        }
    }
    publish(recorder, vm_ref, notes).await;
    Ok(outcome)
}

async fn publish(recorder: Option<&Recorder>, vm_ref: &VmRef, notes: Vec<Note>) {
    let Some(recorder) = recorder else {
        return;
    };
    let reference = ObjectReference {
        api_version: Some("kubevirt.io/v1".to_owned()),
        kind: Some("VirtualMachine".to_owned()),
        name: Some(vm_ref.name.clone()),
        namespace: Some(vm_ref.namespace.clone()),
        uid: Some(vm_ref.uid.clone()),
        ..Default::default()
    };
    for note in notes {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.to_owned(),
            note: Some(note.message),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        // An Event that cannot be written must not fail the reconcile.
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(vm = %vm_ref.name, error = %e, "cannot publish Event");
        }
    }
}

/// Why a write of the plan stopped.
enum Clash {
    Api(ApplyError),
    /// The name is taken by an object that is not this VM's (message for the VM).
    Taken(String),
}

impl From<ApplyError> for Clash {
    fn from(e: ApplyError) -> Self {
        Clash::Api(e)
    }
}

fn taken(kind: &str, namespace: &str, name: &str, vm: &str) -> String {
    format!(
        "{kind} {namespace}/{name} exists but was not created by the BMC controller for VM {vm}, so it is left alone and the BMC is not set up; delete or rename that {kind} (if it is left over from an earlier opt-in, the garbage collector removes it shortly)"
    )
}

fn kind_of<K: kube::Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

/// Server-side apply, but only onto an object that is ours (or missing): a force apply onto
/// someone else's object of our name would adopt it. Not sent at all when the object as last
/// seen already holds every field we apply: kube-apiserver would store nothing new either
/// (staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go `GuaranteedUpdate` returns the
/// existing object when the new bytes equal it), but only after a request, the apply merge
/// and admission.
#[allow(clippy::too_many_arguments)]
async fn apply_ours<K, B>(
    api: &Api<K>,
    vm_ref: &VmRef,
    name: &str,
    object: &B,
    seen: &Seen<K>,
    step: &'static str,
    writes: &mut u32,
) -> Result<K, Clash>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    B: serde::Serialize + std::fmt::Debug,
{
    let current = match seen {
        Seen::Present(k) => Some(k.clone()),
        Seen::Absent => None,
        // Not in the cache: maybe someone else's object (our watches see only ours), or one
        // the watch has not delivered yet. Ask.
        Seen::Unknown => get_opt(api, name, step).await?,
    };
    if let Some(current) = current {
        if !children::owned_by_vm(current.meta(), vm_ref) {
            return Err(Clash::Taken(taken(
                &object_kind(object),
                &vm_ref.namespace,
                name,
                &vm_ref.name,
            )));
        }
        if cache::up_to_date(object, &current) {
            return Ok(current);
        }
    }
    *writes += 1;
    Ok(api
        .patch(name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(at(step))?)
}

fn object_kind<K: serde::Serialize>(object: &K) -> String {
    serde_json::to_value(object)
        .ok()
        .and_then(|v| v["kind"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "object".to_owned())
}

/// Creates a Secret and returns the UID the API server gave it; 409 means the name is taken
/// by a Secret we have no record of creating, which we cannot read and never take over.
async fn create_ours(
    api: &Api<Secret>,
    secret: &Secret,
    step: &'static str,
) -> Result<String, Clash> {
    match api.create(&post_params(), secret).await {
        Ok(created) => Ok(created.metadata.uid.unwrap_or_default()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let name = secret.metadata.name.clone().unwrap_or_default();
            let ns = secret.metadata.namespace.clone().unwrap_or_default();
            let vm = secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::VM_NAME_LABEL))
                .cloned()
                .unwrap_or_default();
            Err(Clash::Taken(taken(&kind_of::<Secret>(), &ns, &name, &vm)))
        }
        Err(e) => Err(Clash::Api(at(step)(e))),
    }
}

/// Deletes an object only if it is ours, with its UID as a precondition: a look-alike created
/// in between is not deleted either (409 from the API server).
async fn delete_ours<K>(
    api: &Api<K>,
    vm_ref: &VmRef,
    name: &str,
    seen: &Seen<K>,
    step: &'static str,
) -> Result<(), Clash>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let current = match seen {
        Seen::Present(k) => Some(k.clone()),
        Seen::Absent => None,
        Seen::Unknown => get_opt(api, name, step).await?,
    };
    let Some(current) = current else {
        return Ok(());
    };
    if !children::owned_by_vm(current.meta(), vm_ref) {
        return Err(Clash::Taken(format!(
            "{} {}/{name} was not created by the BMC controller for VM {}, so opt-out left it alone",
            object_kind(&current),
            vm_ref.namespace,
            vm_ref.name
        )));
    }
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: current.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(Clash::Api(at(step)(e))),
    }
}
