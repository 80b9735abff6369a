//! The controller's kube calls against a `tower_test` mock API server: method, exact URI and
//! body, in order (ServiceAccount, Role, RoleBinding before the VM template opt-in). No call
//! reads a Secret; every apply and delete follows the owner check of what was read; an object
//! that already holds what would be applied is not written, so a reconcile that finds
//! everything in place writes nothing (and, from the controller's caches, reads nothing).

mod common;

use std::time::Duration;

use common::fixture;
use http::{Request, Response};
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::client::Body;
use kube::core::DynamicObject;
use kube::runtime::events::{Recorder, Reporter};
use kubevirt_bmc_webhook::annotations;
use kubevirt_bmc_webhook::annotations::ServiceType;
use kubevirt_bmc_webhook::controller::apply::{Existing, Seen};
use kubevirt_bmc_webhook::controller::children::VmRef;
use kubevirt_bmc_webhook::controller::plan::{
    self, Fresh, Observed, Plan, Policy, ordered_children,
};
use kubevirt_bmc_webhook::controller::run::{backoff, reconcile_vm, reconcile_with};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn client() -> (Client, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{reason} for the test"), "reason": reason, "code": code})
}

type BodyCheck = Box<dyn Fn(&Value) + Send>;

/// One expected call and the API server's answer. `body` of `None` means "not checked".
struct Call {
    method: &'static str,
    uri: String,
    body: Option<BodyCheck>,
    code: u16,
    reply: Value,
}

fn call(method: &'static str, uri: &str, code: u16, reply: Value) -> Call {
    Call {
        method,
        uri: uri.to_owned(),
        body: None,
        code,
        reply,
    }
}

impl Call {
    fn body(mut self, check: impl Fn(&Value) + Send + 'static) -> Call {
        self.body = Some(Box::new(check));
        self
    }
}

/// Answers the calls in order; panics on any difference or when a call never comes (1 s).
/// Any call after them fails (the mock is dropped).
async fn verify(handle: ApiHandle, calls: Vec<Call>) {
    drop(verify_then(handle, calls).await);
}

/// As [`verify`], handing the mock back for what comes after.
async fn verify_then(mut handle: ApiHandle, calls: Vec<Call>) -> ApiHandle {
    for (i, expected) in calls.into_iter().enumerate() {
        let (request, send) = tokio::time::timeout(Duration::from_secs(1), handle.next_request())
            .await
            .unwrap_or_else(|_| {
                panic!("call {i} ({} {}) never came", expected.method, expected.uri)
            })
            .expect("service not called");
        assert_eq!(request.method().as_str(), expected.method, "call {i}");
        assert_eq!(request.uri().to_string(), expected.uri, "call {i}");
        let bytes = request.into_body().collect_bytes().await.unwrap();
        if let Some(check) = &expected.body {
            let body: Value = serde_json::from_slice(&bytes).expect("JSON body");
            check(&body);
        }
        send.send_response(
            Response::builder()
                .status(expected.code)
                .body(Body::from(serde_json::to_vec(&expected.reply).unwrap()))
                .unwrap(),
        );
    }
    handle
}

/// Every call that comes after the expected ones, answered 500 so the caller does not wait;
/// ends when the client is dropped.
async fn unexpected_calls(mut handle: ApiHandle) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        seen.push(format!("{} {}", request.method(), request.uri()));
        send.send_response(
            Response::builder()
                .status(500)
                .body(Body::from(
                    serde_json::to_vec(&status(500, "InternalError")).unwrap(),
                ))
                .unwrap(),
        );
    }
    seen
}

