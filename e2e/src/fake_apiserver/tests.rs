//! The fake against the real API server's answers captured in `e2e/testdata/fixtures/`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;

const TOKEN: &str = "vm1-token";
const NS: &str = "vms";

fn fixture(name: &str) -> Value {
    let path = format!("{}/testdata/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn fake() -> FakeApiServer {
    let fake = FakeApiServer::start().await.unwrap();
    fake.grant(TOKEN, "system:serviceaccount:vms:vm1-bmc", &["vm1"]);
    for name in ["vm1", "vm2"] {
        let mut vm = fixture("vm-vm1.json");
        vm["metadata"]["uid"] = json!(format!("uid-{name}"));
        vm["spec"]["template"]["metadata"]["labels"]["kubevirt.io/vm"] = json!(name);
        fake.put(Gvr::vm(), NS, name, vm);
    }
    fake
}

fn request_text(method: &str, path: &str, token: &str, content_type: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn call(
    fake: &FakeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    call_as(TOKEN, fake, method, path, content_type, body).await
}

const VM1: &str = "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1";
const VM2: &str = "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm2";
const SUB: &str = "/apis/subresources.kubevirt.io/v1/namespaces/vms";

#[tokio::test]
async fn forbidden_bodies_are_the_real_api_servers() {
    let fake = fake().await;
    let (code, body) = call(&fake, "GET", VM2, "application/json", "").await;
    assert_eq!((code, body), (403, fixture("status-403-get-vm2.json")));
    let (code, body) = call(&fake, "PATCH", VM2, "application/merge-patch+json", "{}").await;
    assert_eq!((code, body), (403, fixture("status-403-patch-vm2.json")));
    let list = "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines";
    let (code, body) = call(&fake, "GET", list, "application/json", "").await;
    assert_eq!(code, 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("virtualmachines.kubevirt.io is forbidden")
    );
    let (code, body) = call(
        &fake,
        "PUT",
        &format!("{SUB}/virtualmachines/vm2/start"),
        "application/json",
        "{}",
    )
    .await;
    assert_eq!(code, 403);
    assert!(body["message"].as_str().unwrap().contains(
        "virtualmachines.subresources.kubevirt.io \"vm2\" is forbidden: User \"system:serviceaccount:vms:vm1-bmc\" cannot update resource \"virtualmachines/start\" in API group \"subresources.kubevirt.io\""
    ), "{body}");
    let (code, _) = call(
        &fake,
        "GET",
        &format!("{list}?fieldSelector=metadata.name%3Dvm1"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 200, "a field selector on the granted name is allowed");
}

#[tokio::test]
async fn stale_resource_versions_conflict_and_failed_tests_are_invalid() {
    let fake = fake().await;
    let stale =
        json!({"metadata": {"resourceVersion": "1", "annotations": {"a": "b"}}}).to_string();
    let (code, body) = call(&fake, "PATCH", VM1, "application/merge-patch+json", &stale).await;
    assert_eq!(
        (code, body),
        (
            409,
            fixture("status-409-patch-vm1-stale-resourceversion.json")
        )
    );
    let test = json!([{"op": "test", "path": "/spec/runStrategy", "value": "Halted"}]).to_string();
    let (code, body) = call(&fake, "PATCH", VM1, "application/json-patch+json", &test).await;
    assert_eq!(
        (code, body),
        (422, fixture("status-422-jsonpatch-test-failed.json"))
    );
    let (code, _) = call(
        &fake,
        "PATCH",
        VM1,
        "application/strategic-merge-patch+json",
        "{}",
    )
    .await;
    assert_eq!(code, 415);
    // A passing test with a bootOrder: generation 1 -> 2, as in the capture.
    let ok = json!([
        {"op": "test", "path": "/spec/template/spec/domain/devices/interfaces/0/name", "value": "default"},
        {"op": "add", "path": "/spec/template/spec/domain/devices/interfaces/0/bootOrder", "value": 1},
    ])
    .to_string();
    let (code, body) = call(&fake, "PATCH", VM1, "application/json-patch+json", &ok).await;
    assert_eq!(code, 200);
    assert_eq!(body["metadata"]["generation"], 2);
    // Annotations alone do not bump the generation.
    let merge =
        json!({"metadata": {"annotations": {"bmc.kubevirt.io/power-state": "On"}}}).to_string();
    let (_, body) = call(&fake, "PATCH", VM1, "application/merge-patch+json", &merge).await;
    assert_eq!(body["metadata"]["generation"], 2);
    assert_eq!(
        body["metadata"]["annotations"]["kubevirt.io/latest-observed-api-version"],
        "v1"
    );
    // The VMI the controller made from generation 1 says so.
    assert_eq!(
        fake.vmi(NS, "vm1").unwrap()["metadata"]["annotations"]["kubevirt.io/vm-generation"],
        "1"
    );
}

#[tokio::test]
async fn subresources_follow_kubevirts_rules() {
    let fake = fake().await;
    let put = |path: String| {
        let fake = &fake;
        async move { call(fake, "PUT", &path, "application/json", "{}").await }
    };
    let vmi = |verb: &str| format!("{SUB}/virtualmachineinstances/vm1/{verb}");
    let vm = |verb: &str| format!("{SUB}/virtualmachines/vm1/{verb}");
    assert!(vmi_paused_now(&fake), "startStrategy Paused");
    let (code, body) = put(vm("start")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (409, Some("Always does not support manual start requests"))
    );
    let (code, body) = put(vmi("pause")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (409, Some("VMI is already paused"))
    );
    let (code, body) = put(vmi("softreboot")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (409, Some("VMI is paused"))
    );
    assert_eq!(put(vmi("unpause")).await.0, 202);
    assert!(!vmi_paused_now(&fake));
    let conditions = fake.vmi(NS, "vm1").unwrap()["status"]["conditions"].clone();
    assert!(
        !conditions.to_string().contains("Paused"),
        "KubeVirt removes the condition: {conditions}"
    );
    let (code, body) = put(vmi("unpause")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (409, Some("VMI is not paused"))
    );
    let before = fake.vmi(NS, "vm1").unwrap()["metadata"]["uid"].clone();
    assert_eq!(put(vm("restart")).await.0, 202);
    let after = fake.vmi(NS, "vm1").unwrap();
    assert_ne!(after["metadata"]["uid"], before, "a new VMI");
    assert!(vmi_paused_now(&fake), "which starts paused");
    assert_eq!(put(vm("stop")).await.0, 202);
    assert!(fake.vmi(NS, "vm1").is_none());
    let (code, body) = put(vm("restart")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (409, Some("Halted does not support manual restart requests"))
    );
    assert_eq!(put(vm("start")).await.0, 202);
    assert!(fake.vmi(NS, "vm1").is_some());
}

fn vmi_paused_now(fake: &FakeApiServer) -> bool {
    kubevirt::vmi_paused(&fake.vmi(NS, "vm1").unwrap())
}

#[tokio::test]
async fn watches_resume_send_bookmarks_and_end_when_broken() {
    let fake = fake().await;
    let rv = fake.resource_version();
    let mut stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let path = format!(
        "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dvm1"
    );
    stream
        .write_all(request_text("GET", &path, TOKEN, "application/json", "").as_bytes())
        .await
        .unwrap();
    fake.modify(Gvr::vm(), NS, "vm2", |vm| {
        vm["metadata"]["annotations"]["x"] = json!("other vm")
    });
    fake.modify(Gvr::vm(), NS, "vm1", |vm| {
        vm["metadata"]["annotations"]["x"] = json!("y")
    });
    let mut lines = BufReader::new(stream).lines();
    let mut events = Vec::new();
    while events.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // Chunked framing: keep the JSON lines only.
        if let Ok(event) = serde_json::from_str::<Value>(line.trim())
            && event.is_object()
        {
            events.push(event);
        }
    }
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(
        events[0]["object"]["metadata"]["annotations"]["x"], "y",
        "vm2 filtered out"
    );
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(events[1]["object"]["kind"], "VirtualMachine");
    assert!(events[1]["object"]["metadata"]["resourceVersion"].is_string());
    fake.break_watches();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match lines.next_line().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ended");
    let watch = fake.requests().into_iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(watch.status, 200);
}

#[tokio::test]
async fn unknown_tokens_are_unauthorized_and_everything_is_logged() {
    let fake = fake().await;
    let mut stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    stream
        .write_all(request_text("GET", VM1, "wrong", "application/json", "").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    let log = fake.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str(), log[0].status),
        ("GET", VM1, 401)
    );
    assert_eq!(log[0].user, None);
}

#[tokio::test]
async fn a_down_server_refuses_connections_until_back() {
    let fake = fake().await;
    fake.set_down(true);
    let mut stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let _ = stream
        .write_all(request_text("GET", VM1, TOKEN, "application/json", "").as_bytes())
        .await;
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    assert!(text.is_empty(), "no answer while down: {text}");
    assert_eq!(
        fake.refused_connections().len(),
        1,
        "the refusal is counted"
    );
    fake.set_down(false);
    assert_eq!(call(&fake, "GET", VM1, "application/json", "").await.0, 200);
    assert_eq!(fake.refused_connections().len(), 1, "a served one is not");
    fake.clear_requests();
    assert!(fake.refused_connections().is_empty());
}

#[tokio::test]
async fn the_controller_replaces_a_finished_vmi_and_can_be_held() {
    let fake = fake().await;
    let first = fake.vmi(NS, "vm1").unwrap()["metadata"]["uid"].clone();
    fake.hold_controller(true);
    assert!(fake.guest_shutdown(NS, "vm1"));
    assert_eq!(fake.vmi(NS, "vm1").unwrap()["status"]["phase"], "Succeeded");
    fake.hold_controller(false);
    let second = fake.vmi(NS, "vm1").unwrap();
    assert_ne!(second["metadata"]["uid"], first);
    assert_eq!(second["status"]["phase"], "Running");
    assert!(kubevirt::vmi_paused(&second));
    assert_eq!(second["metadata"]["ownerReferences"][0]["name"], "vm1");
}

async fn call_as(
    token: &str,
    fake: &FakeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let (status, body) = exchange(token, fake, method, path, content_type, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// One request on a connection of its own (`Connection: close`): the status and the raw
/// body, read to the end.
async fn exchange(
    token: &str,
    fake: &FakeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    stream
        .write_all(request_text(method, path, token, content_type, body).as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test]
async fn create_apply_delete_and_label_selectors_behave_like_the_api_server() {
    let fake = fake().await;
    fake.grant_all("admin", "admin");
    let secrets = "/api/v1/namespaces/vms/secrets";
    let body = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1","labels":{"a":"b"}}}"#;
    let (code, created) = call_as("admin", &fake, "POST", secrets, "application/json", body).await;
    assert_eq!(code, 201);
    assert_eq!(created["metadata"]["namespace"], "vms");
    let (code, again) = call_as("admin", &fake, "POST", secrets, "application/json", body).await;
    assert_eq!(
        (code, again["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    // Server-side apply creates a missing object and merges onto an existing one.
    let sa = "/api/v1/namespaces/vms/serviceaccounts/vm1-bmc";
    let apply = "application/apply-patch+yaml";
    let (code, applied) = call_as(
        "admin",
        &fake,
        "PATCH",
        sa,
        apply,
        r#"{"metadata":{"name":"vm1-bmc","labels":{"x":"1"}}}"#,
    )
    .await;
    assert_eq!(
        (code, applied["kind"].as_str()),
        (200, Some("ServiceAccount"))
    );
    let (_, applied) = call_as(
        "admin",
        &fake,
        "PATCH",
        sa,
        apply,
        r#"{"metadata":{"labels":{"y":"2"}}}"#,
    )
    .await;
    assert_eq!(applied["metadata"]["labels"], json!({"x": "1", "y": "2"}));

    // Label selectors, namespaced and cluster-wide.
    let (_, list) = call_as(
        "admin",
        &fake,
        "GET",
        "/api/v1/secrets?labelSelector=a%3Db",
        "application/json",
        "",
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = call_as(
        "admin",
        &fake,
        "GET",
        &format!("{secrets}?labelSelector=a%3Dc"),
        "application/json",
        "",
    )
    .await;
    assert!(list["items"].as_array().unwrap().is_empty());

    let (code, _) = call_as(
        "admin",
        &fake,
        "DELETE",
        &format!("{secrets}/s1"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = call_as(
        "admin",
        &fake,
        "DELETE",
        &format!("{secrets}/s1"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 404);
    // The limited token may not create.
    let (code, _) = call(&fake, "POST", secrets, "application/json", body).await;
    assert_eq!(code, 403);
}

/// The token controller fills a token Secret for an existing account with a token limited to
/// the names its Roles allow, deletes one whose account is missing, and the Secrets owned by
/// an account go when it is deleted; a DELETE with another UID as precondition is refused.
#[tokio::test]
async fn token_secrets_are_filled_by_the_token_controller_and_go_with_their_account() {
    use base64::Engine;
    let fake = fake().await;
    fake.grant_all("admin", "admin");
    let post = |path: &'static str, body: Value| {
        let fake = &fake;
        async move {
            call_as(
                "admin",
                fake,
                "POST",
                path,
                "application/json",
                &body.to_string(),
            )
            .await
        }
    };
    let secrets = "/api/v1/namespaces/vms/secrets";
    let token_secret = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
               "metadata": {"name": name, "annotations": {"kubernetes.io/service-account.name": "vm1-bmc"}}})
    };
    // No account: the token controller deletes the Secret.
    let (code, _) = post(secrets, token_secret("early")).await;
    assert_eq!(code, 201);
    assert!(
        fake.get(Gvr::new("", "v1", "secrets"), NS, "early")
            .is_none()
    );

    let (_, sa) = post(
        "/api/v1/namespaces/vms/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vm1-bmc"}}),
    )
    .await;
    post(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/vms/roles",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "vm1-bmc"},
               "rules": [{"apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"], "verbs": ["get"], "resourceNames": ["vm1"]}]}),
    )
    .await;
    post(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/vms/rolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "vm1-bmc"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm1-bmc"},
               "subjects": [{"kind": "ServiceAccount", "name": "vm1-bmc", "namespace": "vms"}]}),
    )
    .await;
    let mut owned = token_secret("vm1-bmc-token");
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ServiceAccount", "name": "vm1-bmc", "uid": sa["metadata"]["uid"]}]);
    let (code, created) = post(secrets, owned).await;
    assert_eq!(code, 201);
    assert!(created.get("data").is_none(), "filled in after creation");
    let stored = fake
        .get(Gvr::new("", "v1", "secrets"), NS, "vm1-bmc-token")
        .unwrap();
    let token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(stored["data"]["token"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let (code, _) = call_as(&token, &fake, "GET", VM1, "application/json", "").await;
    assert_eq!(
        code, 200,
        "the token is the account's, limited to its Role's names"
    );
    let (code, _) = call_as(&token, &fake, "GET", VM2, "application/json", "").await;
    assert_eq!(code, 403);

    // DELETE with a UID precondition that does not match: refused, nothing deleted.
    let sa_path = "/api/v1/namespaces/vms/serviceaccounts/vm1-bmc";
    let (code, refused) = call_as(
        "admin",
        &fake,
        "DELETE",
        sa_path,
        "application/json",
        r#"{"preconditions":{"uid":"someone-else"}}"#,
    )
    .await;
    assert_eq!(code, 409);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition: someone-else")
    );
    let body = json!({"preconditions": {"uid": sa["metadata"]["uid"]}}).to_string();
    let (code, _) = call_as("admin", &fake, "DELETE", sa_path, "application/json", &body).await;
    assert_eq!(code, 200);
    assert!(
        fake.get(Gvr::new("", "v1", "secrets"), NS, "vm1-bmc-token")
            .is_none(),
        "the account's Secrets go with it"
    );
}

