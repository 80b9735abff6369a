//! KubeVirt's side: the subresources of virt-api with their state rules, and a simulated
//! virt-controller and virt-handler that create, pause and replace VMIs.

use serde_json::{Value, json};

use super::store::{Gvr, Key, Store};

/// A refusal as virt-api gives it: HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub message: String,
}

fn conflict(message: impl Into<String>) -> Refusal {
    Refusal {
        code: 409,
        message: message.into(),
    }
}

fn not_found(resource: &str, name: &str) -> Refusal {
    Refusal {
        code: 404,
        message: format!("{resource}.kubevirt.io \"{name}\" not found"),
    }
}

pub fn run_strategy(vm: &Value) -> String {
    vm["spec"]["runStrategy"].as_str().map_or_else(
        || {
            if vm["spec"]["running"].as_bool() == Some(true) {
                "Always".to_owned()
            } else {
                "Halted".to_owned()
            }
        },
        str::to_owned,
    )
}

pub fn vmi_paused(vmi: &Value) -> bool {
    vmi["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Paused" && c["status"] == "True")
    })
}

fn vmi_running(vmi: &Value) -> bool {
    vmi["status"]["phase"] == "Running" && vmi["metadata"].get("deletionTimestamp").is_none()
}

/// PUT `/apis/subresources.kubevirt.io/v1/namespaces/{ns}/{resource}/{name}/{verb}`.
pub fn subresource(
    store: &mut Store,
    namespace: &str,
    resource: &str,
    name: &str,
    verb: &str,
) -> Result<(), Refusal> {
    let vm_key = Key::new(Gvr::vm(), namespace, name);
    let vmi_key = Key::new(Gvr::vmi(), namespace, name);
    match resource {
        "virtualmachines" => {
            let vm = store
                .get(&vm_key)
                .cloned()
                .ok_or_else(|| not_found("virtualmachines", name))?;
            let strategy = run_strategy(&vm);
            let vmi = store.get(&vmi_key).cloned();
            match verb {
                "start" => {
                    if strategy == "Always" {
                        return Err(conflict("Always does not support manual start requests"));
                    }
                    if vmi.as_ref().is_some_and(vmi_running) {
                        return Err(conflict("VM is already running"));
                    }
                    let mut vm = vm;
                    if strategy == "Halted" {
                        vm["spec"]["runStrategy"] = json!("Always");
                    } else {
                        vm["status"]["startRequested"] = json!(true);
                    }
                    store.put(&vm_key, vm);
                    Ok(())
                }
                "stop" => {
                    if strategy == "Halted" {
                        return Err(conflict("VM is not running"));
                    }
                    let mut vm = vm;
                    vm["spec"]["runStrategy"] = json!("Halted");
                    store.put(&vm_key, vm);
                    store.delete(&vmi_key);
                    Ok(())
                }
                "restart" => {
                    if strategy == "Halted" {
                        return Err(conflict("Halted does not support manual restart requests"));
                    }
                    if vmi.is_none() {
                        return Err(conflict("VM is not running"));
                    }
                    delete_gracefully(store, &vmi_key);
                    Ok(())
                }
                _ => Err(Refusal {
                    code: 404,
                    message: "the server could not find the requested resource".into(),
                }),
            }
        }
        "virtualmachineinstances" => {
            let mut vmi = store
                .get(&vmi_key)
                .cloned()
                .ok_or_else(|| not_found("virtualmachineinstances", name))?;
            let running = vmi_running(&vmi);
            let paused = vmi_paused(&vmi);
            match verb {
                "pause" if !running => Err(conflict("VMI is not running")),
                "pause" if paused => Err(conflict("VMI is already paused")),
                "pause" => {
                    set_paused(&mut vmi, true);
                    store.put(&vmi_key, vmi);
                    Ok(())
                }
                // pkg/virt-api/rest/lifecycle.go, UnpauseVMIRequestHandler: refused while
                // the VM's status.snapshotInProgress is set (const vmSnapshotInprogress).
                "unpause"
                    if store
                        .get(&vm_key)
                        .is_some_and(|vm| !vm["status"]["snapshotInProgress"].is_null()) =>
                {
                    Err(conflict("VM snapshot is in progress"))
                }
                "unpause" if !paused => Err(conflict("VMI is not paused")),
                "unpause" => {
                    set_paused(&mut vmi, false);
                    store.put(&vmi_key, vmi);
                    Ok(())
                }
                "reset" if !running => Err(conflict("VMI is not running")),
                "softreboot" if !running => Err(conflict("VMI is not running")),
                "softreboot" if paused => Err(conflict("VMI is paused")),
                "reset" | "softreboot" => {
                    let count = vmi["status"]["fakeBoots"].as_u64().unwrap_or(0) + 1;
                    vmi["status"]["fakeBoots"] = json!(count);
                    store.put(&vmi_key, vmi);
                    Ok(())
                }
                _ => Err(Refusal {
                    code: 404,
                    message: "the server could not find the requested resource".into(),
                }),
            }
        }
        _ => Err(Refusal {
            code: 404,
            message: "the server could not find the requested resource".into(),
        }),
    }
}

