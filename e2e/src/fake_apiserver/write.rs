//! Writes beyond patches: create (POST), delete, and server-side apply as kube sends it
//! (`application/apply-patch+yaml` with a JSON body, taken as a merge that creates the
//! object when missing), plus label selectors for lists and watches.

use axum::body::Body;
use http::Response;
use serde_json::{Value, json};

use super::http::{Route, conflict, json_response, not_found, status};
use super::store::Gvr;
use super::store::Key;
use super::{Shared, lock};

/// A `labelSelector` of equality terms: `k=v`, `k==v`, `k!=v`, `k` (exists), `!k`.
#[derive(Debug, Default)]
pub(super) struct Selector {
    terms: Vec<Term>,
}

#[derive(Debug)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Selector {
    pub(super) fn parse(selector: Option<&str>) -> Selector {
        let terms = selector
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|term| {
                if let Some((k, v)) = term.split_once("!=") {
                    Term::NotEquals(k.to_owned(), v.to_owned())
                } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('='))
                {
                    Term::Equals(k.to_owned(), v.to_owned())
                } else if let Some(k) = term.strip_prefix('!') {
                    Term::Absent(k.to_owned())
                } else {
                    Term::Exists(term.to_owned())
                }
            })
            .collect();
        Selector { terms }
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.terms.iter().all(|term| match term {
            Term::Equals(k, v) => labels[k].as_str() == Some(v),
            Term::NotEquals(k, v) => labels[k].as_str() != Some(v),
            Term::Exists(k) => labels.get(k).is_some(),
            Term::Absent(k) => labels.get(k).is_none(),
        })
    }
}

fn already_exists(route: &Route, name: &str) -> Response<Body> {
    let group = &route.gvr.group;
    let resource = &route.gvr.resource;
    let prefix = if group.is_empty() {
        resource.clone()
    } else {
        format!("{resource}.{group}")
    };
    status(
        409,
        "AlreadyExists",
        &format!("{prefix} \"{name}\" already exists"),
        json!({"name": name, "group": group, "kind": resource}),
    )
}

/// POST to a collection: 409 AlreadyExists when the name is taken, `generateName` honoured.
pub(super) async fn create(shared: &Shared, route: &Route, body: &[u8]) -> Response<Body> {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the request body is not JSON", json!({}));
    };
    let name = match object["metadata"]["name"].as_str() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => match object["metadata"]["generateName"].as_str() {
            Some(prefix) => {
                let suffix = uuid::Uuid::new_v4().simple().to_string();
                format!("{prefix}{}", &suffix[..5])
            }
            None => {
                return status(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                    json!({}),
                );
            }
        },
    };
    object["metadata"]["name"] = json!(name);
    if route.gvr.group.is_empty() && route.gvr.resource == "pods" {
        object = match admit_pod(shared, &route.namespace, object).await {
            Ok(object) => object,
            Err(response) => return response,
        };
    }
    let key = Key::new(route.gvr.clone(), &route.namespace, &name);
    let mut store = shared.store();
    if store.get(&key).is_some() {
        return already_exists(route, &name);
    }
    let stored = store.put(&key, object);
    if route.gvr.group.is_empty() && route.gvr.resource == "secrets" {
        super::tokens::sync_secret(shared, &mut store, &route.namespace, &name);
    }
    shared.settle(&mut store);
    // The creator sees what it created: the token controller fills the Secret in afterwards.
    json_response(201, &stored)
}

