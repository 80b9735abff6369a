//! HTTP conventions every Redfish resource shares: JSON bodies with Redfish errors, ETags and
//! `If-Match`, the OData headers, and Redfish bodies for 404 and 405.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::errors::{ApiError, ApiResult};

/// Larger than any request a Redfish client sends us (a subscription, an InsertMedia).
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long a request body may take to arrive once its headers have (hyper's header read
/// timeout covers only the headers).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the whole request body (up to [`BODY_LIMIT`]) before anything answers.
///
/// Every request is read to its end, also the ones refused before their body matters (a POST
/// to a read-only collection, a 401, a 503 while starting). hyper keeps a connection alive
/// after an unread body only if the rest of it is already buffered; otherwise it closes the
/// connection once the answer is out, without `Connection: close`. urllib3 (requests) writes
/// the headers and the body separately, so on a busy machine the body often is not there yet:
/// the client reused the closed connection for its next request and got a ConnectionError
/// (the DMTF Protocol Validator's DELETE /redfish/v1/ after a refused POST of an account).
pub async fn read_whole_body(request: Request) -> Result<Request, Response> {
    use axum::body::HttpBody;
    if request.body().is_end_stream() {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let refuse = |error: ApiError| {
        let mut response = error.into_response();
        // The rest of the body is still on the wire: this connection cannot carry another
        // request, and the client should know before it tries.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(Err(_)) => Err(refuse(ApiError::too_large(BODY_LIMIT))),
        Err(_) => Err(refuse(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "The request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
            vec![super::errors::message("GeneralError", &[])],
        ))),
    }
}

/// A request body that must be a JSON object, or empty when the action allows it.
pub struct JsonBody(pub Option<Map<String, Value>>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|length| length > BODY_LIMIT) {
            return Err(ApiError::too_large(BODY_LIMIT));
        }
        let bytes = axum::body::to_bytes(request.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| ApiError::too_large(BODY_LIMIT))?;
        parse_object(&bytes).map(JsonBody)
    }
}

/// Empty (or whitespace) is `None`; anything else must be a JSON object.
pub fn parse_object(bytes: &[u8]) -> ApiResult<Option<Map<String, Value>>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(ApiError::malformed_json("the body must be a JSON object")),
        Err(error) => Err(ApiError::malformed_json(&error.to_string())),
    }
}

impl JsonBody {
    /// The object, or a clear error when the request had no body.
    pub fn required(self) -> ApiResult<Map<String, Value>> {
        self.0
            .ok_or_else(|| ApiError::malformed_json("a JSON object body is required"))
    }
}

/// A strong ETag of a resource's JSON: the same bytes the response carries.
pub fn etag_of(value: &Value) -> String {
    etag_of_bytes(&serde_json::to_vec(value).unwrap_or_default())
}

fn etag_of_bytes(bytes: &[u8]) -> String {
    // ETags need change detection, not collision resistance against an attacker. A word at
    // a time: FNV-1a byte by byte, as before, was a chain of 2,200 dependent multiplies for
    // a ComputerSystem (2.4 µs of a GET's ~75; this takes 0.45 µs). Every step is a
    // bijection of the state (xor, multiply by an odd constant, xor-shift), so changing one
    // word always changes the tag, and the shift carries high bits down, which FNV's
    // multiply alone never does.
    const MULTIPLIER: u64 = 0xbf58_476d_1ce4_e5b9;
    let step = |hash: u64, input: u64| {
        let hash = (hash ^ input).wrapping_mul(MULTIPLIER);
        hash ^ (hash >> 29)
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        hash = step(
            hash,
            u64::from_le_bytes(word.try_into().expect("chunks of 8")),
        );
    }
    for byte in words.remainder() {
        hash = step(hash, u64::from(*byte));
    }
    // The length closes the input: a last byte `b` and a last word of `b` and seven zero
    // bytes take the same step.
    hash = step(hash, bytes.len() as u64);
    format!("\"{hash:016x}\"")
}

/// Refuses a write whose `If-Match` names another version of the resource.
pub fn check_if_match(headers: &HeaderMap, current: &Value) -> ApiResult<()> {
    let Some(wanted) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let wanted = wanted.to_str().unwrap_or_default();
    let etag = etag_of(current);
    let matches = wanted
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag.as_str());
    if matches {
        Ok(())
    } else {
        Err(ApiError::precondition_failed())
    }
}