/// KubeVirt removes the Paused condition on unpause; it never writes Paused=False.
fn set_paused(vmi: &mut Value, paused: bool) {
    let conditions = vmi["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conditions: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != "Paused" && c["type"] != "Ready")
        .collect();
    if paused {
        conditions.push(json!({
            "type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady",
            "message": "the status of pod readiness gate \"kubevirt.io/virtual-machine-unpaused\" is not \"True\", but False"
        }));
        conditions.push(json!({
            "type": "Paused", "status": "True", "reason": "PausedByUser",
            "message": "VMI was paused by user"
        }));
    } else {
        conditions.push(json!({"type": "Ready", "status": "True"}));
    }
    vmi["status"]["conditions"] = Value::Array(conditions);
}

/// A graceful delete: first a deletionTimestamp (the guest gets its ACPI shutdown), then
/// the object goes.
fn delete_gracefully(store: &mut Store, key: &Key) {
    if let Some(mut vmi) = store.get(key).cloned() {
        vmi["metadata"]["deletionTimestamp"] = json!("2026-11-21T18:30:00Z");
        store.put(key, vmi);
        store.delete(key);
    }
}

/// The guest powered itself off: the VMI ends Succeeded with no deletionTimestamp
/// (pkg/virt-handler/vm.go, `calculateVmPhaseForStatusReason`: domain Shutoff for reason
/// Shutdown is Succeeded), then the VM controller replaces it (`reconcile` below).
pub fn guest_shutdown(store: &mut Store, namespace: &str, name: &str) -> bool {
    let key = Key::new(Gvr::vmi(), namespace, name);
    let Some(mut vmi) = store.get(&key).cloned() else {
        return false;
    };
    vmi["status"]["phase"] = json!("Succeeded");
    store.put(&key, vmi);
    true
}

/// The guest reboots itself. With `spec.domain.rebootPolicy: Terminate` virt-launcher gave
/// the domain `on_reboot=destroy` (pkg/virt-launcher/virtwrap/converter/compute/
/// reboot_policy.go, `RebootPolicyDomainConfigurator`): the domain shuts off and the VMI
/// ends Succeeded as on a shutdown (pkg/virt-handler/vm.go, `calculateVmPhaseForStatusReason`),
/// then `Always` replaces it. Without it QEMU reboots in place: same VMI, same boot order
/// (counted in `status.fakeBoots`).
pub fn guest_reboot(store: &mut Store, namespace: &str, name: &str) -> bool {
    let key = Key::new(Gvr::vmi(), namespace, name);
    let Some(mut vmi) = store.get(&key).cloned() else {
        return false;
    };
    if vmi["spec"]["domain"]["rebootPolicy"] == "Terminate" {
        vmi["status"]["phase"] = json!("Succeeded");
    } else {
        let count = vmi["status"]["fakeBoots"].as_u64().unwrap_or(0) + 1;
        vmi["status"]["fakeBoots"] = json!(count);
    }
    store.put(&key, vmi);
    true
}

/// The device a VMI boots first: the lowest `bootOrder` among its disks and interfaces
/// (libvirt's per-device boot order, which KubeVirt's converter writes from it); with none
/// set, the first disk (the domain's default `<boot dev='hd'/>`).
pub fn first_boot_device(vmi: &Value) -> Option<String> {
    let devices = &vmi["spec"]["domain"]["devices"];
    ["disks", "interfaces"]
        .iter()
        .flat_map(|kind| devices[*kind].as_array().cloned().unwrap_or_default())
        .filter_map(|d| Some((d["bootOrder"].as_u64()?, d["name"].as_str()?.to_owned())))
        .min()
        .map(|(_, name)| name)
        .or_else(|| devices["disks"][0]["name"].as_str().map(str::to_owned))
}

/// The VMI is lost without its guest or anyone's API call ending it: virt-controller marks it
/// Failed when its node stops answering (pkg/virt-controller/watch/node.go, the VMIs of an
/// unresponsive node) or its launcher Pod vanishes (pkg/virt-controller/watch/vmi.go,
/// `updateStatus`: "someone other than the controller deleted the pod unexpectedly"); the VM
/// controller then replaces it.
pub fn lose_vmi(store: &mut Store, namespace: &str, name: &str) -> bool {
    let key = Key::new(Gvr::vmi(), namespace, name);
    let Some(mut vmi) = store.get(&key).cloned() else {
        return false;
    };
    vmi["status"]["phase"] = json!("Failed");
    store.put(&key, vmi);
    true
}

/// virt-controller for every VM: a VM that should run and has no live VMI gets a new one
/// (new UID), paused when its template says `startStrategy: Paused`; a finished VMI is
/// removed first.
pub fn reconcile(store: &mut Store) {
    let vms: Vec<(Key, Value)> = store_vms(store);
    for (vm_key, vm) in vms {
        let vmi_key = Key::new(Gvr::vmi(), &vm_key.namespace, &vm_key.name);
        let strategy = run_strategy(&vm);
        if let Some(vmi) = store.get(&vmi_key).cloned() {
            let phase = vmi["status"]["phase"].as_str().unwrap_or("");
            let finished = phase == "Succeeded" || phase == "Failed";
            let rerun = strategy == "Always" || (strategy == "RerunOnFailure" && phase == "Failed");
            if finished && rerun {
                store.delete(&vmi_key);
            } else {
                continue;
            }
        }
        let wanted = match strategy.as_str() {
            "Always" | "RerunOnFailure" => true,
            _ => vm["status"]["startRequested"] == true,
        };
        if wanted {
            create_vmi(store, &vm_key, &vm);
        }
    }
}

fn store_vms(store: &Store) -> Vec<(Key, Value)> {
    let mut out = Vec::new();
    for namespace in namespaces(store) {
        for vm in store.list(&Gvr::vm(), &namespace) {
            let name = vm["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            out.push((Key::new(Gvr::vm(), &namespace, &name), vm));
        }
    }
    out
}

fn namespaces(store: &Store) -> Vec<String> {
    store.namespaces(&Gvr::vm())
}

fn create_vmi(store: &mut Store, vm_key: &Key, vm: &Value) {
    let template = &vm["spec"]["template"];
    let mut annotations = template["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        "kubevirt.io/vm-generation".into(),
        json!(
            vm["metadata"]["generation"]
                .as_i64()
                .unwrap_or(1)
                .to_string()
        ),
    );
    let paused = template["spec"]["startStrategy"] == "Paused";
    let interfaces: Vec<Value> = template["spec"]["domain"]["devices"]["interfaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, iface)| {
            json!({
                "name": iface["name"],
                "mac": iface.get("macAddress").cloned().unwrap_or(json!(format!("52:54:00:6e:3a:{:02x}", i + 0x1d))),
                "ipAddress": "10.244.1.17",
            })
        })
        .collect();
    let mut vmi = json!({
        "metadata": {
            "annotations": annotations,
            "labels": template["metadata"]["labels"].clone(),
            "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "controller": true,
                "blockOwnerDeletion": true, "name": vm_key.name, "uid": vm["metadata"]["uid"],
            }],
        },
        "spec": template["spec"].clone(),
        "status": {
            "phase": "Running",
            "nodeName": "node01",
            "conditions": [],
            "interfaces": interfaces,
        },
    });
    set_paused(&mut vmi, paused);
    let vmi_key = Key::new(Gvr::vmi(), &vm_key.namespace, &vm_key.name);
    store.put(&vmi_key, vmi);
}

