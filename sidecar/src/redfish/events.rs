//! EventService: subscriptions kept through the backend (`Record::EventSubscriptions`),
//! delivery by HTTP POST with retries and backoff, and a Server-Sent Events stream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use super::egress::GuardedResolver;
use super::errors::{ApiError, ApiResult};
use super::http::{now_unix, rfc3339};
use super::models::{Ids, MEDIA_ID, power_state_name};
use super::seal::{Seal, SealError};
use crate::machine::{Machine, MachineError, MachineEvent, PowerState, Record};
use kubevirt_bmc_contract::egress::{EgressPolicy, Host, Target, redact};

pub const EVENT_TYPES: [&str; 4] = ["StatusChange", "ResourceUpdated", "Alert", "Other"];
pub const RESOURCE_TYPES: [&str; 2] = ["ComputerSystem", "VirtualMedia"];
pub const REGISTRY_PREFIXES: [&str; 2] = ["ResourceEvent", "Base"];
pub const MAX_SUBSCRIPTIONS: usize = 16;
/// Attempts after the first failed one, and the first wait between them (doubling).
pub const RETRY_ATTEMPTS: u32 = 3;
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const QUEUE: usize = 128;
/// Bounds on a subscription's `HttpHeaders`: enough for an `Authorization` header and a few
/// more (Metal3 sends one object per key of its `httpHeadersRef` Secret), small enough that
/// a client cannot make the BMC hold or send much.
pub const MAX_HTTP_HEADERS: usize = 16;
pub const MAX_HTTP_HEADER_BYTES: usize = 4096;
pub const MAX_HTTP_HEADERS_BYTES: usize = 8192;
/// Headers the BMC's own POST sets or that would change its framing or connection; a
/// subscription may not replace them.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// A subscription's `HttpHeaders`, sent with each event POST. They may be credentials
/// (Metal3 fills them from a Secret), so they reach the stored record (a VM annotation on
/// KubeVirt, which anyone who may read the VM reads; the sidecar may not write any Secret)
/// only sealed ([`super::seal`]), are never shown by a GET (DSP0266: write-only, null or
/// empty in responses) and never logged (Debug shows names only).
#[derive(Clone, Default, PartialEq)]
pub struct HttpHeaders(pub Vec<(http::HeaderName, http::HeaderValue)>);

impl std::fmt::Debug for HttpHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Why a stored subscription's `HttpHeaders` cannot be restored (the subscription is then
/// dropped: delivering without the headers its receiver asked for would be refused there).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadersLost {
    #[error("its HttpHeaders were kept in memory only by the BMC that took the subscription")]
    NeverSealed,
    #[error("its sealed HttpHeaders: {0}")]
    Unsealed(#[from] SealError),
    #[error("its sealed HttpHeaders are not JSON")]
    NotJson,
    #[error("its sealed HttpHeaders are not valid headers")]
    NotHeaders,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub destination: String,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub registry_prefixes: Vec<String>,
    #[serde(default)]
    pub resource_types: Vec<String>,
    /// Stored only as `sealed_http_headers`, see [`HttpHeaders`].
    #[serde(skip)]
    pub http_headers: HttpHeaders,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_http_headers: Option<String>,
    /// Read from records of BMCs that kept `HttpHeaders` in memory only: such a subscription
    /// is dropped rather than deliver events without the headers its receiver asked for.
    #[serde(default, skip_serializing)]
    pub had_http_headers: bool,
}

/// One entry of an Event's `Events` array, with what subscriptions filter on.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub record: Value,
    pub event_type: &'static str,
    pub resource_type: &'static str,
}

