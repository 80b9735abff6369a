//! `$expand` (Redfish specification DSP0266, "Query parameters"): a GET answered with the
//! resources it references inlined, so a client reads a tree in one request.
//!
//! Modelled on what clients send: sushy asks `?$expand=.($levels=1)` for the Chassis
//! (Thermal and Power inline) and the Storage/SimpleStorage collections (members inline)
//! when Ironic collects sensor data (`sushy/resources/system/system.py` `EXPAND_QUERY`,
//! `chassis_expanded`, `simple_storage_expanded`; `ironic/drivers/modules/redfish/
//! management.py` `get_sensors_data`), and reads the inlined JSON or, if a member is still
//! a bare reference, fetches it itself (`simple_storage.py` `get_members`). Other clients send
//! `*` and `~`. Levels 1 to [`MAX_LEVELS`] are served.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::Value;
use tower::ServiceExt;

use super::Context;
use super::errors::ApiError;

/// Deepest `$levels` served; the service root advertises it (`MaxLevels`).
pub const MAX_LEVELS: u8 = 3;

/// Which references an expansion inlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `.`: subordinate resources only, not those under `Links`.
    Subordinate,
    /// `*`: every reference.
    All,
    /// `~`: only those under `Links`.
    Links,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expand {
    pub scope: Scope,
    pub levels: u8,
}

/// The `$expand` value of a query string (`None` when there is none), or the Redfish error a
/// malformed or too deep one gets: 400, which clients do not retry (a 5xx they would).
pub fn from_query(query: &str) -> Option<Result<Expand, ApiError>> {
    let value = query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name) == "$expand").then(|| percent_decode(value))
    })?;
    Some(parse(&value))
}

/// `.`, `*` or `~`, optionally followed by `($levels=N)`.
pub fn parse(value: &str) -> Result<Expand, ApiError> {
    let format_error =
        || ApiError::bad_request("QueryParameterValueFormatError", &[value, "$expand"]);
    let mut chars = value.chars();
    let scope = match chars.next() {
        Some('.') => Scope::Subordinate,
        Some('*') => Scope::All,
        Some('~') => Scope::Links,
        _ => return Err(format_error()),
    };
    let rest = chars.as_str();
    let levels = if rest.is_empty() {
        1
    } else {
        let number = rest
            .strip_prefix("($levels=")
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(format_error)?;
        let levels: u8 = number.parse().map_err(|_| format_error())?;
        if levels == 0 || levels > MAX_LEVELS {
            return Err(ApiError::bad_request(
                "QueryParameterOutOfRange",
                &[number, "$levels", &format!("1 to {MAX_LEVELS}")],
            ));
        }
        levels
    };
    Ok(Expand { scope, levels })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// JSON pointers of the references in `value` that `scope` inlines: objects whose only
/// property is `@odata.id`. Pure, so it is tested alone.
pub fn references(value: &Value, scope: Scope) -> Vec<String> {
    let mut found = Vec::new();
    walk(value, String::new(), false, scope, &mut found);
    found
}

fn walk(value: &Value, pointer: String, in_links: bool, scope: Scope, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let is_reference = map.len() == 1 && map.get("@odata.id").is_some_and(Value::is_string);
            if is_reference && !pointer.is_empty() {
                let wanted = match scope {
                    Scope::All => true,
                    Scope::Subordinate => !in_links,
                    Scope::Links => in_links,
                };
                if wanted {
                    found.push(pointer);
                }
                return;
            }
            for (key, child) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                walk(
                    child,
                    format!("{pointer}/{escaped}"),
                    in_links || key == "Links",
                    scope,
                    found,
                );
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                walk(child, format!("{pointer}/{index}"), in_links, scope, found);
            }
        }
        _ => {}
    }
}

/// Headers a sub-request carries over: the client's credentials, so an expansion shows
/// nothing the client could not GET itself.
fn credentials(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        header::AUTHORIZATION,
        header::HeaderName::from_static("x-auth-token"),
    ] {
        if let Some(value) = headers.get(&name) {
            out.insert(name, value.clone());
        }
    }
    out
}