/// The mutating webhook (when configured and selecting the Pod), then the service account
/// check kube-apiserver's ServiceAccount admission plugin makes after it.
// A refusal is the response itself, built once per refused request.
#[allow(clippy::result_large_err)]
async fn admit_pod(shared: &Shared, namespace: &str, pod: Value) -> Result<Value, Response<Body>> {
    let webhook = lock(&shared.webhook).clone();
    let generate_name = pod["metadata"]["generateName"].as_str().map(str::to_owned);
    let shown_name = generate_name.clone().unwrap_or_else(|| {
        pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    let pod = match webhook.filter(|w| w.selects(&pod)) {
        None => pod,
        Some(webhook) => match webhook.admit(namespace, &pod).await {
            Ok(Ok(patched)) => patched,
            Ok(Err(message)) => {
                return Err(status(
                    400,
                    "BadRequest",
                    &format!(
                        "admission webhook \"{}\" denied the request: {message}",
                        webhook.name
                    ),
                    json!({}),
                ));
            }
            Err(error) if webhook.fail_open => {
                eprintln!("fake API server: failed calling webhook, failing open: {error}");
                pod
            }
            Err(error) => {
                return Err(status(
                    500,
                    "InternalError",
                    &format!(
                        "Internal error occurred: failed calling webhook \"{}\": {error}",
                        webhook.name
                    ),
                    json!({}),
                ));
            }
        },
    };
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    // "default" exists in every namespace of a real cluster.
    let exists = account == "default"
        || shared
            .store()
            .get(&Key::new(
                Gvr::new("", "v1", "serviceaccounts"),
                namespace,
                &account,
            ))
            .is_some();
    if !exists {
        return Err(status(
            403,
            "Forbidden",
            &format!(
                "pods \"{shown_name}\" is forbidden: error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found"
            ),
            json!({"name": shown_name, "kind": "pods"}),
        ));
    }
    Ok(pod)
}

/// Creates a Pod as a controller inside the cluster would (admission included); the
/// refusal's message on failure.
pub(super) async fn create_pod(
    shared: &Shared,
    namespace: &str,
    pod: Value,
) -> Result<Value, String> {
    let route = Route {
        gvr: Gvr::new("", "v1", "pods"),
        namespace: namespace.to_owned(),
        name: None,
        subresource: None,
    };
    let body = serde_json::to_vec(&pod).expect("serialises");
    let response = create(shared, &route, &body).await;
    let code = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if code.is_success() {
        Ok(value)
    } else {
        Err(value["message"].as_str().unwrap_or("refused").to_owned())
    }
}

/// DELETE, honouring `preconditions.uid` of the DeleteOptions body: a mismatch is 409 and
/// nothing is deleted (k8s.io/apiserver pkg/storage/interfaces.go `Preconditions.Check`, turned
/// into a Conflict by pkg/registry/generic/registry/store.go `Delete`).
pub(super) fn delete(shared: &Shared, route: &Route, name: &str, body: &[u8]) -> Response<Body> {
    let key = Key::new(route.gvr.clone(), &route.namespace, name);
    let mut store = shared.store();
    let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let (Some(want), Some(current)) = (options["preconditions"]["uid"].as_str(), store.get(&key))
        && current["metadata"]["uid"].as_str() != Some(want)
    {
        let have = current["metadata"]["uid"].as_str().unwrap_or_default();
        let prefix = if route.gvr.group.is_empty() {
            route.gvr.resource.clone()
        } else {
            format!("{}.{}", route.gvr.resource, route.gvr.group)
        };
        return status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {prefix} \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {have}"
            ),
            json!({"name": name, "group": route.gvr.group, "kind": route.gvr.resource}),
        );
    }
    match store.delete(&key) {
        Some(object) => {
            super::tokens::collect_dependents(&mut store, &route.namespace, &object);
            shared.settle(&mut store);
            json_response(200, &object)
        }
        None => not_found(route, name),
    }
}

/// Server-side apply, simplified: no field ownership, the applied configuration is merged
/// onto the live object (or becomes it). A stated resourceVersion must still match.
pub(super) fn apply(shared: &Shared, route: &Route, name: &str, body: &[u8]) -> Response<Body> {
    let Ok(applied) = serde_json::from_slice::<Value>(body) else {
        return status(
            400,
            "BadRequest",
            "the apply configuration is not JSON (this fake reads JSON only)",
            json!({}),
        );
    };
    if applied["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n != name)
    {
        return status(
            400,
            "BadRequest",
            "the name of the object does not match the name on the URL",
            json!({}),
        );
    }
    let key = Key::new(route.gvr.clone(), &route.namespace, name);
    let mut store = shared.store();
    let stored = match store.get(&key).cloned() {
        Some(current) => {
            if let Some(rv) = applied["metadata"]["resourceVersion"].as_str()
                && current["metadata"]["resourceVersion"].as_str() != Some(rv)
            {
                return conflict(route, name);
            }
            let mut merged = current;
            json_patch::merge(&mut merged, &applied);
            store.update(&key, merged)
        }
        None => store.put(&key, applied),
    };
    shared.settle(&mut store);
    json_response(200, &stored)
}

/// PUT (update) of a whole object, as kube-apiserver's generic registry does it
/// (staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go, `Update`): the object
/// must exist (Leases do not allow create-on-update), and since Leases do not allow
/// unconditional updates either, the body must carry a resourceVersion (422 without) equal to
/// the stored one (409 "the object has been modified" otherwise). This precondition is what
/// makes client-go's leader election (tools/leaderelection/resourcelock/leaselock.go,
/// `Update`) safe: of two candidates updating the same Lease read, one wins.
pub(super) fn update(shared: &Shared, route: &Route, name: &str, body: &[u8]) -> Response<Body> {
    let Ok(object) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the request body is not JSON", json!({}));
    };
    if object["metadata"]["name"].as_str() != Some(name) {
        return status(
            400,
            "BadRequest",
            "the name of the object does not match the name on the URL",
            json!({}),
        );
    }
    let key = Key::new(route.gvr.clone(), &route.namespace, name);
    let mut store = shared.store();
    let Some(current) = store.get(&key).cloned() else {
        return not_found(route, name);
    };
    let Some(rv) = object["metadata"]["resourceVersion"]
        .as_str()
        .filter(|rv| !rv.is_empty())
    else {
        return status(
            422,
            "Invalid",
            &format!(
                "{}.{} \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                route.gvr.resource, route.gvr.group
            ),
            json!({"name": name, "group": route.gvr.group, "kind": route.gvr.resource}),
        );
    };
    if current["metadata"]["resourceVersion"].as_str() != Some(rv) {
        return conflict(route, name);
    }
    let stored = store.put(&key, object);
    shared.settle(&mut store);
    json_response(200, &stored)
}
