//! The Manager (the BMC itself) and its virtual CD, also reachable under the System as
//! sushy-tools serves it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::Context;
use super::errors::{ApiError, ApiResult};
use super::http::{JsonBody, check_if_match, parse_rfc3339, resource, rfc3339};
use super::models::{self, MANAGER_ID, MEDIA_ID, collection};
use crate::machine::MediaInsert;
use kubevirt_bmc_contract::egress::redact;

/// The image's host must pass the egress policy now (resolved), so CDI is never sent to
/// loopback, link-local or the cluster's own ranges on a Redfish user's word.
async fn check_image(context: &Context, image: &str, action: Option<&str>) -> ApiResult<()> {
    super::egress::check_now(&context.egress, image)
        .await
        .map(|_| ())
        .map_err(|error| {
            tracing::warn!(image = %redact(image), %error, "Redfish: virtual media image refused");
            ApiError::egress(&error, image, "Image", action)
        })
}

/// Fills in the image's size when the machine needs it (an import sized to fit), asked of
/// the image server now; an unknown size refuses the insert with the reason.
async fn with_size(
    context: &Context,
    mut insert: MediaInsert,
    action: Option<&str>,
) -> ApiResult<MediaInsert> {
    if !context.machine.media_needs_size() {
        return Ok(insert);
    }
    match super::media_size::probe(&context.egress, &insert.image).await {
        Ok(size) => {
            insert.size_bytes = Some(size);
            Ok(insert)
        }
        Err(why) => {
            let shown = redact(&insert.image);
            tracing::warn!(image = %shown, %why, "Redfish: virtual media size unknown; insert refused");
            let mut error = match action {
                Some(action) => ApiError::bad_request(
                    "ActionParameterValueFormatError",
                    &[&shown, "Image", action],
                ),
                None => ApiError::bad_request("PropertyValueFormatError", &[&shown, "Image"]),
            };
            error.text = format!(
                "Image: the size of {shown} cannot be learned with a HEAD request ({why}); the \
                 BMC imports the image into storage of its size, so it must be known"
            );
            Err(error)
        }
    }
}

/// What a change of the virtual CD asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum MediaChange {
    Insert(MediaInsert),
    Eject,
    Nothing,
}

const INSERT: &str = "VirtualMedia.InsertMedia";

/// An InsertMedia body; `Inserted` and `WriteProtected` default to true as in the schema.
pub fn parse_insert(body: &Map<String, Value>) -> ApiResult<MediaInsert> {
    let mut image = None;
    let mut inserted = true;
    let mut write_protected = true;
    for (name, value) in body {
        let boolean = || {
            value
                .as_bool()
                .ok_or_else(|| ApiError::parameter_type(value, name, INSERT))
        };
        match name.as_str() {
            "Image" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| ApiError::parameter_type(value, name, INSERT))?;
                crate::machine::validate_image_url(text).map_err(|_| {
                    ApiError::bad_request(
                        "ActionParameterValueFormatError",
                        &[&redact(text), name, INSERT],
                    )
                })?;
                image = Some(text.to_owned());
            }
            "Inserted" => inserted = boolean()?,
            "WriteProtected" => write_protected = boolean()?,
            "TransferProtocolType" => {
                let scheme = value
                    .as_str()
                    .ok_or_else(|| ApiError::parameter_type(value, name, INSERT))?;
                if scheme != "HTTP" && scheme != "HTTPS" {
                    return Err(ApiError::property_not_in_list(value, name));
                }
            }
            "TransferMethod" => {
                if value.as_str() != Some("Stream") {
                    return Err(ApiError::property_not_in_list(value, name));
                }
            }
            "MediaType" => {
                if !matches!(value.as_str(), Some("CD" | "DVD")) {
                    return Err(ApiError::property_not_in_list(value, name));
                }
            }
            "UserName" | "Password" => {
                return Err(ApiError::bad_request(
                    "ActionParameterNotSupported",
                    &[name, INSERT],
                ));
            }
            other => return Err(ApiError::parameter_unknown(INSERT, other)),
        }
    }
    let image = image.ok_or_else(|| ApiError::parameter_missing(INSERT, "Image"))?;
    Ok(MediaInsert {
        image,
        inserted,
        write_protected,
        size_bytes: None,
    })
}

