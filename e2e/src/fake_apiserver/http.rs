//! The HTTP face of the fake: routing, bearer-token authorization, list/get/watch/patch,
//! and the Status bodies kube-apiserver sends.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::store::{Gvr, Key, StoredEvent};
use super::write::{self, Selector};
use super::{Grant, RequestRecord, Shared, kubevirt, lock};

mod console;

const BODY_LIMIT: usize = 16 << 20;

pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // As Go's net package (kube-apiserver) does by default.
        let _ = stream.set_nodelay(true);
        let mut down = shared.down.subscribe();
        if *down.borrow_and_update() {
            // Counted before the close, which is what a client waits for.
            lock(&shared.refused).push(std::time::Instant::now());
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, request).await) }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // With upgrades: the VMI console is a WebSocket.
            let connection = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = down.wait_for(|d| *d) => {}
            }
        });
    }
}

fn status_body(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code,
    })
}

pub(super) fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

pub(super) fn status(code: u16, reason: &str, message: &str, details: Value) -> Response<Body> {
    json_response(code, &status_body(code, reason, message, details))
}

/// Where a request goes.
pub(super) struct Route {
    pub(super) gvr: Gvr,
    pub(super) namespace: String,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

fn parse_route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    match rest {
        ["namespaces", namespace, resource, tail @ ..] if tail.len() <= 2 => Some(Route {
            gvr: Gvr::new(group, version, resource),
            namespace: (*namespace).to_owned(),
            name: tail.first().map(|s| (*s).to_owned()),
            subresource: tail.get(1).map(|s| (*s).to_owned()),
        }),
        // Every namespace (a cluster-wide list or watch), or a cluster-scoped object.
        [resource, tail @ ..] if tail.len() <= 1 => Some(Route {
            gvr: Gvr::new(group, version, resource),
            namespace: String::new(),
            name: tail.first().map(|s| (*s).to_owned()),
            subresource: None,
        }),
        _ => None,
    }
}

pub(super) fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `metadata.name=<x>` (or `==`) from a field selector; `!=` selects no single name.
fn selected_name(selector: Option<&str>) -> Option<String> {
    selector?.split(',').find_map(|term| {
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        Some(value.to_owned())
    })
}

fn forbidden(grant: &Grant, verb: &str, route: &Route, name: Option<&str>) -> Response<Body> {
    let group = &route.gvr.group;
    let resource = &route.gvr.resource;
    let prefix = if group.is_empty() {
        resource.clone()
    } else {
        format!("{resource}.{group}")
    };
    let full_resource = match &route.subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.clone(),
    };
    let object = match name {
        Some(name) => format!("{prefix} \"{name}\""),
        None => prefix,
    };
    let message = format!(
        "{object} is forbidden: User \"{}\" cannot {verb} resource \"{full_resource}\" in API group \"{group}\" in the namespace \"{}\"",
        grant.user, route.namespace
    );
    let mut details = json!({"kind": resource});
    if let Some(name) = name {
        details["name"] = json!(name);
    }
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    status(403, "Forbidden", &message, details)
}

// A refusal is the response itself; it is built once per refused request.
#[allow(clippy::result_large_err)]
fn authorize(
    grant: &Grant,
    verb: &str,
    route: &Route,
    name: Option<&str>,
) -> Result<(), Response<Body>> {
    let name_ok = match (&grant.names, name) {
        (None, _) => true,
        (Some(names), Some(name)) => names.contains(name),
        (Some(_), None) => false,
    };
    let resource = match &route.subresource {
        Some(sub) => format!("{}/{sub}", route.gvr.resource),
        None => route.gvr.resource.clone(),
    };
    if name_ok && !grant.denied_verbs.contains(verb) && !grant.denied_resources.contains(&resource)
    {
        Ok(())
    } else {
        Err(forbidden(grant, verb, route, name))
    }
}

pub(super) fn not_found(route: &Route, name: &str) -> Response<Body> {
    let group = &route.gvr.group;
    let resource = &route.gvr.resource;
    let prefix = if group.is_empty() {
        resource.clone()
    } else {
        format!("{resource}.{group}")
    };
    status(
        404,
        "NotFound",
        &format!("{prefix} \"{name}\" not found"),
        json!({"name": name, "group": group, "kind": resource}),
    )
}