/// virt-controller's launcher Pod for `vmi`, shaped like the captured `template`: names,
/// labels, owner and the VMI's annotations (which carry the VM template's) follow the VMI.
pub fn launcher_pod(template: &Value, vmi: &Value) -> Value {
    let name = vmi["metadata"]["name"].as_str().unwrap_or_default();
    let uid = vmi["metadata"]["uid"].clone();
    let mut pod = template.clone();
    if let Some(object) = pod.as_object_mut() {
        object.remove("status");
    }
    let meta = &mut pod["metadata"];
    for field in [
        "name",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        if let Some(m) = meta.as_object_mut() {
            m.remove(field);
        }
    }
    meta["generateName"] = json!(format!("virt-launcher-{name}-"));
    meta["namespace"] = vmi["metadata"]["namespace"].clone();
    // virt-controller pkg/virt-controller/services/template.go `podLabels`: every VMI label
    // (the VM template's), then its own on top; `vm.kubevirt.io/name` is the hostname
    // (pkg/util/net/dns `SanitizeHostname`: spec.hostname, else the name's first DNS label cut
    // to 63 characters).
    if let Some(labels) = vmi["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            meta["labels"][k] = v.clone();
        }
    }
    let hostname = match vmi["spec"]["hostname"].as_str() {
        Some(h) if !h.is_empty() => h.to_owned(),
        _ => name
            .split('.')
            .next()
            .unwrap_or_default()
            .chars()
            .take(63)
            .collect(),
    };
    for (label, value) in [
        ("kubevirt.io", json!("virt-launcher")),
        ("kubevirt.io/created-by", uid.clone()),
        ("kubevirt.io/vm", json!(name)),
        ("vm.kubevirt.io/name", json!(hostname)),
        ("vmi.kubevirt.io/id", json!(name)),
    ] {
        meta["labels"][label] = value;
    }
    meta["annotations"] = json!({});
    if let Some(annotations) = vmi["metadata"]["annotations"].as_object() {
        for (k, v) in annotations {
            meta["annotations"][k] = v.clone();
        }
    }
    meta["annotations"]["kubevirt.io/domain"] = json!(name);
    meta["ownerReferences"] = json!([{
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": name,
        "uid": uid, "controller": true, "blockOwnerDeletion": true,
    }]);
    pod
}