impl Subscription {
    pub fn wants(&self, event: &EventRecord) -> bool {
        let message_id = event.record["MessageId"].as_str().unwrap_or_default();
        let prefix = message_id.split('.').next().unwrap_or_default();
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event.event_type))
            && (self.registry_prefixes.is_empty()
                || self.registry_prefixes.iter().any(|p| p == prefix))
            && (self.resource_types.is_empty()
                || self.resource_types.iter().any(|r| r == event.resource_type))
    }

    /// What the sealed headers are bound to: they open only for this subscription and this
    /// destination, so an edited record cannot send them elsewhere.
    fn seal_context(&self) -> Vec<u8> {
        [self.id.as_bytes(), b"\0", self.destination.as_bytes()].concat()
    }

    /// Seals `http_headers` into `sealed_http_headers` (none when there are none), in the
    /// form a client sends them so that opening parses them again.
    pub fn seal_http_headers(&mut self, seal: &Seal) {
        if self.http_headers.0.is_empty() {
            self.sealed_http_headers = None;
            return;
        }
        let objects: Vec<Value> = self
            .http_headers
            .0
            .iter()
            .map(|(name, value)| {
                let text = std::str::from_utf8(value.as_bytes())
                    .expect("header values are parsed from JSON strings");
                json!({ name.as_str(): text })
            })
            .collect();
        let plaintext = zeroize::Zeroizing::new(
            serde_json::to_vec(&objects).expect("header objects serialize"),
        );
        self.sealed_http_headers = Some(seal.seal(&self.seal_context(), &plaintext));
    }

    /// Restores `http_headers` from a stored record; the error says why the headers are lost.
    pub fn open_http_headers(&mut self, seal: &Seal) -> Result<(), HeadersLost> {
        let Some(sealed) = &self.sealed_http_headers else {
            return if self.had_http_headers {
                Err(HeadersLost::NeverSealed)
            } else {
                Ok(())
            };
        };
        let plaintext = seal.open(&self.seal_context(), sealed)?;
        let value: Value = serde_json::from_slice(&plaintext).map_err(|_| HeadersLost::NotJson)?;
        self.http_headers = parse_http_headers(&value).map_err(|_| HeadersLost::NotHeaders)?;
        Ok(())
    }

    pub fn uri(&self) -> String {
        format!("/redfish/v1/EventService/Subscriptions/{}", self.id)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "@odata.type": "#EventDestination.v1_10_0.EventDestination",
            "@odata.id": self.uri(),
            "Id": self.id,
            "Name": "Event subscription",
            "Destination": self.destination,
            "Context": self.context,
            "Protocol": "Redfish",
            "SubscriptionType": "RedfishEvent",
            "EventFormatType": "Event",
            "EventTypes": self.event_types,
            "RegistryPrefixes": self.registry_prefixes,
            "ResourceTypes": self.resource_types,
            "DeliveryRetryPolicy": "TerminateAfterRetries",
        })
    }
}

/// Parses a subscription request, refusing anything it does not understand.
/// A `Destination` must also pass the installation's egress policy (literal addresses here,
/// names at every delivery).
pub fn parse_subscription(
    body: &Map<String, Value>,
    id: String,
    policy: &EgressPolicy,
) -> ApiResult<Subscription> {
    let mut subscription = Subscription {
        id,
        destination: String::new(),
        context: None,
        event_types: vec![],
        registry_prefixes: vec![],
        resource_types: vec![],
        http_headers: HttpHeaders::default(),
        sealed_http_headers: None,
        had_http_headers: false,
    };
    let string_list = |name: &str, value: &Value, allowed: &[&str]| -> ApiResult<Vec<String>> {
        let items = value
            .as_array()
            .ok_or_else(|| ApiError::property_type(value, name))?;
        items
            .iter()
            .map(|item| match item.as_str() {
                Some(text) if allowed.contains(&text) => Ok(text.to_owned()),
                Some(_) => Err(ApiError::property_not_in_list(item, name)),
                None => Err(ApiError::property_type(item, name)),
            })
            .collect()
    };
    for (name, value) in body {
        match name.as_str() {
            "Destination" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| ApiError::property_type(value, name))?;
                let valid = (text.starts_with("http://") || text.starts_with("https://"))
                    && text
                        .split("://")
                        .nth(1)
                        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
                    && !text.chars().any(char::is_whitespace);
                if !valid {
                    return Err(ApiError::bad_request(
                        "PropertyValueFormatError",
                        &[&redact(text), "Destination"],
                    ));
                }
                policy
                    .check_url(text)
                    .map_err(|error| ApiError::egress(&error, text, "Destination", None))?;
                subscription.destination = text.to_owned();
            }
            "Context" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| ApiError::property_type(value, name))?;
                subscription.context = Some(text.to_owned());
            }
            "Protocol" => {
                if value.as_str() != Some("Redfish") {
                    return Err(ApiError::property_not_in_list(value, name));
                }
            }
            "SubscriptionType" => {
                if value.as_str() != Some("RedfishEvent") {
                    return Err(ApiError::property_not_in_list(value, name));
                }
            }
            "EventFormatType" => {
                if value.as_str() != Some("Event") {
                    return Err(ApiError::property_not_in_list(value, name));
                }
            }
            "EventTypes" => subscription.event_types = string_list(name, value, &EVENT_TYPES)?,
            "RegistryPrefixes" => {
                subscription.registry_prefixes = string_list(name, value, &REGISTRY_PREFIXES)?;
            }
            "ResourceTypes" => {
                subscription.resource_types = string_list(name, value, &RESOURCE_TYPES)?;
            }
            "HttpHeaders" => {
                subscription.http_headers = parse_http_headers(value)?;
            }
            _ => return Err(ApiError::property_unknown(name)),
        }
    }
    if subscription.destination.is_empty() {
        return Err(ApiError::bad_request(
            "CreateFailedMissingReqProperties",
            &["Destination"],
        ));
    }
    Ok(subscription)
}