async fn handle(
    shared: Arc<Shared>,
    mut request: http::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let received = std::time::Instant::now();
    // The console's WebSocket needs the connection's upgrade, taken before the body is read.
    let console_upgrade = console::is_console(request.method(), request.uri().path())
        .then(|| hyper::upgrade::on(&mut request));
    let slow = lock(&shared.faults).slow;
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match http_body_util::BodyExt::collect(http_body_util::Limited::new(
        body, BODY_LIMIT,
    ))
    .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let grant = bearer(&parts.headers).and_then(|token| lock(&shared.tokens).get(&token).cloned());
    let response = match &grant {
        None => status(401, "Unauthorized", "Unauthorized", json!({})),
        Some(grant) => match console_upgrade {
            Some(upgrade) => console::open(&shared, grant, &parts.headers, &path, upgrade),
            None => {
                dispatch(
                    &shared,
                    grant,
                    metadata_only(&parts.headers),
                    &parts.method,
                    &path,
                    &query,
                    content_type.as_deref(),
                    &bytes,
                )
                .await
            }
        },
    };
    lock(&shared.log).push(RequestRecord {
        method: parts.method.to_string(),
        path,
        query,
        content_type,
        body: serde_json::from_slice(&bytes).ok(),
        user: grant.map(|g| g.user),
        status: response.status().as_u16(),
        received,
    });
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

/// `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` (what kube's
/// `Api<PartialObjectMeta<K>>` and client-go's metadata informers send).
fn metadata_only(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=PartialObjectMetadata"))
}

/// kube-apiserver's metadata-only form of an object
/// (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/response.go, `asPartialObjectMetadata`):
/// only `metadata`, as kind PartialObjectMetadata in meta.k8s.io/v1.
fn partial(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": object["metadata"].clone(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    shared: &Arc<Shared>,
    grant: &Grant,
    metadata: bool,
    method: &Method,
    path: &str,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Response<Body> {
    if path
        .trim_end_matches('/')
        .starts_with("/apis/cdi.kubevirt.io")
        && shared.cdi_missing.load(Ordering::Relaxed)
    {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        );
    }
    // API discovery of CDI's group/version (what `kubectl api-resources` reads), as CDI's CRD
    // makes kube-apiserver serve it: enough for clients that ask whether DataVolumes exist.
    if *method == Method::GET && path.trim_end_matches('/') == "/apis/cdi.kubevirt.io/v1beta1" {
        return json_response(
            200,
            &json!({
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "cdi.kubevirt.io/v1beta1",
                "resources": [
                    {"name": "datavolumes", "singularName": "datavolume", "namespaced": true,
                     "kind": "DataVolume", "shortNames": ["dv", "dvs"],
                     "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]},
                    {"name": "datavolumes/status", "singularName": "", "namespaced": true,
                     "kind": "DataVolume", "verbs": ["get", "patch", "update"]}
                ]
            }),
        );
    }
    let Some(route) = parse_route(path) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        );
    };
    if route.gvr.group == "authentication.k8s.io" && route.gvr.resource == "tokenreviews" {
        if method != Method::POST {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                json!({}),
            );
        }
        if let Err(response) = authorize(grant, "create", &route, None) {
            return response;
        }
        return super::tokens::review(shared, body);
    }
    if route.gvr.group == "subresources.kubevirt.io" {
        let (Some(name), Some(verb)) = (route.name.clone(), route.subresource.clone()) else {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                json!({}),
            );
        };
        if method != Method::PUT {
            return status(
                405,
                "MethodNotAllowed",
                "only PUT is supported on KubeVirt subresources",
                json!({}),
            );
        }
        if let Err(response) = authorize(grant, "update", &route, Some(&name)) {
            return response;
        }
        let mut store = shared.store();
        let result = kubevirt::subresource(
            &mut store,
            &route.namespace,
            &route.gvr.resource,
            &name,
            &verb,
        );
        shared.settle(&mut store);
        return match result {
            Ok(()) => Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Body::empty())
                .expect("valid"),
            Err(refusal) => {
                let reason = if refusal.code == 409 {
                    "Conflict"
                } else {
                    "NotFound"
                };
                status(refusal.code, reason, &refusal.message, json!({}))
            }
        };
    }
    if route.subresource.is_some() {
        let verb = if method == Method::GET {
            "get"
        } else {
            "patch"
        };
        return forbidden(grant, verb, &route, route.name.as_deref());
    }
    match (method, route.name.clone()) {
        (&Method::GET, None) => {
            let selector = query_param(query, "fieldSelector");
            let name = selected_name(selector.as_deref());
            let watching = matches!(query_param(query, "watch").as_deref(), Some("true" | "1"));
            let verb = if watching { "watch" } else { "list" };
            if let Err(response) = authorize(grant, verb, &route, name.as_deref()) {
                return response;
            }
            if watching {
                watch(shared, route, name, query, metadata)
            } else {
                let labels = Selector::parse(query_param(query, "labelSelector").as_deref());
                let page = match Page::parse(query) {
                    Ok(page) => page,
                    Err(parameter) => {
                        let message = format!("invalid {parameter} parameter");
                        return status(400, "BadRequest", &message, json!({}));
                    }
                };
                list(shared, &route, name.as_deref(), &labels, metadata, &page)
            }
        }
        (&Method::GET, Some(name)) => {
            if let Err(response) = authorize(grant, "get", &route, Some(&name)) {
                return response;
            }
            match shared
                .store()
                .get(&Key::new(route.gvr.clone(), &route.namespace, &name))
            {
                Some(object) => json_response(200, object),
                None => not_found(&route, &name),
            }
        }
        (&Method::PATCH, Some(name)) => {
            if let Err(response) = authorize(grant, "patch", &route, Some(&name)) {
                return response;
            }
            if content_type == Some("application/apply-patch+yaml") {
                return write::apply(shared, &route, &name, body);
            }
            patch(shared, &route, &name, content_type, body)
        }
        (&Method::POST, None) => {
            if let Err(response) = authorize(grant, "create", &route, None) {
                return response;
            }
            write::create(shared, &route, body).await
        }
        // Updates only where a client of ours needs them (the controller's leader Lease);
        // elsewhere the fake keeps refusing PUT as the BMC's Role does.
        (&Method::PUT, Some(name)) if route.gvr.group == "coordination.k8s.io" => {
            if let Err(response) = authorize(grant, "update", &route, Some(&name)) {
                return response;
            }
            write::update(shared, &route, &name, body)
        }
        (&Method::DELETE, Some(name)) => {
            if let Err(response) = authorize(grant, "delete", &route, Some(&name)) {
                return response;
            }
            write::delete(shared, &route, &name, body)
        }
        (method, name) => {
            let verb = match *method {
                Method::PUT => "update",
                Method::DELETE => "delete",
                Method::POST => "create",
                _ => "get",
            };
            // The fake implements reads and patches only; everything else is refused the
            // way RBAC refuses it for the BMC's own Role.
            forbidden(grant, verb, &route, name.as_deref())
        }
    }
}

