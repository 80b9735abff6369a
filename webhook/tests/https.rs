//! The captured AdmissionReviews through the real router over real HTTPS.

mod common;

use std::time::Duration;

use base64::Engine;
use common::tls::{Ca, Client, SecretDir, start};
use common::{fixture, fixture_path};
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

fn body(name: &str) -> Bytes {
    Bytes::from(std::fs::read(fixture_path(name)).unwrap())
}

struct Setup {
    _dir: SecretDir,
    ca: Ca,
    server: common::tls::Running,
}

async fn setup() -> Setup {
    let ca = Ca::new();
    let (cert, key, _) = ca.serving("webhook");
    let dir = SecretDir::new(&cert, &key);
    let server = start(&dir.cert(), &dir.key(), Duration::from_secs(60)).await;
    Setup {
        _dir: dir,
        ca,
        server,
    }
}

fn decoded_patch(review: &Value) -> json_patch::Patch {
    let b64 = review["response"]["patch"].as_str().expect("a patch");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test]
async fn opted_in_pod_is_patched_into_a_valid_pod_with_the_sidecar() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    let review = client
        .post_json(
            "/mutate-pods?timeout=5s",
            body("admissionreview-a-vm1-optin.json"),
        )
        .await;
    let request = fixture("admissionreview-a-vm1-optin.json");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["uid"], request["request"]["uid"]);
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    let patch = decoded_patch(&review);
    let mut pod = fixture("pod-a-vm1-optin.json");
    json_patch::patch(&mut pod, &patch).unwrap();
    let pod: Pod = serde_json::from_value(pod).expect("valid Pod");
    let spec = pod.spec.unwrap();
    let bmc = spec.init_containers.unwrap().pop().unwrap();
    assert_eq!(bmc.name, "bmc");
    assert_eq!(bmc.restart_policy.as_deref(), Some("Always"));
    // The Pod keeps KubeVirt's account (was: vm1-bmc, issue 12's bug).
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
}

#[tokio::test]
async fn not_opted_in_pod_is_allowed_unchanged() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    let review = client
        .post_json(
            "/mutate-pods?timeout=5s",
            body("admissionreview-b-vm2-no-optin.json"),
        )
        .await;
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none(), "{review}");
}

#[tokio::test]
async fn bad_value_is_denied_with_the_annotation_value_and_allowed_values() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    let review = client
        .post_json(
            "/mutate-pods?timeout=5s",
            body("admissionreview-c-vm3-bad-value.json"),
        )
        .await;
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(
        review["response"]["status"]["message"],
        "annotation bmc.kubevirt.io/enabled=\"maybe\" is not valid: allowed values are \"true\" and \"false\""
    );
}

#[tokio::test]
async fn ephemeral_pod_is_skipped() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    let review = client
        .post_json(
            "/mutate-pods?timeout=5s",
            body("admissionreview-d-vm1-ephemeral.json"),
        )
        .await;
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none());
}

#[tokio::test]
async fn a_pod_sent_twice_is_injected_once() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    let mut request = fixture("admissionreview-a-vm1-optin.json");
    let first = client
        .post_json(
            "/mutate-pods",
            Bytes::from(serde_json::to_vec(&request).unwrap()),
        )
        .await;
    // Reinvocation (IfNeeded) sends the already-patched Pod back.
    json_patch::patch(&mut request["request"]["object"], &decoded_patch(&first)).unwrap();
    let second = client
        .post_json(
            "/mutate-pods",
            Bytes::from(serde_json::to_vec(&request).unwrap()),
        )
        .await;
    assert_eq!(second["response"]["allowed"], true);
    assert!(second["response"].get("patch").is_none(), "{second}");
    let metrics = String::from_utf8(
        client
            .request("GET", "/metrics", Bytes::new())
            .await
            .1
            .to_vec(),
    )
    .unwrap();
    assert!(metrics.contains("outcome=\"injected\"} 1"), "{metrics}");
    assert!(
        metrics.contains("outcome=\"skipped-already-injected\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_capture_is_answered_and_only_opted_in_ones_are_patched() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    for (name, patched) in [
        ("admissionreview-e-vm1-migration-target.json", true),
        ("admissionreview-f-vm4-legacy-containerdisk.json", true),
        ("admissionreview-b-vm2-no-optin.json", false),
    ] {
        let review = client.post_json("/mutate-pods", body(name)).await;
        assert_eq!(review["response"]["allowed"], true, "{name}");
        assert_eq!(review["response"].get("patch").is_some(), patched, "{name}");
    }
}