fn vm(annotations: Value) -> DynamicObject {
    let mut vm = fixture("vm-vm1.json");
    vm["metadata"]["annotations"] = annotations;
    vm["metadata"]["namespace"] = json!("vms");
    vm["metadata"]["resourceVersion"] = json!("100");
    vm["spec"]["runStrategy"] = json!("Halted");
    vm["spec"]["template"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(annotations::ENABLED);
    vm["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("startStrategy");
    // As kubemacpool's VM webhook leaves it (k8snetworkplumbingwg/kubemacpool
    // pkg/webhook/virtualmachine/virtualmachine.go); the captured vm1 has no MAC pinned.
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] =
        json!("02:5a:12:00:00:01");
    serde_json::from_value(vm).unwrap()
}

const NS: &str = "/api/v1/namespaces/vms";
const APPLY: &str = "?&force=true&fieldManager=kubevirt-bmc-controller";
const PODS: &str = "/api/v1/namespaces/vms/pods?&labelSelector=kubevirt.io%3Dvirt-launcher%2Cbmc.kubevirt.io%2Fvm%3Dvm1";

/// The namespace and the launcher Pods: what every uncached reconcile reads first.
fn reads_before_children() -> Vec<Call> {
    vec![
        call(
            "GET",
            NS,
            200,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vms"}}),
        ),
        call(
            "GET",
            PODS,
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ),
    ]
}

const SA: &str = "/api/v1/namespaces/vms/serviceaccounts/vm1-bmc";
const ROLE: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/vms/roles/vm1-bmc";
const BINDING: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/vms/rolebindings/vm1-bmc";
const SVC: &str = "/api/v1/namespaces/vms/services/vm1-bmc";

/// The reads of an uncached reconcile when none of the VM's objects exists yet.
fn reads() -> Vec<Call> {
    let mut calls = reads_before_children();
    calls.extend([missing(SA), missing(ROLE), missing(BINDING), missing(SVC)]);
    calls
}

fn vm_uid() -> String {
    fixture("vm-vm1.json")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An object of ours as the API server returns it: owned by vm1.
fn owned(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {
        "name": name, "uid": uid,
        "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm1", "uid": vm_uid(), "controller": true}]
    }})
}

fn missing(uri: &str) -> Call {
    call("GET", uri, 404, status(404, "NotFound"))
}

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/vms";

/// Apply, for each of the three identity children (their owner check was the read).
fn children_applied(sa_uid: &'static str) -> Vec<Call> {
    vec![
        call("PATCH", &format!("{NS}/serviceaccounts/vm1-bmc{APPLY}"), 200, owned("ServiceAccount", "v1", "vm1-bmc", sa_uid))
            .body(|b| {
                assert_eq!(b["kind"], "ServiceAccount");
                assert_eq!(b["metadata"]["name"], "vm1-bmc");
                assert_eq!(b["metadata"]["ownerReferences"][0]["name"], "vm1");
                assert_eq!(b["automountServiceAccountToken"], false);
            }),
        call("PATCH", &format!("{RBAC}/roles/vm1-bmc{APPLY}"), 200, owned("Role", "rbac.authorization.k8s.io/v1", "vm1-bmc", "role-uid"))
            .body(|b| {
                assert_eq!(b["rules"][0], json!({"apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"], "verbs": ["get", "list", "watch", "patch"], "resourceNames": ["vm1"]}));
                assert_eq!(b["rules"].as_array().unwrap().len(), 5);
                assert_eq!(b["rules"][4], json!({"apiGroups": ["subresources.kubevirt.io"], "resources": ["virtualmachineinstances/console"], "verbs": ["get"], "resourceNames": ["vm1"]}));
            }),
        call("PATCH", &format!("{RBAC}/rolebindings/vm1-bmc{APPLY}"), 200, {
            let mut b = owned("RoleBinding", "rbac.authorization.k8s.io/v1", "vm1-bmc", "rb-uid");
            b["roleRef"] = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm1-bmc"});
            b
        })
        .body(|b| assert_eq!(b["subjects"][0], json!({"kind": "ServiceAccount", "name": "vm1-bmc", "namespace": "vms"}))),
    ]
}

fn service_applied() -> Vec<Call> {
    vec![
        call(
            "PATCH",
            &format!("{NS}/services/vm1-bmc{APPLY}"),
            200,
            owned("Service", "v1", "vm1-bmc", "svc-uid"),
        )
        .body(|b| {
            assert_eq!(b["spec"]["publishNotReadyAddresses"], true);
            assert_eq!(b["spec"]["ports"][0]["port"], 623);
            assert_eq!(b["spec"]["type"], "ClusterIP");
        }),
    ]
}