/// A PATCH of the virtual CD as sushy sends it: `Image` (null or "" ejects) with
/// `Inserted` and `WriteProtected`.
pub fn parse_patch(body: &Map<String, Value>, current: &Value) -> ApiResult<MediaChange> {
    let mut image: Option<Option<String>> = None;
    let mut inserted = None;
    let mut write_protected = None;
    for (name, value) in body {
        match name.as_str() {
            "Image" => match value {
                Value::Null => image = Some(None),
                Value::String(text) if text.is_empty() => image = Some(None),
                Value::String(text) => {
                    crate::machine::validate_image_url(text).map_err(|_| {
                        ApiError::bad_request("PropertyValueFormatError", &[&redact(text), name])
                    })?;
                    image = Some(Some(text.clone()));
                }
                other => return Err(ApiError::property_type(other, name)),
            },
            "Inserted" => {
                inserted = Some(
                    value
                        .as_bool()
                        .ok_or_else(|| ApiError::property_type(value, name))?,
                );
            }
            "WriteProtected" => {
                write_protected = Some(
                    value
                        .as_bool()
                        .ok_or_else(|| ApiError::property_type(value, name))?,
                );
            }
            "TransferProtocolType" | "TransferMethod" => {}
            other if current.get(other).is_some() => {
                return Err(ApiError::property_not_writable(other));
            }
            other => return Err(ApiError::property_unknown(other)),
        }
    }
    Ok(match (image, inserted) {
        (Some(Some(image)), inserted) => MediaChange::Insert(MediaInsert {
            image,
            inserted: inserted.unwrap_or(true),
            write_protected: write_protected.unwrap_or(true),
            size_bytes: None,
        }),
        (Some(None), _) | (None, Some(false)) => MediaChange::Eject,
        (None, _) => MediaChange::Nothing,
    })
}

/// `base` is the VirtualMedia collection the request came through.
fn media_base(context: &Context, uri: &Uri, id: &str) -> ApiResult<String> {
    let owner = if uri.path().starts_with("/redfish/v1/Managers/") {
        "Managers"
    } else {
        "Systems"
    };
    match owner {
        "Managers" if id == MANAGER_ID => Ok(format!("{}/VirtualMedia", context.ids.manager_uri())),
        "Systems" => match context.system_ids(id) {
            Some(ids) => Ok(format!("{}/VirtualMedia", ids.system_uri())),
            None => Err(ApiError::not_found(&format!(
                "/redfish/v1/Systems/{id}/VirtualMedia"
            ))),
        },
        _ => Err(ApiError::not_found(&format!(
            "/redfish/v1/{owner}/{id}/VirtualMedia"
        ))),
    }
}

fn require_media(media: &str, base: &str) -> ApiResult<()> {
    if media == MEDIA_ID {
        Ok(())
    } else {
        Err(ApiError::not_found(&format!("{base}/{media}")))
    }
}

pub async fn managers(State(context): State<Arc<Context>>) -> Response {
    resource(collection(
        "ManagerCollection",
        "Managers",
        "/redfish/v1/Managers",
        &[context.ids.manager_uri()],
    ))
}

pub async fn manager(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if id != MANAGER_ID {
        return Err(ApiError::not_found(&format!("/redfish/v1/Managers/{id}")));
    }
    Ok(resource(manager_json(&context)))
}

/// Microseconds since the epoch on the node's clock.
fn node_clock_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// RFC 3339 with microseconds: Ironic compares to the second and keeps the fraction when the
/// BMC gives one, so a whole-second clock would look up to a second late.
pub fn format_micros(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let whole = rfc3339(seconds.max(0) as u64);
    let (date_time, offset) = whole.split_at(whole.len() - "+00:00".len());
    format!("{date_time}.{:06}{offset}", micros.rem_euclid(1_000_000))
}

/// The Manager with its clock (UTC): the node's clock plus whatever offset a client set,
/// which Ironic's `verify_bmc_clock` step compares with its own and sets when they differ
/// (`ironic/drivers/modules/redfish/management.py`; sushy `Manager.datetime`,
/// `set_datetime`).
fn manager_json(context: &Context) -> Value {
    let mut value = models::manager(&context.ids, context.serial_console.service_enabled());
    let offset = context.clock_offset_micros.load(Ordering::Relaxed);
    value["DateTime"] = Value::from(format_micros(node_clock_micros() + offset));
    value["DateTimeLocalOffset"] = Value::from("+00:00");
    value
}

/// `DateTime` sets the BMC's clock (it runs on from the value given); `DateTimeLocalOffset`
/// is always UTC. Bad values change nothing.
pub async fn patch_manager(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    if id != MANAGER_ID {
        return Err(ApiError::not_found(&format!("/redfish/v1/Managers/{id}")));
    }
    let body = body.required()?;
    // No If-Match check: the Manager's representation changes every microsecond (its
    // clock), so an ETag could never still hold; the clock is all that is written here.
    let current = manager_json(&context);
    let mut wanted = None;
    for (name, value) in &body {
        match name.as_str() {
            "DateTime" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| ApiError::property_type(value, name))?;
                wanted = Some(parse_rfc3339_micros(text).ok_or_else(|| {
                    ApiError::bad_request("PropertyValueFormatError", &[text, name])
                })?);
            }
            "DateTimeLocalOffset" => {
                if value.as_str() != Some("+00:00") && value.as_str() != Some("Z") {
                    let mut error = ApiError::property_not_writable(name);
                    error.text = "DateTimeLocalOffset is always +00:00 (UTC)".to_owned();
                    return Err(error);
                }
            }
            other if current.get(other).is_some() => {
                return Err(ApiError::property_not_writable(other));
            }
            other => return Err(ApiError::property_unknown(other)),
        }
    }
    if let Some(micros) = wanted {
        let offset = micros - node_clock_micros();
        context.clock_offset_micros.store(offset, Ordering::Relaxed);
        tracing::info!(offset_micros = offset, "Redfish: BMC clock set");
    }
    Ok(resource(manager_json(&context)))
}

