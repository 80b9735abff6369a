//! Redfish error bodies: an HTTP status plus `@Message.ExtendedInfo` entries whose text comes
//! from the DMTF Base message registry we also serve, so a client can look every MessageId up.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::machine::MachineError;

/// The DMTF Base registry (CC BY 4.0, copied unchanged), served at
/// `/redfish/v1/Registries/Base/Base.1.4.0.json`.
pub const BASE_REGISTRY: &str = include_str!("Base.1.4.0.json");
pub const BASE_REGISTRY_ID: &str = "Base.1.4.0";

fn registry() -> &'static Value {
    static REGISTRY: OnceLock<Value> = OnceLock::new();
    REGISTRY.get_or_init(|| serde_json::from_str(BASE_REGISTRY).expect("Base registry is JSON"))
}

/// One `@Message.ExtendedInfo` entry for Base message `id` with its `%n` arguments filled.
pub fn message(id: &str, args: &[&str]) -> Value {
    let entry = &registry()["Messages"][id];
    debug_assert!(
        entry.is_object(),
        "message {id} is not in the Base registry"
    );
    let mut text = entry["Message"].as_str().unwrap_or(id).to_owned();
    // Highest index first so %1 does not eat the prefix of %10.
    for (index, arg) in args.iter().enumerate().rev() {
        text = text.replace(&format!("%{}", index + 1), arg);
    }
    json!({
        "@odata.type": "#Message.v1_1_2.Message",
        "MessageId": format!("{BASE_REGISTRY_ID}.{id}"),
        "Message": text,
        "MessageArgs": args,
        "MessageSeverity": entry["Severity"].as_str().unwrap_or("Warning"),
        "Resolution": entry["Resolution"].as_str().unwrap_or("None"),
    })
}

/// An error a handler returns; becomes a Redfish error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// The top-level `error.message`: says exactly what was wrong with this request.
    pub text: String,
    pub messages: Vec<Value>,
    pub retry_after: Option<u32>,
    pub allow: Option<&'static str>,
    pub authenticate: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, text: impl Into<String>, messages: Vec<Value>) -> Self {
        ApiError {
            status,
            text: text.into(),
            messages,
            retry_after: None,
            allow: None,
            authenticate: false,
        }
    }

    pub fn bad_request(id: &str, args: &[&str]) -> Self {
        let info = message(id, args);
        let text = info["Message"].as_str().unwrap_or(id).to_owned();
        ApiError::new(StatusCode::BAD_REQUEST, text, vec![info])
    }

    /// A URL the egress policy refuses (`property` of a resource, or a parameter of
    /// `action`): the message says which address or why, never the URL's credentials.
    pub fn egress(
        error: &kubevirt_bmc_contract::egress::EgressError,
        url: &str,
        property: &str,
        action: Option<&str>,
    ) -> Self {
        use kubevirt_bmc_contract::egress::{EgressError, redact};
        let shown = redact(url);
        let mut error_doc = match (error, action) {
            (EgressError::Refused { .. }, _) => ApiError::bad_request("AccessDenied", &[&shown]),
            (_, Some(action)) => ApiError::bad_request(
                "ActionParameterValueFormatError",
                &[&shown, property, action],
            ),
            (_, None) => ApiError::bad_request("PropertyValueFormatError", &[&shown, property]),
        };
        error_doc.text = format!("{property}: {error}");
        error_doc
    }

    pub fn malformed_json(detail: &str) -> Self {
        let mut error = ApiError::bad_request("MalformedJSON", &[]);
        error.text = format!("The request body is not valid JSON: {detail}");
        error
    }

    pub fn property_unknown(name: &str) -> Self {
        ApiError::bad_request("PropertyUnknown", &[name])
    }

    pub fn property_not_writable(name: &str) -> Self {
        ApiError::bad_request("PropertyNotWritable", &[name])
    }

    pub fn property_type(value: &Value, name: &str) -> Self {
        ApiError::bad_request("PropertyValueTypeError", &[&value.to_string(), name])
    }

    pub fn property_not_in_list(value: &Value, name: &str) -> Self {
        let shown = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        ApiError::bad_request("PropertyValueNotInList", &[&shown, name])
    }

    pub fn parameter_missing(action: &str, parameter: &str) -> Self {
        ApiError::bad_request("ActionParameterMissing", &[action, parameter])
    }

    pub fn parameter_unknown(action: &str, parameter: &str) -> Self {
        ApiError::bad_request("ActionParameterUnknown", &[action, parameter])
    }

    pub fn parameter_type(value: &Value, parameter: &str, action: &str) -> Self {
        ApiError::bad_request(
            "ActionParameterValueTypeError",
            &[&value.to_string(), parameter, action],
        )
    }

    pub fn not_found(uri: &str) -> Self {
        let info = message("ResourceMissingAtURI", &[uri]);
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("There is no resource at {uri}"),
            vec![info],
        )
    }

    pub fn method_not_allowed(method: &str, uri: &str, allow: &'static str) -> Self {
        let mut error = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {uri}; allowed: {allow}"),
            vec![message("GeneralError", &[])],
        );
        error.allow = Some(allow);
        error
    }

    pub fn unauthorized(text: &str) -> Self {
        let mut error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            text,
            vec![message("NoValidSession", &[])],
        );
        error.authenticate = true;
        error
    }

    pub fn precondition_failed() -> Self {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "If-Match does not match the resource's current ETag; read it again and retry",
            vec![message("GeneralError", &[])],
        )
    }

    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body exceeds the limit of {limit} bytes"),
            vec![message("GeneralError", &[])],
        )
    }

    pub fn action_not_supported(action: &str, why: &str) -> Self {
        let mut error = ApiError::bad_request("ActionNotSupported", &[action]);
        error.text = format!("{action} is not supported: {why}");
        error
    }

    pub fn internal(text: &str) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            text,
            vec![message("InternalError", &[])],
        )
    }
}