/// `HttpHeaders` as the EventDestination schema has them: an array of objects, each mapping
/// header names to string values. Ironic's vendor passthru `create_subscription` passes the
/// list on unchanged (ironic/drivers/modules/redfish/vendor.py, it checks only that it is a
/// list) and Metal3 builds it with one single-key object per key of the `httpHeadersRef`
/// Secret (baremetal-operator bmceventsubscription_controller.go `getHTTPHeaders`); `null`
/// is none. Error messages never show a value, nor a name that is not a valid header name
/// (it may be a whole `Name: secret` line).
pub fn parse_http_headers(value: &Value) -> ApiResult<HttpHeaders> {
    let format_error = |property: String| {
        ApiError::bad_request(
            "PropertyValueFormatError",
            &["(not shown: header values may be credentials)", &property],
        )
    };
    let items = match value {
        Value::Null => return Ok(HttpHeaders::default()),
        Value::Array(items) => items,
        _ => return Err(format_error("HttpHeaders".to_owned())),
    };
    let mut headers = Vec::new();
    let mut total = 0;
    for (index, item) in items.iter().enumerate() {
        let object = item
            .as_object()
            .ok_or_else(|| format_error(format!("HttpHeaders/{index}")))?;
        for (name, value) in object {
            let header_name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format_error(format!("HttpHeaders/{index} (a header name)")))?;
            if RESERVED_HEADERS.contains(&header_name.as_str()) {
                return Err(ApiError::bad_request(
                    "PropertyValueNotInList",
                    &[header_name.as_str(), &format!("HttpHeaders/{index}")],
                ));
            }
            let shown = format!("HttpHeaders/{index}/{header_name}");
            let text = value.as_str().ok_or_else(|| format_error(shown.clone()))?;
            if text.len() > MAX_HTTP_HEADER_BYTES {
                return Err(format_error(shown));
            }
            let mut header_value =
                http::HeaderValue::from_str(text).map_err(|_| format_error(shown.clone()))?;
            // HTTP/2 senders keep sensitive values out of their compression tables.
            header_value.set_sensitive(true);
            total += name.len() + text.len();
            headers.push((header_name, header_value));
        }
    }
    if headers.len() > MAX_HTTP_HEADERS || total > MAX_HTTP_HEADERS_BYTES {
        return Err(ApiError::bad_request(
            "PropertyValueFormatError",
            &[
                &format!(
                    "{} headers, {total} bytes (at most {MAX_HTTP_HEADERS} headers, \
                     {MAX_HTTP_HEADERS_BYTES} bytes)",
                    headers.len()
                ),
                "HttpHeaders",
            ],
        ));
    }
    Ok(HttpHeaders(headers))
}

