//! The controller's kube calls against a `tower_test` mock API server: method, exact URI and
//! body, in order (ServiceAccount, Role, RoleBinding before the VM template opt-in). No call
//! reads a Secret; every apply and delete is preceded by the owner check.

mod common;

use std::time::Duration;

use common::fixture;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::core::DynamicObject;
use kube::runtime::events::{Recorder, Reporter};
use kubevirt_bmc_webhook::annotations;
use kubevirt_bmc_webhook::controller::plan::{Fresh, Plan, Policy};
use kubevirt_bmc_webhook::controller::run::{backoff, reconcile_vm};
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
async fn verify(mut handle: ApiHandle, calls: Vec<Call>) {
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
    serde_json::from_value(vm).unwrap()
}

const NS: &str = "/api/v1/namespaces/vms";
const APPLY: &str = "?&force=true&fieldManager=kubevirt-bmc-controller";
const PODS: &str = "/api/v1/namespaces/vms/pods?&labelSelector=kubevirt.io%3Dvirt-launcher%2Cbmc.kubevirt.io%2Fvm%3Dvm1";

fn reads() -> Vec<Call> {
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

/// GET (owner check) then apply, for each of the four named children.
fn children_applied(sa_uid: &'static str) -> Vec<Call> {
    vec![
        missing(&format!("{NS}/serviceaccounts/vm1-bmc")),
        call("PATCH", &format!("{NS}/serviceaccounts/vm1-bmc{APPLY}"), 200, owned("ServiceAccount", "v1", "vm1-bmc", sa_uid))
            .body(|b| {
                assert_eq!(b["kind"], "ServiceAccount");
                assert_eq!(b["metadata"]["name"], "vm1-bmc");
                assert_eq!(b["metadata"]["ownerReferences"][0]["name"], "vm1");
                assert_eq!(b["automountServiceAccountToken"], false);
            }),
        missing(&format!("{RBAC}/roles/vm1-bmc")),
        call("PATCH", &format!("{RBAC}/roles/vm1-bmc{APPLY}"), 200, owned("Role", "rbac.authorization.k8s.io/v1", "vm1-bmc", "role-uid"))
            .body(|b| {
                assert_eq!(b["rules"][0], json!({"apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"], "verbs": ["get", "list", "watch", "patch"], "resourceNames": ["vm1"]}));
                assert_eq!(b["rules"].as_array().unwrap().len(), 5);
                assert_eq!(b["rules"][4], json!({"apiGroups": ["subresources.kubevirt.io"], "resources": ["virtualmachineinstances/console"], "verbs": ["get"], "resourceNames": ["vm1"]}));
            }),
        missing(&format!("{RBAC}/rolebindings/vm1-bmc")),
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
        missing(&format!("{NS}/services/vm1-bmc")),
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
    let plan = reconcile_vm(
        &client,
        &vm(json!({annotations::ENABLED: "true"})),
        Some(&recorder(&client)),
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    assert!(matches!(plan, Plan::OptedIn { prepare: true, .. }));
    verifier.await.unwrap();
}

/// Issue 12 §2: a ServiceAccount named `vm1-bmc` that is not the VM's is neither applied over
/// (adopted) nor used; the VM's status and a Warning Event say why. Failed before: the force
/// apply took it over.
#[tokio::test]
async fn an_object_of_our_name_that_is_not_ours_is_reported_not_adopted() {
    let (client, handle) = client();
    let mut calls = reads();
    calls.extend([
        call("GET", &format!("{NS}/serviceaccounts/vm1-bmc"), 200, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vm1-bmc", "uid": "someone-elses"}})),
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
        missing(&format!("{NS}/serviceaccounts/vm1-bmc")),
        call(
            "PATCH",
            &format!("{NS}/serviceaccounts/vm1-bmc{APPLY}"),
            200,
            owned("ServiceAccount", "v1", "vm1-bmc", "sa-uid"),
        ),
        missing(&format!("{RBAC}/roles/vm1-bmc")),
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
    let mut calls = reads();
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
    calls.push(missing(
        "/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes/vm1-bmc-media",
    ));
    let ours = |uri: String, kind: &str, api: &str, uid: &'static str| {
        [
            call("GET", &uri, 200, owned(kind, api, "vm1-bmc", uid)),
            call("DELETE", &format!("{uri}?"), 200, deleted.clone()).body(move |b| {
                assert_eq!(b["propagationPolicy"], "Background");
                assert_eq!(b["preconditions"]["uid"], uid);
            }),
        ]
    };
    calls.extend(ours(
        format!("{NS}/services/vm1-bmc"),
        "Service",
        "v1",
        "svc-uid",
    ));
    calls.extend(ours(
        format!("{RBAC}/rolebindings/vm1-bmc"),
        "RoleBinding",
        "rbac.authorization.k8s.io/v1",
        "rb-uid",
    ));
    calls.push(call(
        "GET",
        &format!("{RBAC}/roles/vm1-bmc"),
        200,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "vm1-bmc", "uid": "theirs"}}),
    ));
    calls.extend(ours(
        format!("{NS}/serviceaccounts/vm1-bmc"),
        "ServiceAccount",
        "v1",
        "sa-uid",
    ));
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
    let plan = reconcile_vm(
        &client,
        &vm,
        Some(&recorder(&client)),
        &Fresh::test(),
        Policy::default(),
    )
    .await
    .unwrap();
    assert!(matches!(plan, Plan::OptOut { .. }));
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
    let mut calls = reads();
    calls.push(missing(
        "/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes/vm1-bmc-media",
    ));
    calls.extend(children_applied("sa-uid"));
    calls.extend(service_applied());
    calls.extend([
        missing("/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes/vm1-bmc-media"),
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
