//! What the controller keeps of the objects it watches, and the pure comparison that lets a
//! reconcile skip a write whose result the cache already shows.
//!
//! Pruning is the informer transform of client-go (`tools/cache/shared_informer.go`,
//! `SetTransform`: objects are transformed before they enter the store), done with kube's
//! `WatchStreamExt::modify`: a cached object keeps only what a reconcile reads. managedFields
//! (often larger than the spec) and `kubectl.kubernetes.io/last-applied-configuration` (a copy
//! of it) never reach a store.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DynamicObject;
use serde_json::Value;

use super::plan::{self, Launcher};
use crate::annotations;
use crate::names;

/// `kubectl apply`'s copy of the object, in an annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// managedFields and the last-applied copy: bookkeeping of other writers that no decision of
/// ours reads.
pub fn prune_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A VM as the reconcile reads it: metadata, spec, and of the status only `created` (plan's
/// "the VM ran before it was prepared"). KubeVirt's status (conditions, volume and snapshot
/// statuses, printableStatus) changes often and is read by no decision of ours.
///
/// A VM that neither may opt in nor was prepared by us keeps its metadata only: the
/// controller caches every VM of the cluster, most never opt in, and even a spec cut down to
/// the template's metadata costs a few KiB as JSON maps (each map node holds room for eleven
/// entries), the whole spec about 20 KiB. Nothing of its data is read then: the plan for it
/// is "nothing", decided from the annotations and the namespace label, and `was_prepared`
/// found none of our marks in the template. `namespace_opts_in` is the VM's namespace label
/// as the namespace cache has it (`None`: not known yet, so the spec is kept). A VM that opts
/// in later through its own annotation arrives whole with that change; one that opts in
/// through a namespace label added later is read from the API server once
/// ([`spec_pruned`]), until its next change.
pub fn prune_vm(vm: &mut DynamicObject, namespace_opts_in: Option<bool>) {
    prune_meta(&mut vm.metadata);
    let empty = BTreeMap::new();
    let vm_annotations = vm.metadata.annotations.as_ref().unwrap_or(&empty);
    let may_opt_in = match annotations::enabled(vm_annotations) {
        Ok(Some(own)) => own,
        Ok(None) => namespace_opts_in != Some(false),
        Err(_) => true,
    };
    let keep_spec = may_opt_in || plan::was_prepared(&vm.data, vm_annotations);
    if !keep_spec {
        // An empty map allocates nothing.
        vm.data = Value::Object(Default::default());
        return;
    }
    if let Some(status) = vm.data.get_mut("status") {
        let created = status.get("created").cloned();
        *status = match created {
            Some(c) => serde_json::json!({ "created": c }),
            None => Value::Object(Default::default()),
        };
    }
}

/// Whether the cached copy lacks the spec (see [`prune_vm`]): a reconcile that finds such a
/// VM opting in reads it whole first. The CRD requires `spec`, so only pruning leaves a VM
/// without one.
pub fn spec_pruned(vm: &DynamicObject) -> bool {
    vm.data.get("spec").is_none()
}

/// A launcher Pod as [`launcher`] and the Pod-to-VM mapping read it: its labels, the two
/// annotations we read, deletion and creation times, phase, IP and the `bmc` container's
/// readiness. The spec (tens of kB with KubeVirt's containers and volumes) is dropped.
pub fn prune_pod(pod: &mut Pod) {
    prune_meta(&mut pod.metadata);
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.retain(|k, _| k == annotations::INJECTED || k == names::DOMAIN_ANNOTATION);
    }
    pod.metadata.owner_references = None;
    pod.metadata.finalizers = None;
    pod.spec = None;
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        init_container_statuses: s.init_container_statuses.map(|statuses| {
            statuses
                .into_iter()
                .filter(|c| c.name == names::CONTAINER)
                .map(|c| ContainerStatus {
                    name: c.name,
                    ready: c.ready,
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
}

pub fn prune_service_account(sa: &mut ServiceAccount) {
    prune_meta(&mut sa.metadata);
    // The token controller's and the legacy cleaner's business, not ours.
    sa.secrets = None;
    sa.image_pull_secrets = None;
}

pub fn prune_role(role: &mut Role) {
    prune_meta(&mut role.metadata);
}

pub fn prune_role_binding(binding: &mut RoleBinding) {
    prune_meta(&mut binding.metadata);
}

pub fn prune_service(service: &mut Service) {
    prune_meta(&mut service.metadata);
    service.status = None;
}

/// The launcher Pod of a VM among Pods (the live one, newest first), as the Service selects
/// it: KubeVirt's launcher label and our per-VM label, which the Pod inherits from the VM
/// template (kubevirt pkg/virt-controller/services/template.go copies the VMI's labels).
pub fn launcher<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    namespace: &str,
    vm: &str,
) -> Option<Launcher> {
    let label = names::vm_label(vm);
    pods.into_iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            p.metadata.namespace.as_deref() == Some(namespace)
                && labels
                    .and_then(|l| l.get(names::LAUNCHER_LABEL))
                    .map(String::as_str)
                    == Some(names::LAUNCHER_VALUE)
                && labels.and_then(|l| l.get(names::VM_LABEL)) == Some(&label)
                && p.metadata.deletion_timestamp.is_none()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
        .max_by_key(|p| p.metadata.creation_timestamp.clone())
        .map(launcher_of)
}

pub fn launcher_of(pod: &Pod) -> Launcher {
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

/// True when `actual` already holds every field `desired` sets, with the same value: a
/// server-side apply of `desired` would change nothing we own. Fields only `actual` has
/// (the API server's defaults such as a Service's clusterIP and nodePorts, other managers'
/// labels, uid, resourceVersion) do not count. Lists must have the same length, item by item:
/// the lists we write (rules, subjects, ports, ownerReferences) are ours whole, so an extra
/// item someone added is a difference our apply would remove (or, for a map-list, leave):
/// erring toward one more apply, never toward a skipped one.
pub fn holds(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d.iter().all(|(k, v)| match a.get(k) {
            Some(x) => holds(v, x),
            // An unset field and an absent one are the same to the API server.
            None => v.is_null(),
        }),
        (Value::Array(d), Value::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(d, a)| holds(d, a))
        }
        (d, a) => d == a,
    }
}

/// [`holds`] on the JSON forms of a desired and a cached object.
pub fn up_to_date<D: serde::Serialize, A: serde::Serialize>(desired: &D, actual: &A) -> bool {
    match (serde_json::to_value(desired), serde_json::to_value(actual)) {
        (Ok(d), Ok(a)) => holds(&d, &a),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn holds_ignores_what_only_the_server_set_and_sees_what_we_set_differently() {
        let desired =
            json!({"spec": {"type": "ClusterIP", "ports": [{"port": 623, "name": "ipmi"}]}});
        let stored = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
            "ports": [{"port": 623, "name": "ipmi", "protocol": "UDP"}]}, "metadata": {"uid": "u"}});
        assert!(holds(&desired, &stored));
        let edited =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 623, "name": "ipmi"}]}});
        assert!(!holds(&desired, &edited));
        let extra_port = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 623, "name": "ipmi"}, {"port": 1}]}});
        assert!(!holds(&desired, &extra_port));
        // An unset field and an absent one are the same.
        assert!(holds(&json!({"a": null}), &json!({})));
    }

    #[test]
    fn a_pruned_pod_keeps_what_the_launcher_decision_reads() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns",
                "labels": {"kubevirt.io": "virt-launcher", "bmc.kubevirt.io/vm": "vm1"},
                "annotations": {"bmc.kubevirt.io/injected": "true", "other": "x"},
                "managedFields": [{"manager": "kubelet"}]},
            "spec": {"containers": [{"name": "compute"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "192.0.2.1",
                "initContainerStatuses": [{"name": "bmc", "ready": true, "restartCount": 0, "image": "i", "imageID": ""}]}
        }))
        .unwrap();
        let before = launcher([&pod], "ns", "vm1");
        prune_pod(&mut pod);
        assert_eq!(launcher([&pod], "ns", "vm1"), before);
        assert!(before.is_some_and(|l| l.bmc_ready && l.injected));
        assert!(pod.spec.is_none() && pod.metadata.managed_fields.is_none());
        assert_eq!(pod.metadata.annotations.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn a_pruned_vm_keeps_spec_and_status_created_only() {
        let mut vm: DynamicObject = serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "ns", "managedFields": [{"manager": "virt-controller"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "bmc.kubevirt.io/enabled": "true"}},
            "spec": {"runStrategy": "Always"},
            "status": {"created": true, "printableStatus": "Running", "conditions": []}}))
        .unwrap();
        prune_vm(&mut vm, Some(false));
        assert!(vm.metadata.managed_fields.is_none());
        assert_eq!(vm.metadata.annotations.as_ref().unwrap().len(), 1);
        assert_eq!(vm.data["status"], json!({"created": true}));
        assert_eq!(vm.data["spec"], json!({"runStrategy": "Always"}));
        assert!(!spec_pruned(&vm));
    }

    #[test]
    fn the_spec_is_dropped_only_for_a_vm_that_can_not_opt_in_and_was_not_prepared() {
        let vm = |annotations: Value, template_metadata: Value| -> DynamicObject {
            serde_json::from_value(
                json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": "vm1", "namespace": "ns", "annotations": annotations},
                "spec": {"runStrategy": "Always", "template": {"metadata": template_metadata,
                    "spec": {"domain": {"devices": {}}}}}}),
            )
            .unwrap()
        };
        let plain = || vm(json!({}), json!({"labels": {"app": "x"}}));
        let cases = [
            // (VM, namespace label, spec kept)
            (plain(), Some(false), false),
            (plain(), None, true),
            (plain(), Some(true), true),
            (
                vm(json!({"bmc.kubevirt.io/enabled": "true"}), json!({})),
                Some(false),
                true,
            ),
            (
                vm(json!({"bmc.kubevirt.io/enabled": "false"}), json!({})),
                Some(true),
                false,
            ),
            (
                vm(json!({"bmc.kubevirt.io/enabled": "maybe"}), json!({})),
                Some(false),
                true,
            ),
            // Prepared by us (opting out now): the opt-out reads the spec.
            (
                vm(
                    json!({}),
                    json!({"labels": {"bmc.kubevirt.io/enabled": "true"}}),
                ),
                Some(false),
                true,
            ),
        ];
        for (index, (mut vm, namespace, kept)) in cases.into_iter().enumerate() {
            let template_metadata = vm.data["spec"]["template"]["metadata"].clone();
            let labels = vm.metadata.labels.clone();
            prune_vm(&mut vm, namespace);
            assert_eq!(!spec_pruned(&vm), kept, "case {index}");
            assert_eq!(vm.metadata.labels, labels, "case {index}");
            if kept {
                assert_eq!(
                    vm.data["spec"]["template"]["metadata"], template_metadata,
                    "case {index}"
                );
                assert!(
                    vm.data["spec"]["template"]["spec"].is_object(),
                    "case {index}"
                );
            } else {
                assert_eq!(vm.data, json!({}), "case {index}");
                // What the plan reads of a pruned VM decides as the whole VM does.
                assert!(
                    plan::untouched(&serde_json::to_value(&vm).unwrap(), &Default::default()),
                    "case {index}"
                );
            }
        }
    }
}