fn recorder(client: &Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: "kubevirt-bmc-webhook".into(),
            instance: None,
        },
    )
}

#[tokio::test]
async fn opt_in_writes_identity_first_creates_secrets_unread_and_the_vm_template_last() {
    let (client, handle) = client();
    let vm1 = fixture("vm-vm1.json");
    let mut calls = reads();
    calls.extend(children_applied("sa-uid"));
    calls.extend([
        call("POST", &format!("{NS}/secrets?&fieldManager=kubevirt-bmc-controller"), 201, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vm1-bmc-credentials", "uid": "cred-uid"}}))
            .body(|b| {
                assert_eq!(b["metadata"]["name"], "vm1-bmc-credentials");
                assert_eq!(b["data"]["username"], "YWRtaW4=");
                assert_eq!(b["data"]["password"], "Z2VuZXJhdGVkLXBhc3N3b3Jk");
                assert!(b["data"]["session-key"].is_string());
                // Goes with the ServiceAccount: no delete right on Secrets needed.
                assert_eq!(b["metadata"]["ownerReferences"], json!([{"apiVersion": "v1", "kind": "ServiceAccount", "name": "vm1-bmc", "uid": "sa-uid", "controller": true}]));
            }),
        call("POST", &format!("{NS}/secrets?&fieldManager=kubevirt-bmc-controller"), 201, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vm1-bmc-token", "uid": "tok-uid"}}))
            .body(|b| {
                assert_eq!(b["metadata"]["name"], "vm1-bmc-token");
                assert_eq!(b["type"], "kubernetes.io/service-account-token");
                assert_eq!(b["metadata"]["annotations"]["kubernetes.io/service-account.name"], "vm1-bmc");
                assert_eq!(b["metadata"]["annotations"]["kubernetes.io/service-account.uid"], "sa-uid");
                assert!(b.get("data").is_none(), "the token controller fills it in");
            }),
    ]);
    calls.extend(service_applied());
    calls.extend([
        call("PATCH", "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?&fieldManager=kubevirt-bmc-controller", 200, vm1.clone())
            .body(|b| {
                assert_eq!(b["metadata"]["resourceVersion"], "100");
                assert_eq!(b["spec"]["runStrategy"], "Always");
                assert_eq!(b["spec"]["template"]["spec"]["startStrategy"], "Paused");
                assert_eq!(b["spec"]["template"]["metadata"]["annotations"][annotations::ENABLED], "true");
                assert_eq!(b["metadata"]["annotations"][annotations::ORIGINAL], "{\"runStrategy\":\"Halted\"}");
                assert_eq!(
                    b["metadata"]["annotations"][annotations::CREATED],
                    "{\"serviceAccount\":\"sa-uid\",\"credentials\":\"cred-uid\",\"token\":\"tok-uid\"}"
                );
            }),
        call("POST", "/apis/events.k8s.io/v1/namespaces/vms/events?", 201, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}))
            .body(|b| {
                assert_eq!(b["reason"], "BmcPrepared");
                assert_eq!(b["regarding"]["name"], "vm1");
            }),
    ]);
    let verifier = tokio::spawn(verify(handle, calls));
    let done = reconcile_vm(
        &client,
        &vm(json!({annotations::ENABLED: "true"})),
        Some(&recorder(&client)),
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    assert!(matches!(done.plan, Plan::OptedIn { prepare: true, .. }));
    // Three identity objects, two Secrets, the Service, the VM.
    assert_eq!(done.outcome.writes, 7);
    verifier.await.unwrap();
}

/// Issue 12 §2: a ServiceAccount named `vm1-bmc` that is not the VM's is neither applied over
/// (adopted) nor used; the VM's status and a Warning Event say why. Failed before: the force
/// apply took it over.
#[tokio::test]
async fn an_object_of_our_name_that_is_not_ours_is_reported_not_adopted() {
    let (client, handle) = client();
    let mut calls = reads_before_children();
    calls.extend([
        call("GET", SA, 200, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vm1-bmc", "uid": "someone-elses"}})),
        missing(ROLE),
        missing(BINDING),
        missing(SVC),
        call("PATCH", "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?&fieldManager=kubevirt-bmc-controller", 200, fixture("vm-vm1.json"))
            .body(|b| {
                assert!(b.get("spec").is_none(), "the VM is not prepared: {b}");
                let status = b["metadata"]["annotations"][annotations::STATUS].as_str().unwrap();
                assert!(status.contains("ServiceAccount vms/vm1-bmc exists but was not created by the BMC controller"), "{status}");
                assert!(status.contains("\"ready\":false"), "{status}");
            }),
        call("POST", "/apis/events.k8s.io/v1/namespaces/vms/events?", 201, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}))
            .body(|b| {
                assert_eq!(b["reason"], "NameTaken");
                assert_eq!(b["type"], "Warning");
            }),
    ]);
    let verifier = tokio::spawn(verify(handle, calls));
    reconcile_vm(
        &client,
        &vm(json!({annotations::ENABLED: "true"})),
        Some(&recorder(&client)),
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    verifier.await.unwrap();
}

/// A Secret of our name we have no record of creating: the controller cannot read it and
/// never overwrites it; the clash is reported on the VM.
#[tokio::test]
async fn a_secret_of_our_name_we_did_not_create_is_reported() {
    let (client, handle) = client();
    let mut calls = reads();
    calls.extend(children_applied("sa-uid"));
    calls.extend([
        call(
            "POST",
            &format!("{NS}/secrets?&fieldManager=kubevirt-bmc-controller"),
            409,
            status(409, "AlreadyExists"),
        ),
        call(
            "PATCH",
            "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?&fieldManager=kubevirt-bmc-controller",
            200,
            fixture("vm-vm1.json"),
        )
        .body(|b| {
            let status = b["metadata"]["annotations"][annotations::STATUS]
                .as_str()
                .unwrap();
            assert!(
                status.contains("Secret vms/vm1-bmc-credentials exists but was not created"),
                "{status}"
            );
            assert!(b.get("spec").is_none());
        }),
    ]);
    let verifier = tokio::spawn(verify(handle, calls));
    reconcile_vm(
        &client,
        &vm(json!({annotations::ENABLED: "true"})),
        None,
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    verifier.await.unwrap();
}

#[tokio::test]
async fn a_failed_write_stops_before_the_vm_is_touched() {
    let (client, handle) = client();
    let mut calls = reads();
    calls.extend([
        call(
            "PATCH",
            &format!("{NS}/serviceaccounts/vm1-bmc{APPLY}"),
            200,
            owned("ServiceAccount", "v1", "vm1-bmc", "sa-uid"),
        ),
        call(
            "PATCH",
            &format!("{RBAC}/roles/vm1-bmc{APPLY}"),
            403,
            status(403, "Forbidden"),
        ),
    ]);
    let verifier = tokio::spawn(verify(handle, calls));
    let err = reconcile_vm(
        &client,
        &vm(json!({annotations::ENABLED: "true"})),
        None,
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("apply-role:"), "{err}");
    verifier.await.unwrap();
    // Nothing else is sent: the mock is dropped with no pending call.
}

#[tokio::test]
async fn a_stale_vm_gives_a_conflict_that_requeues() {
    let (client, handle) = client();
    let mut calls = reads();
    calls.extend(children_applied("sa-uid"));
    calls.extend(service_applied());
    calls.push(call(
        "PATCH",
        "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?&fieldManager=kubevirt-bmc-controller",
        409,
        status(409, "Conflict"),
    ));
    let verifier = tokio::spawn(verify(handle, calls));
    let created = "{\"serviceAccount\":\"sa-uid\",\"credentials\":\"c\",\"token\":\"t\"}";
    let err = reconcile_vm(
        &client,
        &vm(json!({annotations::ENABLED: "true", annotations::CREATED: created})),
        None,
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("patch-vm:"), "{err}");
    verifier.await.unwrap();
    assert_eq!(backoff(0), Duration::from_secs(2));
    assert_eq!(backoff(3), Duration::from_secs(16));
    assert_eq!(backoff(30), Duration::from_secs(300));
}

/// Opt-out deletes only what carries the VM's UID, with that object's UID as precondition;
/// a Role of our name that is someone else's stays, with a Warning. No Secret is deleted by
/// the controller: they go with the ServiceAccount. Failed before: deleted by name.
#[tokio::test]
async fn opt_out_restores_the_vm_then_deletes_only_what_it_owned() {
    let (client, handle) = client();
    let vm1 = fixture("vm-vm1.json");
    let mut calls = reads_before_children();
    calls.extend([
        call("GET", SA, 200, owned("ServiceAccount", "v1", "vm1-bmc", "sa-uid")),
        call(
            "GET",
            ROLE,
            200,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "vm1-bmc", "uid": "theirs"}}),
        ),
        call("GET", BINDING, 200, owned("RoleBinding", "rbac.authorization.k8s.io/v1", "vm1-bmc", "rb-uid")),
        call("GET", SVC, 200, owned("Service", "v1", "vm1-bmc", "svc-uid")),
    ]);
    calls.push(
        call(
            "PATCH",
            "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?&fieldManager=kubevirt-bmc-controller",
            200,
            vm1,
        )
        .body(|b| {
            assert_eq!(b["spec"]["runStrategy"], "Halted");
            assert_eq!(
                b["spec"]["template"]["metadata"]["annotations"][annotations::ENABLED],
                Value::Null
            );
            assert_eq!(
                b["metadata"]["annotations"][annotations::ORIGINAL],
                Value::Null
            );
            assert_eq!(
                b["metadata"]["annotations"][annotations::CREATED],
                Value::Null
            );
        }),
    );
    let deleted =
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    // No media asked for: the DataVolume was not read before, so it is looked up now.
    calls.push(missing(
        "/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes/vm1-bmc-media",
    ));
    // Deleted with the UID the read showed; the Role that is not ours is left alone.
    let delete = |uri: &str, uid: &'static str| {
        call("DELETE", &format!("{uri}?"), 200, deleted.clone()).body(move |b| {
            assert_eq!(b["propagationPolicy"], "Background");
            assert_eq!(b["preconditions"]["uid"], uid);
        })
    };
    calls.extend([
        delete(SVC, "svc-uid"),
        delete(BINDING, "rb-uid"),
        delete(SA, "sa-uid"),
    ]);
    calls.push(
        call("POST", "/apis/events.k8s.io/v1/namespaces/vms/events?", 201, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}))
            .body(|b| {
                assert_eq!(b["reason"], "NameTaken");
                assert!(b["note"].as_str().unwrap().contains("Role vms/vm1-bmc was not created"), "{b}");
            }),
    );
    let verifier = tokio::spawn(verify(handle, calls));
    let vm = vm(
        json!({annotations::ENABLED: "false", annotations::ORIGINAL: "{\"runStrategy\":\"Halted\"}"}),
    );
    let done = reconcile_vm(
        &client,
        &vm,
        Some(&recorder(&client)),
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    assert!(matches!(done.plan, Plan::OptOut { .. }));
    verifier.await.unwrap();
}