impl From<MachineError> for ApiError {
    fn from(error: MachineError) -> Self {
        let text = error.to_string();
        match error {
            MachineError::Busy(_) => {
                let mut api = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    text,
                    vec![message("ServiceTemporarilyUnavailable", &["1"])],
                );
                api.retry_after = Some(1);
                api
            }
            MachineError::NotAllowed(_) => ApiError::new(
                StatusCode::CONFLICT,
                text,
                vec![message("ResourceInUse", &[])],
            ),
            MachineError::NotSupported(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                text,
                vec![message("ActionNotSupported", &["this request"])],
            ),
            MachineError::Invalid(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                text,
                vec![message("InvalidObject", &["the request"])],
            ),
            MachineError::Unavailable(_) => {
                let mut api = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    text,
                    vec![message("ServiceTemporarilyUnavailable", &["5"])],
                );
                api.retry_after = Some(5);
                api
            }
            MachineError::Forbidden(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                text,
                vec![message("AccessDenied", &["the machine"])],
            ),
        }
    }
}

/// The Redfish error document for `error`.
pub fn body(error: &ApiError) -> Value {
    let code = error
        .messages
        .first()
        .and_then(|m| m["MessageId"].as_str())
        .map_or_else(|| format!("{BASE_REGISTRY_ID}.GeneralError"), str::to_owned);
    json!({
        "error": {
            "code": code,
            "message": error.text,
            "@Message.ExtendedInfo": error.messages,
        }
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(body(&self))).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kubevirt-bmc\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_the_registry_with_arguments() {
        let info = message(
            "PropertyValueNotInList",
            &["Floppy", "BootSourceOverrideTarget"],
        );
        assert_eq!(info["MessageId"], "Base.1.4.0.PropertyValueNotInList");
        let text = info["Message"].as_str().unwrap();
        assert!(text.contains("Floppy") && text.contains("BootSourceOverrideTarget"));
        assert!(!text.contains('%'));
    }

    #[test]
    fn every_message_we_use_exists() {
        for id in [
            "MalformedJSON",
            "PropertyUnknown",
            "PropertyNotWritable",
            "PropertyValueTypeError",
            "PropertyValueNotInList",
            "PropertyMissing",
            "ActionParameterMissing",
            "ActionParameterUnknown",
            "ActionParameterValueTypeError",
            "ActionParameterNotSupported",
            "ActionNotSupported",
            "ResourceMissingAtURI",
            "NoValidSession",
            "GeneralError",
            "InternalError",
            "ServiceTemporarilyUnavailable",
            "ResourceInUse",
            "InvalidObject",
            "AccessDenied",
            "Success",
            "Created",
            "EventSubscriptionLimitExceeded",
            "ResourceNotFound",
            "InsufficientPrivilege",
        ] {
            assert!(registry()["Messages"][id].is_object(), "{id}");
        }
    }

    #[test]
    fn busy_machine_asks_to_retry() {
        let error = ApiError::from(MachineError::Busy("powering on".into()));
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.retry_after, Some(1));
    }
}