/// Middleware: a GET with `$expand` is answered as usual, then the references it asks for
/// are fetched through the service itself and inlined.
pub async fn layer(State(context): State<Arc<Context>>, request: Request, next: Next) -> Response {
    let expand = match request.uri().query().and_then(from_query) {
        None => return next.run(request).await,
        Some(Err(error)) => return error.into_response(),
        Some(Ok(expand)) => expand,
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return next.run(request).await;
    }
    let headers = credentials(request.headers());
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("the response could not be produced").into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let service = super::app(context);
    inline(&service, &headers, &mut value, expand.scope, expand.levels).await;
    let mut response = axum::Json(value).into_response();
    *response.status_mut() = parts.status;
    response
}

fn inline<'a>(
    service: &'a tower_http::normalize_path::NormalizePath<axum::Router>,
    headers: &'a HeaderMap,
    value: &'a mut Value,
    scope: Scope,
    levels: u8,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        if levels == 0 {
            return;
        }
        let own = value["@odata.id"].as_str().map(str::to_owned);
        for pointer in references(value, scope) {
            let Some(uri) = value
                .pointer(&pointer)
                .and_then(|r| r["@odata.id"].as_str())
                .map(str::to_owned)
            else {
                continue;
            };
            // A resource does not contain itself.
            if own.as_deref() == Some(uri.as_str()) {
                continue;
            }
            let Some(mut fetched) = fetch(service, headers, &uri).await else {
                continue;
            };
            inline(service, headers, &mut fetched, scope, levels - 1).await;
            if let Some(slot) = value.pointer_mut(&pointer) {
                *slot = fetched;
            }
        }
    })
}

/// GETs `uri` from the service; references it cannot serve stay references.
async fn fetch(
    service: &tower_http::normalize_path::NormalizePath<axum::Router>,
    headers: &HeaderMap,
    uri: &str,
) -> Option<Value> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .body(Body::empty())
        .ok()?;
    *request.headers_mut() = headers.clone();
    let response = service.clone().oneshot(request).await.ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_what_clients_send() {
        let sushy = from_query("$expand=.($levels=1)").unwrap().unwrap();
        assert_eq!(
            sushy,
            Expand {
                scope: Scope::Subordinate,
                levels: 1
            }
        );
        let encoded = from_query("%24expand=%2A%28%24levels%3D2%29")
            .unwrap()
            .unwrap();
        assert_eq!(
            encoded,
            Expand {
                scope: Scope::All,
                levels: 2
            }
        );
        assert_eq!(
            parse("~").unwrap(),
            Expand {
                scope: Scope::Links,
                levels: 1
            }
        );
        assert!(from_query("only=1").is_none());
        for bad in [
            "",
            "x",
            ".($levels=)",
            ".(levels=1)",
            ".($levels=1",
            "*($levels=a)",
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let deep = parse(".($levels=9)").unwrap_err();
        assert_eq!(deep.status, StatusCode::BAD_REQUEST);
        assert!(
            deep.messages[0]["MessageId"]
                .as_str()
                .unwrap()
                .ends_with("QueryParameterOutOfRange")
        );
    }

    #[test]
    fn references_by_scope() {
        let chassis = json!({
            "@odata.id": "/redfish/v1/Chassis/vm",
            "Thermal": {"@odata.id": "/redfish/v1/Chassis/vm/Thermal"},
            "Power": {"@odata.id": "/redfish/v1/Chassis/vm/Power"},
            "Status": {"State": "Enabled"},
            "Links": {"ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/vm"}]},
        });
        let mut subordinate = references(&chassis, Scope::Subordinate);
        subordinate.sort();
        assert_eq!(subordinate, ["/Power", "/Thermal"]);
        assert_eq!(
            references(&chassis, Scope::Links),
            ["/Links/ComputerSystems/0"]
        );
        assert_eq!(references(&chassis, Scope::All).len(), 3);
        let collection =
            json!({"@odata.id": "/c", "Members": [{"@odata.id": "/c/1"}, {"@odata.id": "/c/2"}]});
        assert_eq!(
            references(&collection, Scope::Subordinate),
            ["/Members/0", "/Members/1"]
        );
    }
}
