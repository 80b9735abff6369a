//! The controller's kube calls against a `tower_test` mock API server: method, exact URI and
//! body, in order (ServiceAccount, Role, RoleBinding before the VM template opt-in).

mod common;

use std::time::Duration;

use common::fixture;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::core::DynamicObject;
use kube::runtime::events::{Recorder, Reporter};
use kubevirt_bmc_webhook::annotations;
use kubevirt_bmc_webhook::controller::plan::{Fresh, Plan};
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
const PODS: &str = "/api/v1/namespaces/vms/pods?&labelSelector=kubevirt.io%3Dvirt-launcher%2Cvm.kubevirt.io%2Fname%3Dvm1";

fn reads(secret_exists: bool) -> Vec<Call> {
    vec![
        call(
            "GET",
            NS,
            200,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vms"}}),
        ),
        if secret_exists {
            call(
                "GET",
                &format!("{NS}/secrets/vm1-bmc-credentials"),
                200,
                json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vm1-bmc-credentials"},
                "data": {"username": "YWRtaW4=", "password": "cA==", "session-key": "aw=="}}),
            )
        } else {
            call(
                "GET",
                &format!("{NS}/secrets/vm1-bmc-credentials"),
                404,
                status(404, "NotFound"),
            )
        },
        call(
            "GET",
            PODS,
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ),
    ]
}

fn echo_ok(method: &'static str, uri: &str, kind: &'static str) -> Call {
    call(
        method,
        uri,
        200,
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}}),
    )
}

#[tokio::test]
async fn opt_in_writes_identity_first_and_the_vm_template_last() {
    let (client, handle) = client();
    let vm1 = fixture("vm-vm1.json");
    let mut calls = reads(false);
    calls.extend([
        call("PATCH", &format!("{NS}/serviceaccounts/vm1-bmc{APPLY}"), 200, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vm1-bmc"}}))
            .body(|b| {
                assert_eq!(b["kind"], "ServiceAccount");
                assert_eq!(b["metadata"]["name"], "vm1-bmc");
                assert_eq!(b["metadata"]["ownerReferences"][0]["name"], "vm1");
                assert_eq!(b["automountServiceAccountToken"], false);
            }),
        call("PATCH", &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/vms/roles/vm1-bmc{APPLY}"), 200, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "vm1-bmc"}}))
            .body(|b| {
                assert_eq!(b["rules"][0], json!({"apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"], "verbs": ["get", "list", "watch", "patch"], "resourceNames": ["vm1"]}));
                assert_eq!(b["rules"].as_array().unwrap().len(), 5);
                assert_eq!(b["rules"][4], json!({"apiGroups": ["subresources.kubevirt.io"], "resources": ["virtualmachineinstances/console"], "verbs": ["get"], "resourceNames": ["vm1"]}));
            }),
        call("PATCH", &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/vms/rolebindings/vm1-bmc{APPLY}"), 200, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "vm1-bmc"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm1-bmc"}}))
            .body(|b| assert_eq!(b["subjects"][0], json!({"kind": "ServiceAccount", "name": "vm1-bmc", "namespace": "vms"}))),
        call("POST", &format!("{NS}/secrets?"), 201, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vm1-bmc-credentials"}}))
            .body(|b| {
                assert_eq!(b["metadata"]["name"], "vm1-bmc-credentials");
                assert_eq!(b["data"]["username"], "YWRtaW4=");
                assert_eq!(b["data"]["password"], "Z2VuZXJhdGVkLXBhc3N3b3Jk");
                assert!(b["data"]["session-key"].is_string());
            }),
        call("PATCH", &format!("{NS}/services/vm1-bmc{APPLY}"), 200, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vm1-bmc"}}))
            .body(|b| {
                assert_eq!(b["spec"]["publishNotReadyAddresses"], true);
                assert_eq!(b["spec"]["ports"][0]["port"], 623);
            }),
        call("PATCH", "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?", 200, vm1.clone())
            .body(|b| {
                assert_eq!(b["metadata"]["resourceVersion"], "100");
                assert_eq!(b["spec"]["runStrategy"], "Always");
                assert_eq!(b["spec"]["template"]["spec"]["startStrategy"], "Paused");
                assert_eq!(b["spec"]["template"]["metadata"]["annotations"][annotations::ENABLED], "true");
                assert_eq!(b["metadata"]["annotations"][annotations::ORIGINAL], "{\"runStrategy\":\"Halted\"}");
            }),
        call("POST", "/apis/events.k8s.io/v1/namespaces/vms/events?", 201, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}))
            .body(|b| {
                assert_eq!(b["reason"], "BmcPrepared");
                assert_eq!(b["regarding"]["name"], "vm1");
            }),
    ]);
    let verifier = tokio::spawn(verify(handle, calls));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kubevirt-bmc-webhook".into(),
            instance: None,
        },
    );
    let plan = reconcile_vm(
        &client,
        &vm(json!({annotations::ENABLED: "true"})),
        Some(&recorder),
        &Fresh::test(),
    )
    .await
    .unwrap();
    assert!(matches!(plan, Plan::OptedIn { prepare: true, .. }));
    verifier.await.unwrap();
}