#[tokio::test]
async fn desired_media_creates_the_datavolume_and_attaches_nothing_yet() {
    let (client, handle) = client();
    let media = r#"{"image":"https://example.org/boot.iso","inserted":true,"writeProtected":true}"#;
    let mut vm1 = fixture("vm-vm1.json");
    vm1["metadata"]["namespace"] = json!("vms");
    vm1["metadata"]["resourceVersion"] = json!("300");
    vm1["metadata"]["annotations"] = json!({
        annotations::ENABLED: "true",
        annotations::ORIGINAL: "{\"runStrategy\":\"Halted\"}",
        annotations::MEDIA: media,
        annotations::CREATED: "{\"serviceAccount\":\"sa-uid\",\"credentials\":\"c\",\"token\":\"t\"}",
    });
    vm1["spec"]["template"]["metadata"]["labels"] = json!({
        "bmc.kubevirt.io/enabled": "true",
        "bmc.kubevirt.io/vm": "vm1",
    });
    let vm: DynamicObject = serde_json::from_value(vm1.clone()).unwrap();
    let mut calls = reads_before_children();
    calls.extend([
        missing("/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes/vm1-bmc-media"),
        missing(SA),
        missing(ROLE),
        missing(BINDING),
        missing(SVC),
    ]);
    calls.extend(children_applied("sa-uid"));
    calls.extend(service_applied());
    calls.extend([
        // Known missing from the read above: applied with no second look.
        call(
            "PATCH",
            &format!("/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes/vm1-bmc-media{APPLY}"),
            200,
            json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": "vm1-bmc-media"}}),
        )
        .body(|b| {
            assert_eq!(b["spec"]["source"]["http"]["url"], "https://example.org/boot.iso");
            assert_eq!(b["metadata"]["ownerReferences"][0]["name"], "vm1");
        }),
        call("PATCH", "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?&fieldManager=kubevirt-bmc-controller", 200, vm1.clone()).body(|b| {
            assert!(b["spec"]["template"].is_null(), "no CD-ROM before the import: {b}");
            assert_eq!(b["metadata"]["annotations"][annotations::MEDIA_STATUS], "{\"phase\":\"Importing\"}");
            assert_eq!(b["metadata"]["resourceVersion"], "300");
        }),
    ]);
    let verifier = tokio::spawn(verify(handle, calls));
    reconcile_vm(&client, &vm, None, &Fresh::test(), Policy::default())
        .await
        .unwrap();
    verifier.await.unwrap();
}