async fn admin_get(fake: &FakeApiServer, path: &str) -> (u16, Value) {
    call_as("admin", fake, "GET", path, "application/json", "").await
}

#[tokio::test]
async fn lists_page_by_limit_and_continue_as_the_api_server_does() {
    let fake = fake().await;
    fake.grant_all("admin", "system:admin");
    for name in ["vm3", "vm4", "vm5"] {
        let mut vm = fixture("vm-vm1.json");
        vm["metadata"]["name"] = json!(name);
        fake.put(Gvr::vm(), "other", name, vm);
    }
    let list = "/apis/kubevirt.io/v1/virtualmachines";
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let (code, first) = admin_get(&fake, &format!("{list}?limit=2")).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(names(&first), ["other/vm3", "other/vm4"]);
    let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
    let rv = first["metadata"]["resourceVersion"].clone();

    // A write between pages: later pages still carry the first page's resourceVersion.
    let mut vm = fixture("vm-vm1.json");
    vm["metadata"]["name"] = json!("vm6");
    fake.put(Gvr::vm(), "other", "vm6", vm);
    let (code, second) = admin_get(&fake, &format!("{list}?limit=2&continue={token}")).await;
    assert_eq!(code, 200, "{second}");
    assert_eq!(names(&second), ["other/vm5", "other/vm6"]);
    assert_eq!(second["metadata"]["resourceVersion"], rv);
    let token = second["metadata"]["continue"].as_str().unwrap().to_owned();
    let (_, last) = admin_get(&fake, &format!("{list}?limit=2&continue={token}")).await;
    assert_eq!(names(&last), ["vms/vm1", "vms/vm2"]);
    assert!(last["metadata"].get("continue").is_none(), "{last}");

    let (_, whole) = admin_get(&fake, list).await;
    assert_eq!(whole["items"].as_array().unwrap().len(), 6);
    assert!(whole["metadata"].get("continue").is_none());
    for bad in ["limit=two", "limit=1&continue=not-a-token"] {
        let (code, _) = admin_get(&fake, &format!("{list}?{bad}")).await;
        assert_eq!(code, 400, "{bad}");
    }
}

