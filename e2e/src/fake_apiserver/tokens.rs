//! kube-controller-manager's part for token Secrets, as far as the BMC relies on it:
//!
//! * kubernetes pkg/controller/serviceaccount/tokens_controller.go `syncSecret`: a Secret of
//!   type `kubernetes.io/service-account-token` whose annotation
//!   `kubernetes.io/service-account.name` (and `.uid`, when set) names an existing
//!   ServiceAccount gets `token` and `namespace` (`ca.crt` only with a root CA, which this
//!   plain-HTTP fake has not) through `generateTokenIfNeeded`; one naming a missing account (or
//!   another UID) is deleted (`deleteToken`). The token here is a random bearer this fake
//!   accepts as `system:serviceaccount:<ns>:<name>`, limited like RBAC `resourceNames` to the
//!   names of the Roles bound to the account at that moment (RBAC evaluates per request; the
//!   BMC's Role is written before its token Secret, so the two agree).
//! * The TokenReview API (`authentication.k8s.io/v1`, kubernetes
//!   `pkg/registry/authentication/tokenreview/storage.go` `Create`): the token of the body is
//!   authenticated as a request's bearer would be; the answer is the review with
//!   `status.authenticated` and, when known, `status.user` (username and the groups
//!   kube-apiserver gives a ServiceAccount: `system:serviceaccounts`,
//!   `system:serviceaccounts:<ns>`, `system:authenticated`), 201 Created. An unknown token is
//!   `authenticated: false` with `status.error`, not an HTTP error.
//! * The garbage collector (pkg/controller/garbagecollector, background propagation) for the
//!   one dependency the BMC creates: Secrets owned by a ServiceAccount go when it goes. The
//!   token controller's `deleteTokens` on account deletion has the same effect for tokens.

use base64::Engine;
use serde_json::{Value, json};

use super::store::{Gvr, Key, Store};
use super::{Grant, Shared, lock};

const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const NAME_KEY: &str = "kubernetes.io/service-account.name";
const UID_KEY: &str = "kubernetes.io/service-account.uid";

fn secrets() -> Gvr {
    Gvr::new("", "v1", "secrets")
}

fn service_accounts() -> Gvr {
    Gvr::new("", "v1", "serviceaccounts")
}

/// The resourceNames of every Role bound to `account` in `namespace`.
fn bound_names(store: &Store, namespace: &str, account: &str) -> Vec<String> {
    let rbac = |r: &str| Gvr::new("rbac.authorization.k8s.io", "v1", r);
    let mut names = Vec::new();
    for binding in store.list(&rbac("rolebindings"), namespace) {
        let bound = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == account
                    && s["namespace"].as_str().unwrap_or(namespace) == namespace
            });
        let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
        if !bound || binding["roleRef"]["kind"] != "Role" {
            continue;
        }
        if let Some(role) = store.get(&Key::new(rbac("roles"), namespace, role)) {
            for rule in role["rules"].as_array().into_iter().flatten() {
                for name in rule["resourceNames"].as_array().into_iter().flatten() {
                    if let Some(n) = name.as_str() {
                        names.push(n.to_owned());
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Fills in (or deletes) a token Secret just created in `namespace`.
pub(super) fn sync_secret(shared: &Shared, store: &mut Store, namespace: &str, name: &str) {
    let key = Key::new(secrets(), namespace, name);
    let Some(secret) = store.get(&key).cloned() else {
        return;
    };
    if secret["type"] != TOKEN_TYPE {
        return;
    }
    let account = secret["metadata"]["annotations"][NAME_KEY]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sa = store.get(&Key::new(service_accounts(), namespace, &account));
    let uid_matches = |sa: &Value| match secret["metadata"]["annotations"][UID_KEY].as_str() {
        None | Some("") => true,
        Some(uid) => sa["metadata"]["uid"] == uid,
    };
    match sa {
        Some(sa) if uid_matches(sa) => {
            let token = format!("fake-sa-token-{}", uuid::Uuid::new_v4().simple());
            let names = bound_names(store, namespace, &account);
            lock(&shared.tokens).insert(
                token.clone(),
                Grant {
                    user: format!("system:serviceaccount:{namespace}:{account}"),
                    names: Some(names.into_iter().collect()),
                    denied_verbs: Default::default(),
                    denied_resources: Default::default(),
                },
            );
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            let mut filled = secret.clone();
            filled["data"] = json!({"token": b64(&token), "namespace": b64(namespace)});
            store.put(&key, filled);
        }
        _ => {
            store.delete(&key);
        }
    }
}

/// After `deleted` went: the Secrets it owned go too.
pub(super) fn collect_dependents(store: &mut Store, namespace: &str, deleted: &Value) {
    let Some(uid) = deleted["metadata"]["uid"].as_str() else {
        return;
    };
    for secret in store.list(&secrets(), namespace) {
        let owned = secret["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["uid"] == uid);
        if owned && let Some(name) = secret["metadata"]["name"].as_str() {
            store.delete(&Key::new(secrets(), namespace, name));
        }
    }
}

/// POST tokenreviews: who the token in the body is.
pub(super) fn review(shared: &Shared, body: &[u8]) -> http::Response<axum::body::Body> {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return super::http::status(
            400,
            "BadRequest",
            "the body is not a TokenReview",
            json!({}),
        );
    };
    let token = review["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let grant = lock(&shared.tokens).get(&token).cloned();
    review["status"] = match grant {
        Some(grant) => {
            let mut groups = vec![json!("system:authenticated")];
            if let Some(rest) = grant.user.strip_prefix("system:serviceaccount:")
                && let Some((namespace, _)) = rest.split_once(':')
            {
                groups.insert(0, json!("system:serviceaccounts"));
                groups.insert(1, json!(format!("system:serviceaccounts:{namespace}")));
            }
            json!({"authenticated": true, "user": {"username": grant.user, "groups": groups}})
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["kind"] = json!("TokenReview");
    super::http::json_response(201, &review)
}