/// A LIST's `limit` and `continue`, as kube-apiserver pages them (kube-runtime's watcher asks
/// for 500 at a time): items in key order, a page of at most `limit`, `metadata.continue` an
/// opaque token naming the last key served and the first page's resourceVersion, which every
/// later page reports too (staging/src/k8s.io/apiserver/pkg/storage/continue.go
/// EncodeContinue/DecodeContinue: base64 of `{"v","rv","start"}`; an undecodable token is
/// 400). Unlike etcd, later pages are served from the current objects rather than a snapshot
/// at that resourceVersion: a client watching from it sees the changes again as events, which
/// a reflector applies idempotently.
#[derive(Default)]
struct Page {
    limit: Option<usize>,
    after: Option<(String, String)>,
    resource_version: Option<u64>,
}

impl Page {
    /// The error names the parameter that is invalid.
    fn parse(query: &str) -> Result<Page, &'static str> {
        use base64::Engine;
        let limit = match query_param(query, "limit") {
            None => None,
            Some(text) => match text.parse::<usize>() {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(_) => return Err("limit"),
            },
        };
        let Some(token) = query_param(query, "continue").filter(|t| !t.is_empty()) else {
            return Ok(Page {
                limit,
                ..Page::default()
            });
        };
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .ok_or("continue")?;
        let start = decoded["start"].as_str().ok_or("continue")?;
        let (namespace, name) = start.split_once('/').ok_or("continue")?;
        Ok(Page {
            limit,
            after: Some((namespace.to_owned(), name.to_owned())),
            resource_version: decoded["rv"].as_u64(),
        })
    }

    fn token(&self, rv: u64, last: &Value) -> String {
        use base64::Engine;
        let start = format!(
            "{}/{}",
            last["metadata"]["namespace"].as_str().unwrap_or(""),
            last["metadata"]["name"].as_str().unwrap_or("")
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
    }
}