/// A JSON resource response.
pub fn resource(value: Value) -> Response {
    axum::Json(value).into_response()
}

/// Adds the OData headers, an ETag to JSON resources (answering `If-None-Match` with 304),
/// and turns axum's bare 404/405 into Redfish error bodies.
pub async fn conventions(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let mut response = match read_whole_body(request).await {
        Err(refused) => refused,
        Ok(request) => match refuse_early(&request) {
            Some(error) => error.into_response(),
            None => next.run(request).await,
        },
    };

    if response.status() == StatusCode::METHOD_NOT_ALLOWED && !is_json(response.headers()) {
        // axum's method router adds the Allow header itself, after this layer.
        let mut error = ApiError::method_not_allowed(method.as_str(), &path, "");
        error.text = format!("{method} is not allowed on {path}; the Allow header lists what is");
        error.allow = None;
        response = error.into_response();
    } else if (response.status().is_client_error() || response.status().is_server_error())
        && !is_json(response.headers())
    {
        // axum's own rejections (a path segment that is not UTF-8 once percent-decoded) are
        // plain text; a Redfish client reads only the error document.
        response = redfish_error_from(response).await;
    }

    let headers = response.headers_mut();
    headers.insert("OData-Version", HeaderValue::from_static("4.0"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    if is_json(headers) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }

    if (method == Method::GET || method == Method::HEAD)
        && response.status().is_success()
        && let Some(allow) = matched.as_deref().map(allowed_methods)
    {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }

    let wants_etag = (method == Method::GET || method == Method::HEAD || method == Method::PATCH)
        && response.status() == StatusCode::OK
        && is_json(response.headers());
    if !wants_etag {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("the response could not be produced").into_response();
    };
    let etag = etag_of_bytes(&bytes);
    if let Some(link) = described_by(&bytes) {
        parts.headers.insert(header::LINK, link);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        parts.headers.insert(header::ETAG, value);
    }
    let not_modified = if_none_match
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|c| c.trim().trim_start_matches("W/") == etag)
        });
    if not_modified && method != Method::PATCH {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The same status with a Redfish error body carrying the plain-text reason.
async fn redfish_error_from(response: Response) -> Response {
    let status = response.status();
    let (_, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("Error").to_owned()
    } else {
        text
    };
    ApiError::new(
        status,
        text,
        vec![super::errors::message("GeneralError", &[])],
    )
    .into_response()
}

/// Requests refused before routing: an OData version we do not speak, `$` queries we do
/// not implement. The Redfish specification (DSP0266, "Query parameters") demands 501 for an
/// unsupported `$` parameter, and the DMTF Protocol Validator checks it
/// (`REQ_QUERY_UNSUPPORTED_DOLLAR_PARAMS`). sushy retries a GET's 5xx ten times, 3 s apart
/// (`sushy/main.py` `server_side_retries`, `sushy/connector.py` `_op`), which is why the one
/// `$` query it sends, `$expand`, is served (`expand.rs`) rather than refused.
fn refuse_early(request: &Request) -> Option<ApiError> {
    if let Some(version) = request.headers().get("OData-Version")
        && version.as_bytes() != b"4.0"
    {
        let mut error = ApiError::precondition_failed();
        error.text = "Only OData-Version 4.0 is supported".to_owned();
        return Some(error);
    }
    let query = request.uri().query().unwrap_or_default();
    let unsupported = query
        .split('&')
        .map(|pair| pair.split('=').next().unwrap_or_default())
        .filter(|name| *name != "$expand" && !name.eq_ignore_ascii_case("%24expand"))
        .find(|name| name.starts_with('$') || name.starts_with("%24"))?;
    let mut error = ApiError::bad_request("QueryNotSupported", &[]);
    error.status = StatusCode::NOT_IMPLEMENTED;
    error.text = format!("The query parameter {unsupported} is not supported");
    Some(error)
}

/// The methods a route pattern serves, for the Allow header of GET and HEAD answers.
pub fn allowed_methods(pattern: &str) -> &'static str {
    const PATCHABLE: [&str; 8] = [
        "/redfish/v1/Systems/{id}",
        "/redfish/v1/Managers/{id}",
        "/redfish/v1/Chassis/{id}",
        "/SecureBoot",
        "/VirtualMedia/{media}",
        "/redfish/v1/SessionService",
        "/redfish/v1/AccountService/Accounts/{id}",
        "/redfish/v1/EventService",
    ];
    if pattern == "/redfish/v1/SessionService/Sessions"
        || pattern == "/redfish/v1/EventService/Subscriptions"
    {
        "GET, HEAD, POST"
    } else if pattern.starts_with("/redfish/v1/SessionService/Sessions/")
        || pattern.starts_with("/redfish/v1/EventService/Subscriptions/")
    {
        "GET, HEAD, DELETE"
    } else if pattern == "/redfish/v1/EventService" {
        "GET, HEAD"
    } else if PATCHABLE.iter().any(|p| pattern.ends_with(p)) {
        "GET, HEAD, PATCH"
    } else {
        "GET, HEAD"
    }
}