/// The events a machine change produces.
pub fn records_for(ids: &Ids, event: &MachineEvent, event_id: u64, now: u64) -> EventRecord {
    let base = |message_id: &str, text: String, args: Vec<String>, origin: String| {
        json!({
            "EventId": event_id.to_string(),
            "EventTimestamp": rfc3339(now),
            "MessageId": message_id,
            "Message": text,
            "MessageArgs": args,
            "MessageSeverity": "OK",
            "OriginOfCondition": {"@odata.id": origin},
        })
    };
    let system = ids.system_uri();
    match event {
        MachineEvent::PowerChanged { to, .. } => {
            let (id, verb) = match to {
                PowerState::On => ("ResourcePoweredOn", "powered on"),
                PowerState::Off => ("ResourcePoweredOff", "powered off"),
                PowerState::PoweringOn => ("ResourcePoweringOn", "is powering on"),
                PowerState::PoweringOff => ("ResourcePoweringOff", "is powering off"),
            };
            let mut record = base(
                &format!("ResourceEvent.1.3.0.{id}"),
                format!("The resource '{system}' {verb}."),
                vec![system.clone()],
                system,
            );
            record["EventType"] = json!("StatusChange");
            record["Oem"] = json!({"KubevirtBmc": {"PowerState": power_state_name(*to)}});
            EventRecord {
                record,
                event_type: "StatusChange",
                resource_type: "ComputerSystem",
            }
        }
        MachineEvent::BootOverrideChanged(_) => {
            let mut record = base(
                "ResourceEvent.1.0.3.ResourceChanged",
                "One or more resource properties have changed.".to_owned(),
                vec![],
                system,
            );
            record["EventType"] = json!("ResourceUpdated");
            EventRecord {
                record,
                event_type: "ResourceUpdated",
                resource_type: "ComputerSystem",
            }
        }
        MachineEvent::MediaChanged(_) => {
            let origin = format!("{}/VirtualMedia/{MEDIA_ID}", ids.manager_uri());
            let mut record = base(
                "ResourceEvent.1.0.3.ResourceChanged",
                "One or more resource properties have changed.".to_owned(),
                vec![],
                origin,
            );
            record["EventType"] = json!("ResourceUpdated");
            EventRecord {
                record,
                event_type: "ResourceUpdated",
                resource_type: "VirtualMedia",
            }
        }
    }
}

pub fn envelope(event_id: u64, context: Option<&str>, records: &[Value]) -> Value {
    let mut value = json!({
        "@odata.type": "#Event.v1_7_0.Event",
        "Id": event_id.to_string(),
        "Name": "kubevirt-bmc event",
        "Events": records,
    });
    if let Some(context) = context {
        value["Context"] = json!(context);
    }
    value
}

/// Each subscription with the queue its delivery task drains.
type Table = BTreeMap<String, (Subscription, mpsc::Sender<Arc<Value>>)>;

pub(super) type HttpClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

pub struct Events {
    machine: Arc<dyn Machine>,
    ids: Ids,
    subscriptions: Mutex<Table>,
    /// Serialises read-modify-write of the stored list, so concurrent requests lose nothing.
    writes: tokio::sync::Mutex<()>,
    sse: broadcast::Sender<Arc<Value>>,
    next_id: AtomicU64,
    /// Made at the first subscription: its CA roots (the system's whole bundle, parsed) are
    /// about a third of an idle sidecar's heap, and most BMCs never deliver an event.
    client: std::sync::OnceLock<HttpClient>,
    policy: Arc<EgressPolicy>,
    retry_interval: Duration,
    seal: Seal,
}