/// [`parse_rfc3339`] with the fraction kept, in microseconds.
fn parse_rfc3339_micros(text: &str) -> Option<i64> {
    let seconds = parse_rfc3339(text)?;
    let fraction = text
        .split_once('T')
        .and_then(|(_, time)| time.split_once('.'))
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .chain(std::iter::repeat('0'))
                .take(6)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse::<i64>().ok())
        .unwrap_or(0);
    Some(seconds * 1_000_000 + fraction)
}

/// The body is still parsed, so malformed JSON gets its own clear error first.
pub async fn manager_reset(Path(id): Path<String>, _body: JsonBody) -> ApiResult<Response> {
    if id != MANAGER_ID {
        return Err(ApiError::not_found(&format!("/redfish/v1/Managers/{id}")));
    }
    Err(ApiError::action_not_supported(
        "Manager.Reset",
        "this BMC is a sidecar of the VM's Pod and restarts only with it",
    ))
}

pub async fn collection_get(
    State(context): State<Arc<Context>>,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let base = media_base(&context, &uri, &id)?;
    let member = format!("{base}/{MEDIA_ID}");
    Ok(resource(collection(
        "VirtualMediaCollection",
        "Virtual Media",
        &base,
        &[member],
    )))
}

pub async fn get(
    State(context): State<Arc<Context>>,
    uri: Uri,
    Path((id, media)): Path<(String, String)>,
) -> ApiResult<Response> {
    let base = media_base(&context, &uri, &id)?;
    require_media(&media, &base)?;
    let state = context.machine.media().await?;
    Ok(resource(models::virtual_media(&base, &state)))
}

pub async fn patch(
    State(context): State<Arc<Context>>,
    uri: Uri,
    Path((id, media)): Path<(String, String)>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let base = media_base(&context, &uri, &id)?;
    require_media(&media, &base)?;
    let body = body.required()?;
    let machine = &context.machine;
    let current = models::virtual_media(&base, &machine.media().await?);
    check_if_match(&headers, &current)?;
    match parse_patch(&body, &current)? {
        MediaChange::Insert(insert) => {
            check_image(&context, &insert.image, None).await?;
            let insert = with_size(&context, insert, None).await?;
            if machine.media().await?.image.is_some() {
                machine.eject_media().await?;
            }
            machine.insert_media(insert).await?;
        }
        MediaChange::Eject => machine.eject_media().await?,
        MediaChange::Nothing => {}
    }
    Ok(resource(models::virtual_media(
        &base,
        &machine.media().await?,
    )))
}

pub async fn insert(
    State(context): State<Arc<Context>>,
    uri: Uri,
    Path((id, media)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let base = media_base(&context, &uri, &id)?;
    require_media(&media, &base)?;
    let insert = parse_insert(&body.required()?)?;
    check_image(&context, &insert.image, Some(INSERT)).await?;
    let insert = with_size(&context, insert, Some(INSERT)).await?;
    // Query strings of image URLs often carry signatures: they stay out of the log.
    let image = redact(&insert.image);
    context.machine.insert_media(insert).await?;
    tracing::info!(%image, "Redfish: virtual media inserted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Accepts no body, `{}`, or nothing but OEM-free emptiness (sushy posts none).
pub async fn eject(
    State(context): State<Arc<Context>>,
    uri: Uri,
    Path((id, media)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let base = media_base(&context, &uri, &id)?;
    require_media(&media, &base)?;
    if let Some(name) = body.0.as_ref().and_then(|b| b.keys().next()) {
        return Err(ApiError::parameter_unknown("VirtualMedia.EjectMedia", name));
    }
    context.machine.eject_media().await?;
    tracing::info!("Redfish: virtual media ejected");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn insert_needs_an_http_image() {
        let ok = parse_insert(&body(json!({"Image": "http://h/x.iso", "Inserted": true}))).unwrap();
        assert!(ok.write_protected && ok.inserted);
        assert!(parse_insert(&body(json!({}))).is_err());
        assert!(parse_insert(&body(json!({"Image": "nfs://h/x.iso"}))).is_err());
        assert!(
            parse_insert(&body(json!({"Image": "http://h/x.iso", "Inserted": "yes"}))).is_err()
        );
        assert!(parse_insert(&body(json!({"Image": "http://h/x.iso", "Colour": 1}))).is_err());
    }

    #[test]
    fn patch_inserts_or_ejects_like_sushy() {
        let current = json!({"Image": null, "Inserted": false, "Id": "Cd"});
        assert!(matches!(
            parse_patch(
                &body(json!({"Image": "http://h/x.iso", "Inserted": true})),
                &current
            )
            .unwrap(),
            MediaChange::Insert(_)
        ));
        assert_eq!(
            parse_patch(&body(json!({"Image": null, "Inserted": false})), &current).unwrap(),
            MediaChange::Eject
        );
        assert!(parse_patch(&body(json!({"Id": "x"})), &current).is_err());
    }
}