/// `Link: <schema>; rel=describedby` from the body's `@odata.type`.
fn described_by(body: &[u8]) -> Option<HeaderValue> {
    const KEY: &[u8] = b"\"@odata.type\":\"#";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &body[start..];
    let end = rest.iter().position(|b| *b == b'"')?;
    let odata_type = std::str::from_utf8(&rest[..end]).ok()?;
    // "#ComputerSystem.v1_20_0.ComputerSystem" -> "ComputerSystem.v1_20_0"
    let schema = odata_type
        .rsplit_once('.')
        .map_or(odata_type, |(schema, _)| schema);
    HeaderValue::from_str(&format!(
        "<https://redfish.dmtf.org/schemas/v1/{schema}.json>; rel=describedby"
    ))
    .ok()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The Redfish body for paths nothing serves.
pub async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(request.uri().path())
}

/// RFC 3339 UTC time for a Unix timestamp, as Redfish `DateTime` properties want.
pub fn rfc3339(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let seconds = unix_seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Seconds since the epoch of an RFC 3339 date-time (`Z` or `+hh:mm`, optional fraction).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (time, offset) = match rest.strip_suffix('Z') {
        Some(time) => (time, 0),
        None => {
            let at = rest.rfind(['+', '-'])?;
            let (time, zone) = rest.split_at(at);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = zone[1..].split_once(':')?;
            (
                time,
                sign * (hours.parse::<i64>().ok()? * 3600 + minutes.parse::<i64>().ok()? * 60),
            )
        }
    };
    let time = time.split('.').next()?;
    let mut hms = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_change_with_every_byte_and_length_and_stay_for_the_same_bytes() {
        let body: Vec<u8> = (0..2200u32).map(|i| b' ' + (i % 90) as u8).collect();
        let tag = etag_of_bytes(&body);
        assert_eq!(etag_of_bytes(&body.clone()), tag);
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() == 18,
            "{tag}"
        );
        let mut seen = std::collections::HashSet::from([tag.clone()]);
        for at in 0..body.len() {
            let mut changed = body.clone();
            changed[at] ^= 0x01;
            assert!(
                seen.insert(etag_of_bytes(&changed)),
                "a change at byte {at} gave a tag already seen"
            );
        }
        for len in 0..body.len() {
            assert_ne!(etag_of_bytes(&body[..len]), tag, "length {len}");
        }
        assert_ne!(etag_of_bytes(b"abcdefgh\0"), etag_of_bytes(b"abcdefgh"));
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20+00:00");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00+00:00");
    }

    #[test]
    fn rfc3339_round_trips_and_rejects_garbage() {
        for t in [0u64, 951_782_400, 1_700_000_000, 1_796_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t as i64));
        }
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456+00:00"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000)
        );
        for bad in [
            "",
            "yesterday",
            "2023-13-01T00:00:00Z",
            "2023-11-14 22:13:20",
            "2023-11-14T22:13Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(parse_object(b"").unwrap().is_none());
        assert!(parse_object(b" {} ").unwrap().unwrap().is_empty());
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{\"a\":").is_err());
    }

    #[test]
    fn if_match_accepts_current_or_star_only() {
        let value = serde_json::json!({"a": 1});
        let mut headers = HeaderMap::new();
        assert!(check_if_match(&headers, &value).is_ok());
        headers.insert(header::IF_MATCH, etag_of(&value).parse().unwrap());
        assert!(check_if_match(&headers, &value).is_ok());
        headers.insert(header::IF_MATCH, "\"0\"".parse().unwrap());
        let error = check_if_match(&headers, &value).unwrap_err();
        assert_eq!(error.status, StatusCode::PRECONDITION_FAILED);
        headers.insert(header::IF_MATCH, "*".parse().unwrap());
        assert!(check_if_match(&headers, &value).is_ok());
    }
}