fn list(
    shared: &Shared,
    route: &Route,
    name: Option<&str>,
    labels: &Selector,
    metadata: bool,
    page: &Page,
) -> Response<Body> {
    let store = shared.store();
    let key_of = |o: &Value| {
        (
            o["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
            o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        )
    };
    let mut matching = store
        .list(&route.gvr, &route.namespace)
        .into_iter()
        .filter(|o| name.is_none_or(|n| o["metadata"]["name"] == n))
        .filter(|o| labels.matches(o))
        .filter(|o| page.after.as_ref().is_none_or(|after| key_of(o) > *after));
    let items: Vec<Value> = matching
        .by_ref()
        .take(page.limit.unwrap_or(usize::MAX))
        .collect();
    let remaining = matching.count();
    let rv = page.resource_version.unwrap_or(store.resource_version());
    let mut list_metadata = json!({"resourceVersion": rv.to_string()});
    if remaining > 0
        && let Some(last) = items.last()
    {
        list_metadata["continue"] = json!(page.token(rv, last));
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|o| if metadata { partial(&o) } else { o })
        .collect();
    let (kind, api_version) = if metadata {
        (
            "PartialObjectMetadataList".to_owned(),
            "meta.k8s.io/v1".to_owned(),
        )
    } else {
        (format!("{}List", route.gvr.kind()), route.gvr.api_version())
    };
    json_response(
        200,
        &json!({
            "kind": kind,
            "apiVersion": api_version,
            "metadata": list_metadata,
            "items": items,
        }),
    )
}

pub(super) fn conflict(route: &Route, name: &str) -> Response<Body> {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            route.gvr.resource, route.gvr.group
        ),
        json!({"name": name, "group": route.gvr.group, "kind": route.gvr.resource}),
    )
}

fn patch(
    shared: &Shared,
    route: &Route,
    name: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Response<Body> {
    {
        let mut faults = lock(&shared.faults);
        if faults.conflicts > 0 {
            faults.conflicts -= 1;
            return conflict(route, name);
        }
    }
    let key = Key::new(route.gvr.clone(), &route.namespace, name);
    let mut store = shared.store();
    let Some(current) = store.get(&key).cloned() else {
        return not_found(route, name);
    };
    let Ok(document) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the request body is not JSON", json!({}));
    };
    let mut patched = current.clone();
    match content_type {
        Some("application/merge-patch+json") => json_patch::merge(&mut patched, &document),
        Some("application/json-patch+json") => {
            let Ok(ops) = serde_json::from_value::<json_patch::Patch>(document) else {
                return status(400, "BadRequest", "the JSON patch is malformed", json!({}));
            };
            if let Err(error) = json_patch::patch(&mut patched, &ops) {
                if matches!(error.kind, json_patch::PatchErrorKind::TestFailed) {
                    return status(
                        422,
                        "Invalid",
                        "the server rejected our request due to an error in our request",
                        json!({}),
                    );
                }
                let message = error.to_string();
                return status(
                    500,
                    "InternalError",
                    &format!("Internal error occurred: {message}"),
                    json!({"causes": [{"message": message}]}),
                );
            }
        }
        _ => {
            return status(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                json!({}),
            );
        }
    }
    if patched["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return conflict(route, name);
    }
    let stored = store.update(&key, patched);
    shared.settle(&mut store);
    json_response(200, &stored)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Counts something open (a console socket, a watch response) for as long as it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn count(counter: &Arc<AtomicUsize>) -> Open {
        counter.fetch_add(1, Ordering::SeqCst);
        Open(counter.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A watch from a resourceVersion older than the kept history: the stream opens (200) and
/// carries one ERROR event with a 410 Expired Status, then ends, as the cacher answers once
/// authn, authz and admission have passed (`staging/src/k8s.io/apiserver/pkg/storage/cacher/
/// cacher.go` `Watch`: `newErrWatcher(err)`, with `errors.NewResourceExpired`). Clients relist.
fn expired_watch(asked: u64, oldest: u64) -> Response<Body> {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {asked} ({oldest})"),
        "reason": "Expired",
        "code": 410,
    });
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(event_line("ERROR", &status)))
        .expect("valid response")
}