#[tokio::test]
async fn a_failed_write_stops_before_the_vm_is_touched() {
    let (client, handle) = client();
    let mut calls = reads(false);
    calls.extend([
        echo_ok(
            "PATCH",
            &format!("{NS}/serviceaccounts/vm1-bmc{APPLY}"),
            "ServiceAccount",
        ),
        call(
            "PATCH",
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/vms/roles/vm1-bmc{APPLY}"),
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
    let mut calls = reads(true);
    calls.extend([
        echo_ok("PATCH", &format!("{NS}/serviceaccounts/vm1-bmc{APPLY}"), "ServiceAccount"),
        call("PATCH", &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/vms/roles/vm1-bmc{APPLY}"), 200, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "vm1-bmc"}})),
        call("PATCH", &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/vms/rolebindings/vm1-bmc{APPLY}"), 200, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "vm1-bmc"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm1-bmc"}})),
        echo_ok("PATCH", &format!("{NS}/services/vm1-bmc{APPLY}"), "Service"),
        call("PATCH", "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?", 409, status(409, "Conflict")),
    ]);
    let verifier = tokio::spawn(verify(handle, calls));
    let err = reconcile_vm(
        &client,
        &vm(json!({annotations::ENABLED: "true"})),
        None,
        &Fresh::test(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("patch-vm:"), "{err}");
    verifier.await.unwrap();
    assert_eq!(backoff(0), Duration::from_secs(2));
    assert_eq!(backoff(3), Duration::from_secs(16));
    assert_eq!(backoff(30), Duration::from_secs(300));
}

#[tokio::test]
async fn opt_out_restores_the_vm_then_deletes_what_it_owned() {
    let (client, handle) = client();
    let vm1 = fixture("vm-vm1.json");
    let mut calls = reads(true);
    calls.push(
        call(
            "PATCH",
            "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?",
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
        }),
    );
    let deleted =
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    calls.push(call(
        "DELETE",
        "/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes/vm1-bmc-media?",
        404,
        status(404, "NotFound"),
    ));
    for uri in [
        format!("{NS}/services/vm1-bmc?"),
        format!("{NS}/secrets/vm1-bmc-credentials?"),
        "/apis/rbac.authorization.k8s.io/v1/namespaces/vms/rolebindings/vm1-bmc?".to_owned(),
        "/apis/rbac.authorization.k8s.io/v1/namespaces/vms/roles/vm1-bmc?".to_owned(),
        format!("{NS}/serviceaccounts/vm1-bmc?"),
    ] {
        calls.push(
            call("DELETE", &uri, 200, deleted.clone())
                .body(|b| assert_eq!(b["propagationPolicy"], "Background")),
        );
    }
    let verifier = tokio::spawn(verify(handle, calls));
    let vm = vm(
        json!({annotations::ENABLED: "false", annotations::ORIGINAL: "{\"runStrategy\":\"Halted\"}"}),
    );
    let plan = reconcile_vm(&client, &vm, None, &Fresh::test())
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
    });
    let vm: DynamicObject = serde_json::from_value(vm1.clone()).unwrap();
    let mut calls = reads(true);
    calls.push(call(
        "GET",
        "/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes/vm1-bmc-media",
        404,
        status(404, "NotFound"),
    ));
    calls.extend([
        echo_ok("PATCH", &format!("{NS}/serviceaccounts/vm1-bmc{APPLY}"), "ServiceAccount"),
        call("PATCH", &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/vms/roles/vm1-bmc{APPLY}"), 200, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "vm1-bmc"}})),
        call("PATCH", &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/vms/rolebindings/vm1-bmc{APPLY}"), 200, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "vm1-bmc"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm1-bmc"}})),
        echo_ok("PATCH", &format!("{NS}/services/vm1-bmc{APPLY}"), "Service"),
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
        call("PATCH", "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1?", 200, vm1.clone()).body(|b| {
            assert!(b["spec"]["template"].is_null(), "no CD-ROM before the import: {b}");
            assert_eq!(b["metadata"]["annotations"][annotations::MEDIA_STATUS], "{\"phase\":\"Importing\"}");
            assert_eq!(b["metadata"]["resourceVersion"], "300");
        }),
    ]);
    let verifier = tokio::spawn(verify(handle, calls));
    reconcile_vm(&client, &vm, None, &Fresh::test())
        .await
        .unwrap();
    verifier.await.unwrap();
}
