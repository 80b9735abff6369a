//! Handlers of the service's own resources: root, OData, sessions, accounts, registries and
//! the EventService.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Context;
use super::auth::{MAX_TIMEOUT, MIN_TIMEOUT};
use super::errors::{ApiError, ApiResult, BASE_REGISTRY, BASE_REGISTRY_ID};
use super::events::{self, EventRecord};
use super::http::{JsonBody, check_if_match, now_unix, resource, rfc3339};
use super::models::{collection, odata_id, status_enabled};
use super::services;

pub async fn versions() -> Response {
    resource(services::versions())
}

pub async fn root(State(context): State<Arc<Context>>) -> Response {
    resource(services::service_root(&context.ids))
}

pub async fn odata() -> Response {
    resource(services::odata_document())
}

pub async fn metadata() -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        services::metadata(),
    )
        .into_response()
}

pub async fn session_service(State(context): State<Arc<Context>>) -> Response {
    resource(services::session_service(context.sessions.timeout()))
}

pub async fn patch_session_service(
    State(context): State<Arc<Context>>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let body = body.required()?;
    let current = services::session_service(context.sessions.timeout());
    check_if_match(&headers, &current)?;
    let mut timeout = None;
    for (name, value) in &body {
        match name.as_str() {
            "SessionTimeout" => {
                let seconds = value
                    .as_u64()
                    .ok_or_else(|| ApiError::property_type(value, name))?;
                if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&seconds) {
                    return Err(ApiError::bad_request(
                        "PropertyValueNotInList",
                        &[&seconds.to_string(), name],
                    ));
                }
                timeout = Some(seconds);
            }
            other if current.get(other).is_some() => {
                return Err(ApiError::property_not_writable(other));
            }
            other => return Err(ApiError::property_unknown(other)),
        }
    }
    if let Some(seconds) = timeout {
        context.sessions.set_timeout(seconds).await?;
    }
    Ok(resource(services::session_service(
        context.sessions.timeout(),
    )))
}

pub async fn sessions(State(context): State<Arc<Context>>) -> Response {
    let members: Vec<String> = context
        .sessions
        .list(now_unix())
        .iter()
        .map(|s| services::session_uri(&s.id))
        .collect();
    resource(collection(
        "SessionCollection",
        "Sessions",
        "/redfish/v1/SessionService/Sessions",
        &members,
    ))
}

/// Login: 201 with the token in `X-Auth-Token` and the session in `Location`.
pub async fn create_session(
    State(context): State<Arc<Context>>,
    extensions: axum::http::Extensions,
    body: JsonBody,
) -> ApiResult<Response> {
    let body = body.required()?;
    let field = |name: &str| -> ApiResult<String> {
        let value = body
            .get(name)
            .ok_or_else(|| ApiError::bad_request("CreateFailedMissingReqProperties", &[name]))?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::property_type(&Value::String("<hidden>".into()), name))
    };
    if let Some(unknown) = body
        .keys()
        .find(|k| !matches!(k.as_str(), "UserName" | "Password"))
    {
        return Err(ApiError::property_unknown(unknown));
    }
    let username = field("UserName")?;
    let password = zeroize::Zeroizing::new(field("Password")?);
    let peer = super::auth::peer_of(&extensions);
    let valid = context
        .logins
        .check(peer, || {
            context
                .credentials
                .matches(username.as_bytes(), password.as_bytes())
        })
        .await;
    if !valid {
        return Err(ApiError::unauthorized("The credentials are not valid"));
    }
    let (info, token) = context.sessions.create(&username, now_unix())?;
    tracing::info!(session = %info.id, "Redfish: session created");
    let mut response = (StatusCode::CREATED, axum::Json(services::session(&info))).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&token) {
        headers.insert("X-Auth-Token", value);
    }
    if let Ok(value) = HeaderValue::from_str(&services::session_uri(&info.id)) {
        headers.insert(header::LOCATION, value);
    }
    Ok(response)
}

pub async fn session(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    context
        .sessions
        .get(&id, now_unix())
        .map(|info| resource(services::session(&info)))
        .ok_or_else(|| ApiError::not_found(&services::session_uri(&id)))
}

