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

/// Everything `plan` needs beyond the VM itself.
pub async fn observe(client: &Client, vm: &Value, vm_ref: &VmRef) -> Result<Observed, ApplyError> {
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&vm_ref.namespace)
        .await
        .map_err(at("get-namespace"))?;
    observe_in(
        client,
        vm,
        vm_ref,
        namespace.metadata.labels.unwrap_or_default(),
    )
    .await
}

/// As [`observe`], with the namespace's labels already known (the controller's namespace
/// cache), so no per-VM namespace GET. No Secret is read: the controller may not.
pub async fn observe_in(
    client: &Client,
    vm: &Value,
    vm_ref: &VmRef,
    namespace_labels: BTreeMap<String, String>,
) -> Result<Observed, ApplyError> {
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
    let launcher = pods
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
        .max_by_key(|p| p.metadata.creation_timestamp.clone())
        .map(|p| launcher(&p));
    let data_volume = if annotations.contains_key(annotations::MEDIA)
        || annotations.contains_key(annotations::MEDIA_STATUS)
    {
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &data_volume_resource());
        get_opt(
            &api,
            &names::media_data_volume(&vm_ref.name),
            "get-datavolume",
        )
        .await?
        .map(|dv| serde_json::to_value(dv).unwrap_or_default())
    } else {
        None
    };
    Ok(Observed {
        namespace_labels,
        launcher,
        data_volume,
        policy: Default::default(),
        cdi_missing: false,
    })
}

pub fn launcher(pod: &Pod) -> Launcher {
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(annotations::INJECTED));
    let status = pod.status.as_ref();
    let bmc_ready = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.name == names::CONTAINER && c.ready);
    Launcher {
        ip: status.and_then(|s| s.pod_ip.clone()),
        injected,
        bmc_ready,
    }
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

/// Writes the plan. Children first, the VM last.
pub async fn execute(
    client: &Client,
    vm_ref: &VmRef,
    plan: &Plan,
    recorder: Option<&Recorder>,
) -> Result<(), ApplyError> {
    let ns = vm_ref.namespace.as_str();
    let vms = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &vm_resource());
    let mut notes: Vec<Note> = Vec::new();
    match plan {
        Plan::Nothing => {}
        Plan::Invalid { vm_patch, note } => {
            if let Some(p) = vm_patch {
                vms.patch(&vm_ref.name, &patch_params(), &Patch::Merge(p))
                    .await
                    .map_err(at("patch-vm"))?;
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
            let outcome: Result<Option<Value>, Clash> = async {
                let account = apply_ours(
                    &Api::<ServiceAccount>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::service_account(n),
                    &sa,
                    "apply-serviceaccount",
                )
                .await?;
                apply_ours(
                    &Api::<Role>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::role(n),
                    &role,
                    "apply-role",
                )
                .await?;
                apply_ours(
                    &Api::<RoleBinding>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::role(n),
                    &binding,
                    "apply-rolebinding",
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
                }
                if token {
                    let secret = children::token_secret(vm_ref, &account_uid);
                    created.token =
                        Some(create_ours(&secret_api, &secret, "create-token-secret").await?);
                }
                apply_ours(
                    &Api::<Service>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::service(n),
                    &service,
                    "apply-service",
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
                        apply_ours(&dvs, vm_ref, &dv_name, dv, "apply-datavolume").await?;
                    }
                    DvAction::Delete => {
                        delete_ours(&dvs, vm_ref, &dv_name, "delete-datavolume").await?
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
            match outcome {
                Ok(patch) => {
                    if let Some(p) = patch {
                        vms.patch(&vm_ref.name, &patch_params(), &Patch::Merge(&p))
                            .await
                            .map_err(at("patch-vm"))?;
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
                    };
                    vms.patch(
                        &vm_ref.name,
                        &patch_params(),
                        &Patch::Merge(json!({"metadata": {"annotations": {
                            annotations::STATUS: status.to_annotation()
                        }}})),
                    )
                    .await
                    .map_err(at("patch-vm"))?;
                    notes.push(Note {
                        warning: true,
                        reason: "NameTaken",
                        message,
                    });
                    publish(recorder, vm_ref, notes).await;
                    return Ok(());
                }
            }
            notes.extend(plan_notes.iter().cloned());
        }
        Plan::OptOut { vm_patch } => {
            // Restore first: once the template no longer opts in, new Pods stop naming the
            // ServiceAccount we are about to delete.
            vms.patch(&vm_ref.name, &patch_params(), &Patch::Merge(vm_patch))
                .await
                .map_err(at("patch-vm"))?;
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
                    "delete-datavolume",
                )
                .await,
                delete_ours(
                    &Api::<Service>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::service(n),
                    "delete-service",
                )
                .await,
                delete_ours(
                    &Api::<RoleBinding>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::role(n),
                    "delete-rolebinding",
                )
                .await,
                delete_ours(
                    &Api::<Role>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::role(n),
                    "delete-role",
                )
                .await,
                delete_ours(
                    &Api::<ServiceAccount>::namespaced(client.clone(), ns),
                    vm_ref,
                    &names::service_account(n),
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
    Ok(())
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
/// someone else's object of our name would adopt it.
async fn apply_ours<K, B>(
    api: &Api<K>,
    vm_ref: &VmRef,
    name: &str,
    object: &B,
    step: &'static str,
) -> Result<K, Clash>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    B: serde::Serialize + std::fmt::Debug,
{
    if let Some(current) = get_opt(api, name, step).await?
        && !children::owned_by_vm(current.meta(), vm_ref)
    {
        return Err(Clash::Taken(taken(
            &object_kind(object),
            &vm_ref.namespace,
            name,
            &vm_ref.name,
        )));
    }
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
    step: &'static str,
) -> Result<(), Clash>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let Some(current) = get_opt(api, name, step).await? else {
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