fn watch(
    shared: &Arc<Shared>,
    route: Route,
    name: Option<String>,
    query: &str,
    metadata: bool,
) -> Response<Body> {
    let event_line = move |kind: &str, object: &Value| {
        if metadata && kind != "BOOKMARK" {
            event_line(kind, &partial(object))
        } else {
            event_line(kind, object)
        }
    };
    let since = query_param(query, "resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok())
        .filter(|rv| *rv > 0);
    let bookmarks = query_param(query, "allowWatchBookmarks").as_deref() == Some("true");
    let timeout = query_param(query, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let labels = Selector::parse(query_param(query, "labelSelector").as_deref());
    let matches = {
        let route_gvr = route.gvr.clone();
        let namespace = route.namespace.clone();
        move |key: &Key, object: &Value| {
            key.gvr == route_gvr
                && (namespace.is_empty() || key.namespace == namespace)
                && name.as_deref().is_none_or(|n| key.name == n)
                && labels.matches(object)
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (initial, mut live, mut last_rv) = {
        let store = shared.store();
        if let Some(asked) = since
            && let Some(oldest) = store.expired(asked)
        {
            return expired_watch(asked, oldest);
        }
        let live = store.subscribe();
        let initial: Vec<Bytes> = match since {
            Some(rv) => store
                .since(rv)
                .into_iter()
                .filter(|e| matches(&e.key, &e.object))
                .map(|e| event_line(e.kind.as_str(), &e.object))
                .collect(),
            None => store
                .list(&route.gvr, &route.namespace)
                .into_iter()
                .filter(|o| {
                    let n = o["metadata"]["name"].as_str().unwrap_or_default();
                    let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
                    matches(&Key::new(route.gvr.clone(), ns, n), o)
                })
                .map(|o| event_line("ADDED", &o))
                .collect(),
        };
        (initial, live, store.resource_version())
    };
    let mut epoch = shared.watch_epoch.subscribe();
    epoch.borrow_and_update();
    let interval = shared.bookmark_interval;
    let mut frozen = shared.frozen.subscribe();
    let gvr = route.gvr.clone();
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let thawed = !*frozen.borrow_and_update();
            let line = tokio::select! {
                // A freeze set before an event must hold it back: checked first, never by lot.
                biased;
                _ = frozen.changed() => continue,
                event = live.recv(), if thawed => match event {
                    Ok(StoredEvent { rv, key, kind, object }) => {
                        if rv <= last_rv {
                            continue;
                        }
                        last_rv = last_rv.max(rv);
                        if !matches(&key, &object) {
                            continue;
                        }
                        event_line(kind.as_str(), &object)
                    }
                    // Too slow a reader: end the stream, the client relists.
                    Err(_) => return,
                },
                _ = ticker.tick(), if bookmarks && thawed => event_line("BOOKMARK", &json!({
                    "apiVersion": gvr.api_version(), "kind": gvr.kind(),
                    "metadata": {"resourceVersion": last_rv.to_string()},
                })),
                _ = epoch.changed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    // Held by the body: hyper drops it when the stream ends or the connection is cut.
    let open = Open::count(&shared.open_watches);
    let stream = futures::stream::unfold((rx, open), |(mut rx, open)| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(line), (rx, open)))
    });
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("valid response")
}