const CREATED: &str = "{\"serviceAccount\":\"sa-uid\",\"credentials\":\"c\",\"token\":\"t\"}";

fn vm_ref() -> VmRef {
    VmRef {
        name: "vm1".into(),
        namespace: "vms".into(),
        uid: vm_uid(),
    }
}

/// vm1's launcher Pod with its sidecar ready, as a list or a cache returns it.
fn ready_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "virt-launcher-vm1-abcde", "namespace": "vms",
        "labels": {"kubevirt.io": "virt-launcher", "bmc.kubevirt.io/vm": "vm1", "bmc.kubevirt.io/enabled": "true"},
        "annotations": {annotations::INJECTED: "true", "kubevirt.io/domain": "vm1"}},
      "status": {"phase": "Running", "podIP": "10.0.0.7",
        "initContainerStatuses": [{"name": "bmc", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}]}})
}

/// The four children as the API server holds them after our applies: what we applied, plus
/// the fields the server adds (uid, resourceVersion, managedFields, a Service's clusterIP and
/// defaults), which must not count as a difference.
fn children_as_stored() -> (ServiceAccount, Role, RoleBinding, Service) {
    let (sa, role, binding, service) = ordered_children(&vm_ref(), ServiceType::ClusterIp);
    fn stored<K: serde::Serialize + serde::de::DeserializeOwned>(k: &K, uid: &str) -> K {
        let mut v = serde_json::to_value(k).unwrap();
        v["metadata"]["uid"] = json!(uid);
        v["metadata"]["resourceVersion"] = json!("42");
        v["metadata"]["managedFields"] = json!([{"manager": "kubevirt-bmc-controller", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}]);
        if v["kind"] == "Service" {
            v["spec"]["clusterIP"] = json!("10.96.0.10");
            v["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
            v["spec"]["sessionAffinity"] = json!("None");
            v["spec"]["ipFamilies"] = json!(["IPv4"]);
        }
        serde_json::from_value(v).unwrap()
    }
    (
        stored(&sa, "sa-uid"),
        stored(&role, "role-uid"),
        stored(&binding, "rb-uid"),
        stored(&service, "svc-uid"),
    )
}

/// vm1 as the reconciles leave it: its own plans' patches merged in until they stop.
fn prepared_vm() -> DynamicObject {
    let vm = vm(json!({annotations::ENABLED: "true", annotations::CREATED: CREATED}));
    let mut value = serde_json::to_value(&vm).unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(ready_pod()).unwrap();
    let observed = Observed {
        launcher: Some(kubevirt_bmc_webhook::controller::apply::launcher(&pod)),
        ..Default::default()
    };
    // The first reconcile prepares the VM (and, as it ran before, says it needs a restart);
    // the second finds the injected Pod and writes the status "ready"; then nothing changes.
    for _ in 0..2 {
        let Plan::OptedIn {
            vm_patch: Some(patch),
            ..
        } = plan::plan(&value, &vm_ref(), &observed, &Fresh::test())
        else {
            panic!("a reconcile before the VM settles patches it");
        };
        json_patch::merge(&mut value, &patch);
    }
    serde_json::from_value(value).unwrap()
}

/// Issue 15: a reconcile that finds everything as it should be writes nothing: no apply of an
/// unchanged child (the server's defaults on the Service are not a difference), no Secret, no
/// VM patch, no Event. Failed before: four applies every time, each after a GET.
#[tokio::test]
async fn a_no_op_reconcile_writes_nothing() {
    let (client, handle) = client();
    let (sa, role, binding, service) = children_as_stored();
    let mut calls = reads_before_children();
    calls[1].reply["items"] = json!([ready_pod()]);
    calls.extend([
        call("GET", SA, 200, serde_json::to_value(&sa).unwrap()),
        call("GET", ROLE, 200, serde_json::to_value(&role).unwrap()),
        call("GET", BINDING, 200, serde_json::to_value(&binding).unwrap()),
        call("GET", SVC, 200, serde_json::to_value(&service).unwrap()),
    ]);
    let verifier =
        tokio::spawn(async move { unexpected_calls(verify_then(handle, calls).await).await });
    let done = reconcile_vm(
        &client,
        &prepared_vm(),
        Some(&recorder(&client)),
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(done.plan, Plan::OptedIn { vm_patch: None, .. }),
        "{:?}",
        done.plan
    );
    assert_eq!(done.outcome.writes, 0);
    assert!(!done.outcome.vm_patched);
    drop(client);
    assert_eq!(verifier.await.unwrap(), Vec::<String>::new());
}

/// From the controller's caches (namespace, launcher Pod, children all known), the same
/// reconcile sends no request at all: the steady state of a prepared VM costs the API server
/// nothing between watch events.
#[tokio::test]
async fn from_the_caches_a_no_op_reconcile_makes_no_request() {
    let (client, handle) = client();
    let calls = tokio::spawn(unexpected_calls(handle));
    let (sa, role, binding, service) = children_as_stored();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(ready_pod()).unwrap();
    let observed = Observed {
        launcher: Some(kubevirt_bmc_webhook::controller::apply::launcher(&pod)),
        ..Default::default()
    };
    let existing = Existing {
        service_account: Seen::Present(sa),
        role: Seen::Present(role),
        role_binding: Seen::Present(binding),
        service: Seen::Present(service),
        data_volume: Seen::Absent,
    };
    let done = reconcile_with(
        &client,
        &prepared_vm(),
        observed,
        &existing,
        Some(&recorder(&client)),
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    assert_eq!(done.outcome.writes, 0);
    drop(client);
    assert_eq!(calls.await.unwrap(), Vec::<String>::new());
}

/// One child that differs from what we apply (a Service someone edited) is applied again; the
/// others, unchanged, are not.
#[tokio::test]
async fn only_a_child_that_differs_is_applied() {
    let (client, handle) = client();
    let (sa, role, binding, mut service) = children_as_stored();
    service.spec.as_mut().unwrap().publish_not_ready_addresses = Some(false);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(ready_pod()).unwrap();
    let observed = Observed {
        launcher: Some(kubevirt_bmc_webhook::controller::apply::launcher(&pod)),
        ..Default::default()
    };
    let existing = Existing {
        service_account: Seen::Present(sa),
        role: Seen::Present(role),
        role_binding: Seen::Present(binding),
        service: Seen::Present(service),
        data_volume: Seen::Absent,
    };
    let verifier = tokio::spawn(verify(handle, service_applied()));
    let done = reconcile_with(
        &client,
        &prepared_vm(),
        observed,
        &existing,
        None,
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    assert_eq!(done.outcome.writes, 1);
    verifier.await.unwrap();
}

/// Issue 14: a prepared, ready VM whose boot NIC lost its pinned MAC gets the
/// `BootMacNotPinned` warning written into its status and one Warning Event; the next
/// reconcile, with that status, writes nothing and sends no Event.
#[tokio::test]
async fn an_unpinned_boot_mac_is_reported_once() {
    let mut value = serde_json::to_value(prepared_vm()).unwrap();
    value["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
        .as_object_mut()
        .unwrap()
        .remove("macAddress");
    let (sa, role, binding, service) = children_as_stored();
    let rounds = |vm_patch: Option<Call>, event: Option<Call>| {
        let mut calls = reads_before_children();
        calls[1].reply["items"] = json!([ready_pod()]);
        calls.extend([
            call("GET", SA, 200, serde_json::to_value(&sa).unwrap()),
            call("GET", ROLE, 200, serde_json::to_value(&role).unwrap()),
            call("GET", BINDING, 200, serde_json::to_value(&binding).unwrap()),
            call("GET", SVC, 200, serde_json::to_value(&service).unwrap()),
        ]);
        calls.extend(vm_patch);
        calls.extend(event);
        calls
    };
    let first = rounds(
        Some(
            call("PATCH", "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?&fieldManager=kubevirt-bmc-controller", 200, value.clone())
                .body(|b| {
                    let status = annotations::Status::parse(b["metadata"]["annotations"][annotations::STATUS].as_str().unwrap()).unwrap();
                    assert!(status.ready, "{status:?}");
                    assert_eq!(status.warnings.len(), 1, "{status:?}");
                    assert_eq!(status.warnings[0].reason, "BootMacNotPinned");
                    assert!(b.get("spec").is_none(), "{b}");
                }),
        ),
        Some(
            call("POST", "/apis/events.k8s.io/v1/namespaces/vms/events?", 201, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}))
                .body(|b| {
                    assert_eq!(b["reason"], "BootMacNotPinned");
                    assert_eq!(b["type"], "Warning");
                    assert_eq!(b["regarding"]["name"], "vm1");
                }),
        ),
    );
    let (api, handle) = client();
    let verifier =
        tokio::spawn(async move { unexpected_calls(verify_then(handle, first).await).await });
    let vm: DynamicObject = serde_json::from_value(value.clone()).unwrap();
    let done = reconcile_vm(
        &api,
        &vm,
        Some(&recorder(&api)),
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    let Plan::OptedIn {
        vm_patch: Some(patch),
        ..
    } = done.plan
    else {
        panic!("the warning is written: {:?}", done.plan);
    };
    drop(api);
    assert_eq!(verifier.await.unwrap(), Vec::<String>::new());

    json_patch::merge(&mut value, &patch);
    let (api, handle) = client();
    let second = rounds(None, None);
    let verifier =
        tokio::spawn(async move { unexpected_calls(verify_then(handle, second).await).await });
    let vm: DynamicObject = serde_json::from_value(value).unwrap();
    let done = reconcile_vm(
        &api,
        &vm,
        Some(&recorder(&api)),
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(done.plan, Plan::OptedIn { vm_patch: None, .. }),
        "{:?}",
        done.plan
    );
    assert_eq!(done.outcome.writes, 0);
    drop(api);
    assert_eq!(verifier.await.unwrap(), Vec::<String>::new());
}
