//! The objects one opted-in VM owns, built as k8s-openapi types (pure).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::ServiceType;
use crate::names;

/// Who the VM is, as far as its children need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl VmRef {
    pub fn owner(&self) -> OwnerReference {
        OwnerReference {
            api_version: "kubevirt.io/v1".to_owned(),
            kind: "VirtualMachine".to_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            // blockOwnerDeletion would need update on virtualmachines/finalizers: not granted.
            block_owner_deletion: None,
        }
    }

    pub fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    names::WEBHOOK_NAME.to_owned(),
                ),
                (names::VM_LABEL.to_owned(), names::vm_label(&self.name)),
            ])),
            owner_references: Some(vec![self.owner()]),
            ..Default::default()
        }
    }
}

pub fn service_account(vm: &VmRef) -> ServiceAccount {
    ServiceAccount {
        metadata: vm.meta(names::service_account(&vm.name)),
        // Only the `bmc` container gets a token (the token Secret); no Pod runs as this account.
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

pub fn role(vm: &VmRef) -> Role {
    Role {
        metadata: vm.meta(names::role(&vm.name)),
        rules: Some(
            names::VM_ROLE_RULES
                .iter()
                .map(|(group, resources, verbs)| PolicyRule {
                    api_groups: Some(vec![(*group).to_owned()]),
                    resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
                    verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
                    resource_names: Some(vec![vm.name.clone()]),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

pub fn role_binding(vm: &VmRef) -> RoleBinding {
    RoleBinding {
        metadata: vm.meta(names::role(&vm.name)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: names::role(&vm.name),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: names::service_account(&vm.name),
            namespace: Some(vm.namespace.clone()),
            ..Default::default()
        }]),
    }
}

pub fn service(vm: &VmRef, service_type: ServiceType) -> Service {
    let port = |name: &str, number: u16, protocol: &str| ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(number),
        protocol: Some(protocol.to_owned()),
        // By name: the sidecar may listen on high ports when the sysctl is off.
        target_port: Some(IntOrString::String(name.to_owned())),
        ..Default::default()
    };
    Service {
        metadata: vm.meta(names::service(&vm.name)),
        spec: Some(ServiceSpec {
            type_: Some(service_type.as_str().to_owned()),
            selector: Some(BTreeMap::from([
                (names::VM_LABEL.to_owned(), names::vm_label(&vm.name)),
                (
                    names::LAUNCHER_LABEL.to_owned(),
                    names::LAUNCHER_VALUE.to_owned(),
                ),
            ])),
            // A powered-off (paused) VM's Pod is NotReady; its BMC must still be reachable.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![
                port(names::IPMI_PORT_NAME, names::IPMI_PORT, "UDP"),
                port(names::REDFISH_PORT_NAME, names::REDFISH_PORT, "TCP"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Owned by the `<vm>-bmc` ServiceAccount, not the VM: deleting the account at opt-out lets
/// the garbage collector delete the Secret, so the controller needs no right to delete (or,
/// through the deleted object it returns, read) Secrets.
fn owned_by_account(vm: &VmRef, name: String, account_uid: &str) -> ObjectMeta {
    let mut meta = vm.meta(name);
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "v1".to_owned(),
        kind: "ServiceAccount".to_owned(),
        name: names::service_account(&vm.name),
        uid: account_uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    meta
}

pub fn credentials_secret(
    vm: &VmRef,
    account_uid: &str,
    data: BTreeMap<String, Vec<u8>>,
) -> Secret {
    Secret {
        metadata: owned_by_account(vm, names::credentials_secret(&vm.name), account_uid),
        type_: Some("Opaque".to_owned()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

/// A token Secret for `<vm>-bmc`: kube-controller-manager's token controller fills in `token`,
/// `ca.crt` and `namespace` (kubernetes pkg/controller/serviceaccount/tokens_controller.go
/// `syncSecret` -> `generateTokenIfNeeded`) and deletes it when the account (of that UID) goes.
/// Created by hand and not listed in the account's `secrets`, the legacy-token cleaner leaves it
/// alone (legacy_serviceaccount_token_cleaner.go `evaluateSATokens`: `hasSecretReference`).
pub fn token_secret(vm: &VmRef, account_uid: &str) -> Secret {
    let mut metadata = owned_by_account(vm, names::token_secret(&vm.name), account_uid);
    metadata.annotations = Some(BTreeMap::from([
        (
            names::SERVICE_ACCOUNT_NAME_KEY.to_owned(),
            names::service_account(&vm.name),
        ),
        (
            names::SERVICE_ACCOUNT_UID_KEY.to_owned(),
            account_uid.to_owned(),
        ),
    ]));
    Secret {
        metadata,
        type_: Some(names::SERVICE_ACCOUNT_TOKEN_TYPE.to_owned()),
        ..Default::default()
    }
}

/// Ours: carries the VM's UID as an owner reference (what `VmRef::meta` writes).
pub fn owned_by_vm(meta: &ObjectMeta, vm: &VmRef) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == vm.uid && r.kind == "VirtualMachine")
}