impl Events {
    /// Loads stored subscriptions and starts their delivery; must run inside tokio.
    pub async fn load(
        machine: Arc<dyn Machine>,
        ids: Ids,
        seal: Seal,
        retry_interval: Duration,
        policy: Arc<EgressPolicy>,
    ) -> Result<Arc<Self>, MachineError> {
        let stored = machine.record(Record::EventSubscriptions).await?;
        let list: Vec<Subscription> = match stored.as_deref().map(serde_json::from_str) {
            Some(Ok(list)) => list,
            Some(Err(error)) => {
                tracing::warn!(%error, "stored event subscriptions are unreadable; starting with none");
                vec![]
            }
            None => vec![],
        };
        let events = Arc::new(Events {
            machine: machine.clone(),
            ids,
            subscriptions: Mutex::new(BTreeMap::new()),
            writes: tokio::sync::Mutex::new(()),
            sse: broadcast::channel(QUEUE).0,
            next_id: AtomicU64::new(now_unix() * 1000),
            client: std::sync::OnceLock::new(),
            policy,
            retry_interval,
            seal,
        });
        for mut subscription in list {
            if let Err(reason) = subscription.open_http_headers(&events.seal) {
                // The next write of the list stores it without this one.
                tracing::warn!(
                    subscription = %subscription.id,
                    %reason,
                    "event subscription dropped: it cannot be delivered with the headers its \
                     receiver asked for (was the Secret's session-key rotated?); the client \
                     must subscribe again"
                );
                continue;
            }
            events.start(subscription);
        }
        let receiver = machine.events();
        tokio::spawn(events.clone().dispatch(receiver));
        Ok(events)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(self: &Arc<Self>, subscription: Subscription) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(
            self.client
                .get_or_init(|| http_client(self.policy.clone()))
                .clone(),
            self.policy.clone(),
            subscription.destination.clone(),
            subscription.http_headers.clone(),
            receiver,
            self.retry_interval,
        ));
        self.lock()
            .insert(subscription.id.clone(), (subscription, sender));
    }

    pub fn list(&self) -> Vec<Subscription> {
        self.lock().values().map(|(s, _)| s.clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Subscription> {
        self.lock().get(id).map(|(s, _)| s.clone())
    }

    async fn persist(&self, list: Vec<Subscription>) -> Result<(), MachineError> {
        let text = serde_json::to_string(&list).expect("subscriptions serialize");
        self.machine
            .store_record(Record::EventSubscriptions, Some(text))
            .await
    }

    pub async fn add(self: &Arc<Self>, body: &Map<String, Value>) -> ApiResult<Subscription> {
        let mut subscription = parse_subscription(
            body,
            uuid::Uuid::new_v4().simple().to_string(),
            &self.policy,
        )?;
        subscription.seal_http_headers(&self.seal);
        let _write = self.writes.lock().await;
        let mut list = self.list();
        if list.len() >= MAX_SUBSCRIPTIONS {
            let mut error = ApiError::bad_request("EventSubscriptionLimitExceeded", &[]);
            error.status = axum::http::StatusCode::CONFLICT;
            return Err(error);
        }
        list.push(subscription.clone());
        self.persist(list).await?;
        self.start(subscription.clone());
        Ok(subscription)
    }

    pub async fn remove(&self, id: &str) -> ApiResult<bool> {
        let _write = self.writes.lock().await;
        let mut list = self.list();
        let before = list.len();
        list.retain(|s| s.id != id);
        if list.len() == before {
            return Ok(false);
        }
        self.persist(list).await?;
        // Dropping the sender ends its delivery task once the queue drains.
        self.lock().remove(id);
        Ok(true)
    }

    pub fn next_event_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends one event to every subscription that wants it and to SSE listeners.
    pub fn publish(&self, event_id: u64, event: &EventRecord) {
        let _ = self.sse.send(Arc::new(envelope(
            event_id,
            None,
            std::slice::from_ref(&event.record),
        )));
        for (subscription, sender) in self.lock().values() {
            if !subscription.wants(event) {
                continue;
            }
            let payload = envelope(
                event_id,
                subscription.context.as_deref(),
                std::slice::from_ref(&event.record),
            );
            if sender.try_send(Arc::new(payload)).is_err() {
                tracing::warn!(subscription = %subscription.id, "event queue full; event dropped");
            }
        }
    }

    async fn dispatch(self: Arc<Self>, mut receiver: broadcast::Receiver<MachineEvent>) {
        loop {
            match receiver.recv().await {
                Ok(event) => {
                    let id = self.next_event_id();
                    self.publish(id, &records_for(&self.ids, &event, id, now_unix()));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "machine events were missed");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// The SSE stream of every event from now on.
    pub fn stream(&self) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
        let stream = BroadcastStream::new(self.sse.subscribe()).filter_map(|item| {
            let event = item.ok()?;
            let id = event["Id"].as_str().unwrap_or_default().to_owned();
            Some(Ok(SseEvent::default().id(id).data(event.to_string())))
        });
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
    }
}

/// Connects only to addresses the policy allows: names through [`GuardedResolver`], literal
/// addresses in [`deliver`] (hyper skips the resolver for them). No redirects are followed.
pub(super) fn http_client(policy: Arc<EgressPolicy>) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(policy));
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_native_roots() {
        Ok(builder) => builder,
        Err(error) => {
            tracing::warn!(%error, "no system CA certificates; https event destinations will fail");
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Posts each queued event to `destination`, retrying with doubling waits; an event that
/// still fails after the retries is dropped (TerminateAfterRetries applies per event).
async fn deliver(
    client: HttpClient,
    policy: Arc<EgressPolicy>,
    destination: String,
    headers: HttpHeaders,
    mut queue: mpsc::Receiver<Arc<Value>>,
    interval: Duration,
) {
    // Logs name the destination without userinfo or query.
    let shown = redact(&destination);
    while let Some(event) = queue.recv().await {
        // Checked again for every event: the policy may have changed since the subscription
        // was stored (a restart with other ranges).
        if let Err(error) = literal_allowed(&policy, &destination) {
            tracing::warn!(destination = %shown, %error, "event not delivered: destination refused");
            continue;
        }
        let body = Bytes::from(event.to_string());
        let mut wait = interval;
        for attempt in 0..=RETRY_ATTEMPTS {
            match post(&client, &destination, &headers, body.clone()).await {
                Ok(()) => break,
                Err(reason) if attempt < RETRY_ATTEMPTS => {
                    tracing::debug!(destination = %shown, attempt, %reason, "event delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
                Err(reason) => {
                    tracing::warn!(destination = %shown, %reason, "event not delivered after retries; dropped");
                }
            }
        }
    }
}

/// A destination whose host is an address: the resolver never sees it, so check it here.
fn literal_allowed(
    policy: &EgressPolicy,
    destination: &str,
) -> Result<(), kubevirt_bmc_contract::egress::EgressError> {
    match Target::parse(destination)? {
        Target {
            host: Host::Ip(addr),
            ..
        } => policy.check(addr),
        _ => Ok(()),
    }
}

async fn post(
    client: &HttpClient,
    destination: &str,
    headers: &HttpHeaders,
    body: Bytes,
) -> Result<(), String> {
    let mut request = http::Request::post(destination)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    for (name, value) in &headers.0 {
        request.headers_mut().append(name.clone(), value.clone());
    }
    let response = tokio::time::timeout(DELIVERY_TIMEOUT, client.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| with_causes(&e))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {}", response.status()))
    }
}

/// An error and its causes on one line: hyper's Display alone is "client error (Connect)",
/// and the resolver's refusal (the egress guard's reason) is a source.
pub(super) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids {
        Ids {
            system: "vm".into(),
            uuid: "u".into(),
            service_uuid: "s".into(),
        }
    }

    #[test]
    fn subscriptions_parse_strictly() {
        let body = |v: Value| v.as_object().unwrap().clone();
        let policy = EgressPolicy::default();
        let ok = parse_subscription(
            &body(
                json!({"Destination": "http://192.0.2.1:9/x", "Protocol": "Redfish",
                "EventTypes": ["StatusChange"], "Context": "c"}),
            ),
            "1".into(),
            &policy,
        )
        .unwrap();
        assert_eq!(ok.event_types, vec!["StatusChange"]);
        for bad in [
            json!({"Destination": "ftp://x"}),
            json!({"Protocol": "Redfish"}),
            json!({"Destination": "http://x", "Protocol": "SNMPv2c"}),
            json!({"Destination": "http://x", "EventTypes": ["Nope"]}),
            json!({"Destination": "http://x", "Color": "red"}),
            json!({"Destination": 5}),
            json!({"Destination": "https://127.0.0.1/"}),
            json!({"Destination": "http://169.254.169.254/latest/meta-data/"}),
            json!({"Destination": "http://[fe80::1]/"}),
            json!({"Destination": "https://user:pw@events.example/"}),
        ] {
            assert!(
                parse_subscription(&body(bad.clone()), "1".into(), &policy).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn http_headers_reach_the_record_sealed_and_never_the_json_or_debug() {
        let body = json!({"Destination": "http://192.0.2.1:9/x",
            "HttpHeaders": [{"Authorization": "Bearer t0ken"}, {"X-Tenant": "a", "X-Other": "b"}]});
        let mut subscription = parse_subscription(
            body.as_object().unwrap(),
            "1".into(),
            &EgressPolicy::default(),
        )
        .unwrap();
        let names: Vec<&str> = subscription
            .http_headers
            .0
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["authorization", "x-other", "x-tenant"]);
        let seal = Seal::derive(b"session key");
        subscription.seal_http_headers(&seal);
        assert!(subscription.sealed_http_headers.is_some());
        let record = serde_json::to_string(&subscription).unwrap();
        for shown in [
            record.clone(),
            subscription.to_json().to_string(),
            format!("{subscription:?}"),
        ] {
            assert!(
                !shown.contains("t0ken") && !shown.contains("Tenant"),
                "{shown}"
            );
        }

        let mut stored: Subscription = serde_json::from_str(&record).unwrap();
        assert!(stored.http_headers.0.is_empty());
        stored.open_http_headers(&seal).unwrap();
        assert_eq!(stored.http_headers, subscription.http_headers);

        // The record edited to send the headers elsewhere, or read under another key.
        let mut redirected: Subscription = serde_json::from_str(&record).unwrap();
        redirected.destination = "http://198.51.100.7/collect".into();
        assert_eq!(
            redirected.open_http_headers(&seal),
            Err(HeadersLost::Unsealed(SealError::DoesNotOpen))
        );
        assert!(redirected.http_headers.0.is_empty());
        let mut rotated: Subscription = serde_json::from_str(&record).unwrap();
        assert_eq!(
            rotated.open_http_headers(&Seal::derive(b"new key")),
            Err(HeadersLost::Unsealed(SealError::DoesNotOpen))
        );

        // A record from a BMC that kept the headers in memory only.
        let mut legacy: Subscription = serde_json::from_value(
            json!({"id": "2", "destination": "http://x", "had_http_headers": true}),
        )
        .unwrap();
        assert_eq!(
            legacy.open_http_headers(&seal),
            Err(HeadersLost::NeverSealed)
        );
        let mut plain: Subscription =
            serde_json::from_value(json!({"id": "3", "destination": "http://x"})).unwrap();
        plain.open_http_headers(&seal).unwrap();
        plain.seal_http_headers(&seal);
        assert!(
            !serde_json::to_string(&plain)
                .unwrap()
                .contains("http_headers")
        );
        assert!(parse_http_headers(&Value::Null).unwrap().0.is_empty());
    }

    #[test]
    fn malformed_http_headers_are_refused_without_showing_them() {
        let long = "v".repeat(MAX_HTTP_HEADER_BYTES + 1);
        let many: Vec<Value> = (0..=MAX_HTTP_HEADERS)
            .map(|i| json!({format!("X-H{i}"): "v"}))
            .collect();
        for bad in [
            json!({"Authorization": "Bearer s3cret"}),
            json!(["Authorization: Bearer s3cret"]),
            json!([{"Authorization: Bearer s3cret": "x"}]),
            json!([{"Bad Name": "s3cret"}]),
            json!([{"Authorization": "s3cret\r\nX-Injected: 1"}]),
            json!([{"Authorization": 5}]),
            json!([{"Content-Length": "0"}]),
            json!([{"Host": "elsewhere"}]),
            json!([{"X-Long": long}]),
            Value::Array(many),
        ] {
            let error = parse_http_headers(&bad).expect_err(&bad.to_string());
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
            let shown = format!("{error:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn filters_select_events() {
        let power = records_for(
            &ids(),
            &MachineEvent::PowerChanged {
                from: PowerState::Off,
                to: PowerState::On,
            },
            1,
            0,
        );
        let media = records_for(
            &ids(),
            &MachineEvent::MediaChanged(crate::machine::MediaState::ejected()),
            2,
            0,
        );
        let mut subscription = Subscription {
            id: "1".into(),
            destination: "http://x".into(),
            context: None,
            event_types: vec![],
            registry_prefixes: vec![],
            resource_types: vec!["VirtualMedia".into()],
            http_headers: HttpHeaders::default(),
            sealed_http_headers: None,
            had_http_headers: false,
        };
        assert!(!subscription.wants(&power));
        assert!(subscription.wants(&media));
        subscription.resource_types.clear();
        subscription.event_types = vec!["StatusChange".into()];
        assert!(subscription.wants(&power));
        assert!(!subscription.wants(&media));
        assert_eq!(
            power.record["MessageId"],
            "ResourceEvent.1.3.0.ResourcePoweredOn"
        );
    }
}