/// A watch that ends by itself (an error, `timeoutSeconds`): its status and the events it
/// carried, chunk framing stripped.
async fn watch_to_end(fake: &FakeApiServer, path: &str) -> (u16, Vec<Value>) {
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(10),
        exchange("admin", fake, "GET", path, "application/json", ""),
    )
    .await
    .unwrap();
    let events = body
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .filter(Value::is_object)
        .collect();
    (status, events)
}

#[tokio::test]
async fn a_watch_from_before_a_compaction_gets_410_expired_and_one_from_after_resumes() {
    let fake = fake().await;
    fake.grant_all("admin", "system:admin");
    let vms = "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines";
    let before = fake.resource_version();
    fake.modify(Gvr::vm(), NS, "vm1", |vm| {
        vm["metadata"]["annotations"]["x"] = json!("1")
    });
    fake.compact();
    let after = fake.resource_version();
    assert!(after > before);
    let (status, events) =
        watch_to_end(&fake, &format!("{vms}?watch=true&resourceVersion={before}")).await;
    assert_eq!(status, 200, "a watch answers its errors as an event");
    assert_eq!(events.len(), 1, "{events:?}");
    let status_object = &events[0]["object"];
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(status_object["kind"], "Status");
    assert_eq!(status_object["code"], 410);
    assert_eq!(status_object["reason"], "Expired");
    assert_eq!(
        status_object["message"],
        format!("too old resource version: {before} ({after})")
    );

    fake.modify(Gvr::vm(), NS, "vm1", |vm| {
        vm["metadata"]["annotations"]["x"] = json!("2")
    });
    let (status, events) = watch_to_end(
        &fake,
        &format!(
            "{vms}?watch=true&resourceVersion={after}&timeoutSeconds=1&fieldSelector=metadata.name%3Dvm1"
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"]["metadata"]["annotations"]["x"], "2");
}