#[tokio::test]
async fn garbage_is_answered_without_denying_a_readable_review() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    // A review whose object is not a Pod: admitted, with a warning.
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "userInfo": {},
            "object": {"metadata": {"name": "x"}, "spec": {"containers": "not a list"}}}
    });
    let answer = client
        .post_json(
            "/mutate-pods",
            Bytes::from(serde_json::to_vec(&review).unwrap()),
        )
        .await;
    assert_eq!(answer["response"]["uid"], "u1");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(
        answer["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("admitted unchanged")
    );
}

#[tokio::test]
async fn health_and_metrics_answer() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = client.request("GET", path, Bytes::new()).await;
        assert_eq!((status, &body[..]), (200, &b"ok"[..]), "{path}");
    }
    let (status, body) = client.request("GET", "/metrics", Bytes::new()).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("# TYPE kubevirt_bmc_admission_total counter"));
}

fn vm_review(operation: &str, annotations: Value, old: Option<Value>) -> Bytes {
    let mut vm = fixture("vm-vm1.json");
    vm["metadata"]["annotations"] = annotations;
    let mut request = json!({
        "uid": "vm-uid", "kind": {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"},
        "resource": {"group": "kubevirt.io", "version": "v1", "resource": "virtualmachines"},
        "name": "vm1", "namespace": "vms", "operation": operation, "userInfo": {"username": "alice"},
        "object": vm.clone(),
    });
    if let Some(old) = old {
        let mut old_vm = vm;
        old_vm["metadata"]["annotations"] = old;
        request["oldObject"] = old_vm;
    }
    Bytes::from(
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}))
            .unwrap(),
    )
}

#[tokio::test]
async fn vm_validation_denies_bad_values_precisely() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    let answer = client
        .post_json(
            "/validate-virtualmachines?timeout=5s",
            vm_review(
                "UPDATE",
                json!({"bmc.kubevirt.io/enabled": "yes", "bmc.kubevirt.io/service-type": "External"}),
                Some(json!({})),
            ),
        )
        .await;
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        answer["response"]["status"]["message"],
        "annotation bmc.kubevirt.io/enabled=\"yes\" is not valid: allowed values are \"true\" and \"false\"; annotation bmc.kubevirt.io/service-type=\"External\" is not valid: allowed values are \"ClusterIP\", \"NodePort\" and \"LoadBalancer\""
    );
    // The fixture VM (masquerade with ports [22]) opted in: allowed, no warning.
    let answer = client
        .post_json(
            "/validate-virtualmachines",
            vm_review("CREATE", json!({"bmc.kubevirt.io/enabled": "true"}), None),
        )
        .await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("warnings").is_none(), "{answer}");
    // A bad value that was already there does not block an unrelated update.
    let answer = client
        .post_json(
            "/validate-virtualmachines",
            vm_review(
                "UPDATE",
                json!({"bmc.kubevirt.io/enabled": "yes", "other": "x"}),
                Some(json!({"bmc.kubevirt.io/enabled": "yes"})),
            ),
        )
        .await;
    assert_eq!(answer["response"]["allowed"], true);
}

#[tokio::test]
async fn vm_validation_warns_about_unreachable_networking() {
    let s = setup().await;
    let mut client = Client::connect(s.server.addr, &s.ca.der).await;
    let mut vm: Value = serde_json::from_slice(&vm_review(
        "CREATE",
        json!({"bmc.kubevirt.io/enabled": "true"}),
        None,
    ))
    .unwrap();
    vm["request"]["object"]["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
        .as_object_mut()
        .unwrap()
        .remove("ports");
    let answer = client
        .post_json(
            "/validate-virtualmachines",
            Bytes::from(serde_json::to_vec(&vm).unwrap()),
        )
        .await;
    assert_eq!(answer["response"]["allowed"], true);
    let warning = answer["response"]["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("masquerade without a ports list"),
        "{warning}"
    );
}