pub async fn delete_session(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if context.sessions.delete(&id, now_unix()).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(&services::session_uri(&id)))
    }
}

pub async fn account_service() -> Response {
    resource(services::account_service())
}

pub async fn accounts() -> Response {
    resource(collection(
        "ManagerAccountCollection",
        "Accounts",
        "/redfish/v1/AccountService/Accounts",
        &[format!(
            "/redfish/v1/AccountService/Accounts/{}",
            services::ACCOUNT_ID
        )],
    ))
}

fn require_account(id: &str) -> ApiResult<()> {
    if id == services::ACCOUNT_ID {
        Ok(())
    } else {
        Err(ApiError::not_found(&format!(
            "/redfish/v1/AccountService/Accounts/{id}"
        )))
    }
}

pub async fn account(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_account(&id)?;
    Ok(resource(services::account(&context.credentials.username)))
}

/// The user comes from the VM's credentials Secret; Redfish cannot change it, and says so.
pub async fn patch_account(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    require_account(&id)?;
    let body = body.required()?;
    let current = services::account(&context.credentials.username);
    check_if_match(&headers, &current)?;
    let name = body.keys().next().cloned().unwrap_or_default();
    if current.get(&name).is_some() {
        let mut error = ApiError::property_not_writable(&name);
        error.text = format!(
            "{name} cannot be changed over Redfish: the BMC user is set by the VM's BMC \
             credentials Secret"
        );
        return Err(error);
    }
    if name.is_empty() {
        return Ok(resource(current));
    }
    Err(ApiError::property_unknown(&name))
}

pub async fn roles() -> Response {
    let members: Vec<String> = services::ROLES
        .iter()
        .map(|(name, _)| format!("/redfish/v1/AccountService/Roles/{name}"))
        .collect();
    resource(collection(
        "RoleCollection",
        "Roles",
        "/redfish/v1/AccountService/Roles",
        &members,
    ))
}

pub async fn role(Path(id): Path<String>) -> ApiResult<Response> {
    services::role(&id)
        .map(resource)
        .ok_or_else(|| ApiError::not_found(&format!("/redfish/v1/AccountService/Roles/{id}")))
}

pub async fn registries() -> Response {
    resource(collection(
        "MessageRegistryFileCollection",
        "Message Registries",
        "/redfish/v1/Registries",
        &[
            "/redfish/v1/Registries/Base".to_owned(),
            format!("/redfish/v1/Registries/{}", super::bios::REGISTRY_FILE_ID),
        ],
    ))
}

pub async fn registry(Path(id): Path<String>) -> ApiResult<Response> {
    if id == super::bios::REGISTRY_FILE_ID {
        return Ok(resource(super::bios::registry_file()));
    }
    if id != "Base" {
        return Err(ApiError::not_found(&format!("/redfish/v1/Registries/{id}")));
    }
    Ok(resource(services::registry_file()))
}

pub async fn registry_document(Path((id, file)): Path<(String, String)>) -> ApiResult<Response> {
    use super::bios::{ATTRIBUTE_REGISTRY, REGISTRY_FILE_ID};
    if id == REGISTRY_FILE_ID && file == format!("{ATTRIBUTE_REGISTRY}.json") {
        return Ok(resource(super::bios::registry_document()));
    }
    if id != "Base" || file != format!("{BASE_REGISTRY_ID}.json") {
        return Err(ApiError::not_found(&format!(
            "/redfish/v1/Registries/{id}/{file}"
        )));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], BASE_REGISTRY).into_response())
}

