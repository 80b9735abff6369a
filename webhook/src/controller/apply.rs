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
use super::plan::{Launcher, Note, Observed, Plan, SecretAction, ordered_children};
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

fn secret_data(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
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
    let ns = vm_ref.namespace.as_str();
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .map_err(at("get-namespace"))?;
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let credentials = get_opt(
        &secrets,
        &names::credentials_secret(&vm_ref.name),
        "get-secret",
    )
    .await?
    .map(secret_data);
    let annotations = super::plan::vm_annotations(vm);
    let user_credentials = match annotations.get(annotations::CREDENTIALS_SECRET) {
        None => None,
        Some(name) => Some(
            get_opt(&secrets, name, "get-user-secret")
                .await?
                .map(secret_data),
        ),
    };
    let selector = format!(
        "{}={},{}={}",
        names::LAUNCHER_LABEL,
        names::LAUNCHER_VALUE,
        names::VM_NAME_LABEL,
        vm_ref.name
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
        namespace_labels: namespace.metadata.labels.unwrap_or_default(),
        credentials,
        user_credentials,
        launcher,
        data_volume,
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
                vms.patch(&vm_ref.name, &PatchParams::default(), &Patch::Merge(p))
                    .await
                    .map_err(at("patch-vm"))?;
            }
            notes.push(note.clone());
        }
        Plan::OptedIn {
            service_type,
            secret,
            prepare: _,
            vm_patch,
            media,
            notes: plan_notes,
        } => {
            let (sa, role, binding, service) = ordered_children(vm_ref, *service_type);
            let name = names::service_account(&vm_ref.name);
            Api::<ServiceAccount>::namespaced(client.clone(), ns)
                .patch(&name, &apply_params(), &Patch::Apply(&sa))
                .await
                .map_err(at("apply-serviceaccount"))?;
            Api::<Role>::namespaced(client.clone(), ns)
                .patch(
                    &names::role(&vm_ref.name),
                    &apply_params(),
                    &Patch::Apply(&role),
                )
                .await
                .map_err(at("apply-role"))?;
            Api::<RoleBinding>::namespaced(client.clone(), ns)
                .patch(
                    &names::role(&vm_ref.name),
                    &apply_params(),
                    &Patch::Apply(&binding),
                )
                .await
                .map_err(at("apply-rolebinding"))?;
            let secrets = Api::<Secret>::namespaced(client.clone(), ns);
            match secret {
                SecretAction::None => {}
                // Create, never overwrite: a second replica racing us gets 409 and requeues,
                // so the password is generated exactly once.
                SecretAction::Create(data) => {
                    secrets
                        .create(
                            &PostParams::default(),
                            &children::credentials_secret(vm_ref, data.clone()),
                        )
                        .await
                        .map_err(at("create-secret"))?;
                }
                SecretAction::Update(data) => {
                    let encoded: BTreeMap<String, k8s_openapi::ByteString> = data
                        .iter()
                        .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
                        .collect();
                    secrets
                        .patch(
                            &names::credentials_secret(&vm_ref.name),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"data": encoded})),
                        )
                        .await
                        .map_err(at("update-secret"))?;
                }
            }
            Api::<Service>::namespaced(client.clone(), ns)
                .patch(
                    &names::service(&vm_ref.name),
                    &apply_params(),
                    &Patch::Apply(&service),
                )
                .await
                .map_err(at("apply-service"))?;
            let dvs =
                Api::<DynamicObject>::namespaced_with(client.clone(), ns, &data_volume_resource());
            let dv_name = names::media_data_volume(&vm_ref.name);
            match &media.data_volume {
                DvAction::None => {}
                DvAction::Apply(dv) => {
                    dvs.patch(&dv_name, &apply_params(), &Patch::Apply(dv))
                        .await
                        .map_err(at("apply-datavolume"))?;
                }
                DvAction::Delete => delete(&dvs, &dv_name, "delete-datavolume").await?,
            }
            if let Some(p) = vm_patch {
                vms.patch(&vm_ref.name, &PatchParams::default(), &Patch::Merge(p))
                    .await
                    .map_err(at("patch-vm"))?;
            }
            notes.extend(plan_notes.iter().cloned());
        }
        Plan::OptOut { vm_patch } => {
            // Restore first: once the template no longer opts in, new Pods stop naming the
            // ServiceAccount we are about to delete.
            vms.patch(
                &vm_ref.name,
                &PatchParams::default(),
                &Patch::Merge(vm_patch),
            )
            .await
            .map_err(at("patch-vm"))?;
            let dvs =
                Api::<DynamicObject>::namespaced_with(client.clone(), ns, &data_volume_resource());
            delete(
                &dvs,
                &names::media_data_volume(&vm_ref.name),
                "delete-datavolume",
            )
            .await?;
            let n = &vm_ref.name;
            delete(
                &Api::<Service>::namespaced(client.clone(), ns),
                &names::service(n),
                "delete-service",
            )
            .await?;
            delete(
                &Api::<Secret>::namespaced(client.clone(), ns),
                &names::credentials_secret(n),
                "delete-secret",
            )
            .await?;
            delete(
                &Api::<RoleBinding>::namespaced(client.clone(), ns),
                &names::role(n),
                "delete-rolebinding",
            )
            .await?;
            delete(
                &Api::<Role>::namespaced(client.clone(), ns),
                &names::role(n),
                "delete-role",
            )
            .await?;
            delete(
                &Api::<ServiceAccount>::namespaced(client.clone(), ns),
                &names::service_account(n),
                "delete-serviceaccount",
            )
            .await?;
            notes.push(Note {
                warning: false,
                reason: "BmcRemoved",
                message: "BMC opt-out: run and start strategies restored, BMC objects deleted; restart the VM to drop its sidecar".to_owned(),
            });
        }
    }
    if let Some(recorder) = recorder {
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
    Ok(())
}

async fn delete<K>(api: &Api<K>, name: &str, step: &'static str) -> Result<(), ApplyError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(at(step)(e)),
    }
}
