//! Writes beyond patches: create (POST), delete, and server-side apply as kube sends it
//! (`application/apply-patch+yaml` with a JSON body, taken as a merge that creates the
//! object when missing), plus label selectors for lists and watches.

use axum::body::Body;
use http::Response;
use serde_json::{Value, json};

use super::Shared;
use super::http::{Route, conflict, json_response, not_found, status};
use super::store::Key;

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
    let key = Key::new(route.gvr.clone(), &route.namespace, &name);
    let mut store = shared.store();
    if store.get(&key).is_some() {
        return already_exists(route, &name);
    }
    let stored = store.put(&key, object);
    shared.settle(&mut store);
    json_response(201, &stored)
}

pub(super) fn delete(shared: &Shared, route: &Route, name: &str) -> Response<Body> {
    let key = Key::new(route.gvr.clone(), &route.namespace, name);
    let mut store = shared.store();
    match store.delete(&key) {
        Some(object) => {
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
            store.put(&key, merged)
        }
        None => store.put(&key, applied),
    };
    shared.settle(&mut store);
    json_response(200, &stored)
}