pub async fn event_service() -> Response {
    resource(json!({
        "@odata.type": "#EventService.v1_7_0.EventService",
        "@odata.id": "/redfish/v1/EventService",
        "Id": "EventService",
        "Name": "Event Service",
        "ServiceEnabled": true,
        "Status": status_enabled(),
        "DeliveryRetryAttempts": events::RETRY_ATTEMPTS,
        "DeliveryRetryIntervalSeconds": events::RETRY_INTERVAL.as_secs(),
        "EventFormatTypes": ["Event"],
        "RegistryPrefixes": events::REGISTRY_PREFIXES,
        "ResourceTypes": events::RESOURCE_TYPES,
        "SSEFilterPropertiesSupported": {
            "MessageId": false,
            "OriginResource": false,
            "RegistryPrefix": false,
            "ResourceType": false,
        },
        "ServerSentEventUri": "/redfish/v1/EventService/SSE",
        "Subscriptions": odata_id("/redfish/v1/EventService/Subscriptions"),
        "Actions": {
            "#EventService.SubmitTestEvent": {
                "target": "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
            }
        },
    }))
}

pub async fn subscriptions(State(context): State<Arc<Context>>) -> Response {
    let members: Vec<String> = context.events.list().iter().map(|s| s.uri()).collect();
    resource(collection(
        "EventDestinationCollection",
        "Event Subscriptions",
        "/redfish/v1/EventService/Subscriptions",
        &members,
    ))
}

pub async fn create_subscription(
    State(context): State<Arc<Context>>,
    body: JsonBody,
) -> ApiResult<Response> {
    let subscription = context.events.add(&body.required()?).await?;
    tracing::info!(id = %subscription.id, destination = %subscription.destination, "Redfish: event subscription added");
    let mut response = (StatusCode::CREATED, axum::Json(subscription.to_json())).into_response();
    if let Ok(value) = HeaderValue::from_str(&subscription.uri()) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

fn subscription_uri(id: &str) -> String {
    format!("/redfish/v1/EventService/Subscriptions/{id}")
}

pub async fn subscription(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    context
        .events
        .get(&id)
        .map(|s| resource(s.to_json()))
        .ok_or_else(|| ApiError::not_found(&subscription_uri(&id)))
}

pub async fn delete_subscription(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if context.events.remove(&id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(&subscription_uri(&id)))
    }
}

pub async fn sse(State(context): State<Arc<Context>>) -> Response {
    context.events.stream().into_response()
}

/// Sends a client-described event to every subscriber and SSE listener.
pub async fn submit_test_event(
    State(context): State<Arc<Context>>,
    body: JsonBody,
) -> ApiResult<Response> {
    const ACTION: &str = "EventService.SubmitTestEvent";
    let body = body.0.unwrap_or_default();
    let id = context.events.next_event_id();
    let mut record = json!({
        "EventId": id.to_string(),
        "EventTimestamp": rfc3339(now_unix()),
        "EventType": "Alert",
        "MessageId": "ResourceEvent.1.0.3.TestMessage",
        "Message": "This is a test message.",
        "MessageArgs": [],
        "MessageSeverity": "OK",
        "OriginOfCondition": odata_id("/redfish/v1/EventService"),
    });
    let mut event_type = "Alert";
    for (name, value) in &body {
        let text = || {
            value
                .as_str()
                .ok_or_else(|| ApiError::parameter_type(value, name, ACTION))
        };
        match name.as_str() {
            "EventType" => {
                let wanted = text()?;
                event_type = events::EVENT_TYPES
                    .iter()
                    .copied()
                    .find(|t| *t == wanted)
                    .ok_or_else(|| ApiError::property_not_in_list(value, name))?;
                record[name] = value.clone();
            }
            "MessageId" | "Message" | "EventId" | "EventTimestamp" | "MessageSeverity" => {
                text()?;
                record[name] = value.clone();
            }
            "MessageArgs" => {
                if !value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string))
                {
                    return Err(ApiError::parameter_type(value, name, ACTION));
                }
                record[name] = value.clone();
            }
            "OriginOfCondition" => {
                record[name] = odata_id(text()?);
            }
            "EventGroupId" => {
                value
                    .as_i64()
                    .ok_or_else(|| ApiError::parameter_type(value, name, ACTION))?;
                record[name] = value.clone();
            }
            other => return Err(ApiError::parameter_unknown(ACTION, other)),
        }
    }
    context.events.publish(
        id,
        &EventRecord {
            record,
            event_type,
            resource_type: "ComputerSystem",
        },
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}
