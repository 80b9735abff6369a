//! The Redfish service in process: the real axum app (`redfish::app`) over a simulated
//! machine, driven with `oneshot` by a short sequence of requests whose route, query, headers
//! and body come from the input (bodies as raw bytes or as JSON built from Redfish's own
//! vocabulary, so the fuzzer reaches the handlers' validation and not only the JSON parser).
//!
//! Invariants, per request: nothing panics; no 5xx (the simulated machine is never
//! unavailable or busy, so the only one allowed is 501 for a `$` query); every error is a
//! Redfish error document with `@Message.ExtendedInfo`; every JSON answer parses; a refused
//! request changes nothing (machine, stored records, sessions, subscriptions, tasks); a boot
//! override PATCH that succeeds reads back exactly as sent.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use axum::body::Body;
use base64::Engine;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use kubevirt_bmc::credentials::Credentials;
use kubevirt_bmc::machine::simulated::{SimulatedConfig, SimulatedMachine};
use kubevirt_bmc::machine::{
    BootMode, BootOverride, BootOverrideEnabled, BootTarget, Machine, MediaInsert, MediaState,
    PowerAction, PowerState, Record,
};
use kubevirt_bmc::redfish::auth::Sessions;
use kubevirt_bmc::redfish::events::Subscription;
use kubevirt_bmc::redfish::http::{BODY_LIMIT, now_unix};
use kubevirt_bmc::redfish::tasks::Tasks;
use kubevirt_bmc::redfish::{Context, app};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use tower::ServiceExt;

const USER: &str = "admin";
const PASSWORD: &str = "secret";
const UUID: &str = "5e3f1c2a-7b4d-4e8f-9a1b-2c3d4e5f6a7b";
const SYSTEM: &str = "/redfish/v1/Systems/sim-vm";

/// Method and path; `{session}` is the last session this input created.
const ROUTES: &[(&str, &str)] = &[
    ("PATCH", SYSTEM),
    (
        "PATCH",
        "/redfish/v1/Systems/5E3F1C2A-7B4D-4E8F-9A1B-2C3D4E5F6A7B",
    ),
    ("PATCH", "/redfish/v1/Systems/other"),
    ("PATCH", "/redfish/v1/Systems/sim-vm/"),
    ("PUT", SYSTEM),
    ("DELETE", SYSTEM),
    ("GET", SYSTEM),
    ("HEAD", SYSTEM),
    ("OPTIONS", SYSTEM),
    (
        "POST",
        "/redfish/v1/Systems/sim-vm/Actions/ComputerSystem.Reset",
    ),
    (
        "POST",
        "/redfish/v1/Systems/other/Actions/ComputerSystem.Reset",
    ),
    (
        "POST",
        "/redfish/v1/Systems/sim%2Dvm/Actions/ComputerSystem.Reset",
    ),
    (
        "GET",
        "/redfish/v1/Systems/sim-vm/Actions/ComputerSystem.Reset",
    ),
    ("PATCH", "/redfish/v1/Systems/sim-vm/SecureBoot"),
    ("PATCH", "/redfish/v1/Systems/sim-vm/VirtualMedia/Cd"),
    ("PATCH", "/redfish/v1/Systems/sim-vm/VirtualMedia/Floppy"),
    ("GET", "/redfish/v1/Systems/sim-vm/VirtualMedia/Cd"),
    (
        "POST",
        "/redfish/v1/Systems/sim-vm/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia",
    ),
    (
        "POST",
        "/redfish/v1/Systems/sim-vm/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia",
    ),
    ("PATCH", "/redfish/v1/Managers/BMC/VirtualMedia/Cd"),
    (
        "POST",
        "/redfish/v1/Managers/BMC/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia",
    ),
    (
        "POST",
        "/redfish/v1/Managers/BMC/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia",
    ),
    (
        "POST",
        "/redfish/v1/Managers/Other/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia",
    ),
    ("POST", "/redfish/v1/Managers/BMC/Actions/Manager.Reset"),
    ("POST", "/redfish/v1/SessionService/Sessions"),
    ("POST", "/redfish/v1/SessionService/Sessions/Members"),
    ("GET", "/redfish/v1/SessionService/Sessions/{session}"),
    ("DELETE", "/redfish/v1/SessionService/Sessions/{session}"),
    ("DELETE", "/redfish/v1/SessionService/Sessions/nope"),
    ("GET", "/redfish/v1/SessionService/Sessions"),
    ("PATCH", "/redfish/v1/SessionService"),
    ("GET", "/redfish/v1/SessionService"),
    ("PATCH", "/redfish/v1/AccountService/Accounts/1"),
    ("PATCH", "/redfish/v1/AccountService/Accounts/2"),
    ("PATCH", "/redfish/v1/AccountService"),
    ("POST", "/redfish/v1/EventService/Subscriptions"),
    ("POST", "/redfish/v1/EventService/Subscriptions/Members"),
    ("DELETE", "/redfish/v1/EventService/Subscriptions/nope"),
    ("PATCH", "/redfish/v1/EventService"),
    (
        "POST",
        "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
    ),
    ("GET", "/redfish/v1"),
    ("GET", "/redfish"),
    ("GET", "/redfish/v1/TaskService/Tasks/1"),
    ("GET", "/redfish/v1/TaskService/TaskMonitors/1"),
    ("GET", "/redfish/v1/Registries/Base/Base.1.4.0.json"),
    ("GET", "/redfish/v1/Systems/%FF"),
    ("PATCH", "/redfish/v1/Systems/%FF"),
    ("PATCH", "/redfish/v1/Managers/%C3%28/VirtualMedia/Cd"),
    ("POST", "/redfish/v1/Nope"),
];

const QUERIES: &[&str] = &[
    "",
    "?$expand=*",
    "?%24select=Id",
    "?only",
    "?timeout=5s",
    "?a=b&$top=1",
];

/// Property names the handlers know (and a few they must refuse).
const KEYS: &[&str] = &[
    "Boot",
    "BootSourceOverrideTarget",
    "BootSourceOverrideEnabled",
    "BootSourceOverrideMode",
    "BootSourceOverrideTarget@Redfish.AllowableValues",
    "PowerState",
    "ResetType",
    "Image",
    "Inserted",
    "WriteProtected",
    "TransferProtocolType",
    "TransferMethod",
    "MediaType",
    "UserName",
    "Password",
    "SessionTimeout",
    "Destination",
    "Context",
    "Protocol",
    "SubscriptionType",
    "EventFormatType",
    "EventTypes",
    "RegistryPrefixes",
    "ResourceTypes",
    "EventType",
    "MessageId",
    "Message",
    "EventId",
    "EventTimestamp",
    "MessageSeverity",
    "MessageArgs",
    "OriginOfCondition",
    "EventGroupId",
    "SecureBootEnable",
    "Id",
    "Name",
    "Oem",
    "@odata.id",
    "RoleId",
    "Enabled",
    "AssetTag",
    "",
];

const STRINGS: &[&str] = &[
    "Pxe",
    "Hdd",
    "Cd",
    "None",
    "BiosSetup",
    "UefiHttp",
    "Floppy",
    "Once",
    "Continuous",
    "Disabled",
    "UEFI",
    "Legacy",
    "On",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "PowerCycle",
    "Nmi",
    "PushPowerButton",
    USER,
    PASSWORD,
    "http://192.0.2.1/boot.iso",
    "https://192.0.2.1/x.iso?sig=1",
    "http://",
    "ftp://192.0.2.1/y.iso",
    "http://a b/x.iso",
    "HTTP",
    "HTTPS",
    "NFS",
    "Stream",
    "Upload",
    "CD",
    "DVD",
    "Redfish",
    "RedfishEvent",
    "Event",
    "StatusChange",
    "ResourceUpdated",
    "Alert",
    "Other",
    "ComputerSystem",
    "VirtualMedia",
    "ResourceEvent",
    "Base",
    "http://192.0.2.1:9/events",
    "",
];

#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Word(u8),
    Text(String),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

#[derive(Debug, Arbitrary)]
enum Key {
    Known(u8),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Payload {
    None,
    Bytes(Vec<u8>),
    Json(Json),
    /// One byte over the limit, with or without a Content-Length announcing it.
    Oversized {
        declared: bool,
    },
}

#[derive(Debug, Arbitrary)]
enum Auth {
    Basic,
    WrongPassword,
    Missing,
    /// The token of the last session this input created (garbage when there is none).
    Token,
    RawAuthorization(Vec<u8>),
    RawToken(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Tag {
    Absent,
    Star,
    /// The ETag of the last answer that carried one.
    Last,
    Weak,
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Step {
    route: u8,
    query: u8,
    suffix: Option<String>,
    auth: Auth,
    if_match: Tag,
    if_none_match: Tag,
    odata_version: Option<Vec<u8>>,
    content_length: bool,
    payload: Payload,
}

#[derive(Debug, Arbitrary)]
struct Input {
    powered_on: bool,
    media_inserted: bool,
    boot: (u8, u8, bool),
    steps: Vec<Step>,
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    machine: Arc<SimulatedMachine>,
    /// Built once: its event delivery client loads the system's CA certificates.
    base: Arc<Context>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let machine = Arc::new(
            SimulatedMachine::new(SimulatedConfig {
                uuid: Some(UUID.to_owned()),
                transition: Duration::ZERO,
                ..SimulatedConfig::default()
            })
            .unwrap(),
        );
        let base = runtime
            .block_on(Context::new(
                machine.clone(),
                Credentials::new(USER, PASSWORD),
            ))
            .unwrap();
        Fixture {
            runtime,
            machine,
            base,
        }
    })
}

/// Everything a request could change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    power: PowerState,
    boot: BootOverride,
    media: MediaState,
    records: Vec<Option<String>>,
    nmi_count: u64,
    last_boot: Option<BootTarget>,
    sessions: Vec<String>,
    session_timeout: u64,
    subscriptions: Vec<Subscription>,
    tasks: Vec<String>,
}

async fn snapshot(machine: &SimulatedMachine, context: &Context) -> Snapshot {
    let mut records = Vec::new();
    for record in [
        Record::EventSubscriptions,
        Record::SessionKey,
        Record::SessionSettings,
        Record::Indicators,
    ] {
        records.push(machine.record(record).await.unwrap());
    }
    Snapshot {
        power: machine.power_state().await.unwrap(),
        boot: machine.boot_override().await.unwrap(),
        media: machine.media().await.unwrap(),
        records,
        nmi_count: machine.nmi_count(),
        last_boot: machine.last_boot(),
        sessions: context
            .sessions
            .list(now_unix())
            .into_iter()
            .map(|s| s.id)
            .collect(),
        session_timeout: context.sessions.timeout(),
        subscriptions: context.events.list(),
        tasks: context.tasks.ids(),
    }
}

/// The same starting point for every input (the machine and the event service are shared
/// by the whole process; sessions and tasks are made fresh).
async fn reset(fixture: &Fixture, input: &Input) -> Arc<Context> {
    let machine = &fixture.machine;
    machine.power(PowerAction::ForceOff).await.unwrap();
    if input.powered_on {
        machine.power(PowerAction::On).await.unwrap();
    }
    machine.eject_media().await.unwrap();
    if input.media_inserted {
        machine
            .insert_media(MediaInsert {
                image: "http://192.0.2.1/seed.iso".to_owned(),
                inserted: true,
                write_protected: true,
            })
            .await
            .unwrap();
    }
    let (target, enabled, legacy) = input.boot;
    let enabled = [
        BootOverrideEnabled::Disabled,
        BootOverrideEnabled::Once,
        BootOverrideEnabled::Continuous,
    ][enabled as usize % 3];
    machine
        .set_boot_override(BootOverride {
            target: BootTarget::ALL[target as usize % BootTarget::ALL.len()],
            enabled,
            mode: if legacy {
                BootMode::Legacy
            } else {
                BootMode::Uefi
            },
        })
        .await
        .unwrap();
    machine
        .store_record(Record::SessionSettings, None)
        .await
        .unwrap();
    machine
        .store_record(Record::EventSubscriptions, None)
        .await
        .unwrap();
    drain().await;
    let base = &fixture.base;
    let dyn_machine: Arc<dyn Machine> = machine.clone();
    Arc::new(Context {
        machine: dyn_machine.clone(),
        credentials: base.credentials.clone(),
        ids: base.ids.clone(),
        sessions: Sessions::load(dyn_machine).await.unwrap(),
        events: base.events.clone(),
        tasks: Tasks::default(),
        clock_offset_micros: std::sync::atomic::AtomicI64::new(0),
    })
}

/// Lets the event dispatcher publish what the machine emitted while no subscription exists.
async fn drain() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

fn json(value: &Json, depth: usize) -> Value {
    match value {
        _ if depth > 6 => Value::Null,
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Int(i) => Value::Number((*i).into()),
        Json::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Json::Word(i) => Value::String(STRINGS[*i as usize % STRINGS.len()].to_owned()),
        Json::Text(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(|i| json(i, depth + 1)).collect()),
        Json::Object(fields) => {
            let mut map = Map::new();
            for (key, value) in fields {
                let key = match key {
                    Key::Known(i) => KEYS[*i as usize % KEYS.len()].to_owned(),
                    Key::Raw(s) => s.clone(),
                };
                map.insert(key, json(value, depth + 1));
            }
            Value::Object(map)
        }
    }
}

#[derive(Default)]
struct Memory {
    token: Option<String>,
    session: Option<String>,
    etag: Option<String>,
}

fn tag(tag: &Tag, memory: &Memory) -> Option<Vec<u8>> {
    match tag {
        Tag::Absent => None,
        Tag::Star => Some(b"*".to_vec()),
        Tag::Last => Some(memory.etag.clone().unwrap_or_default().into_bytes()),
        Tag::Weak => Some(format!("W/{}", memory.etag.clone().unwrap_or_default()).into_bytes()),
        Tag::Raw(bytes) => Some(bytes.clone()),
    }
}

struct Built {
    request: Request<Body>,
    method: Method,
    path: String,
    dollar_query: bool,
    body: Vec<u8>,
}

fn build(step: &Step, memory: &Memory) -> Option<Built> {
    let (method, path) = ROUTES[step.route as usize % ROUTES.len()];
    let session = memory.session.as_deref().unwrap_or("0");
    let mut path = path.replace("{session}", session);
    if let Some(suffix) = &step.suffix {
        path.push('/');
        path.push_str(suffix);
    }
    let query = QUERIES[step.query as usize % QUERIES.len()];
    let method: Method = method.parse().unwrap();
    let body = match &step.payload {
        Payload::None => Vec::new(),
        Payload::Bytes(bytes) => bytes.clone(),
        Payload::Json(value) => serde_json::to_vec(&json(value, 0)).unwrap(),
        Payload::Oversized { .. } => {
            let mut body = vec![b' '; BODY_LIMIT - 1];
            body.extend_from_slice(b"{}");
            body
        }
    };
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(format!("{path}{query}"));
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
        .into_bytes()
    };
    let (name, value) = match &step.auth {
        Auth::Basic => (header::AUTHORIZATION.as_str(), Some(basic(USER, PASSWORD))),
        Auth::WrongPassword => (header::AUTHORIZATION.as_str(), Some(basic(USER, "x"))),
        Auth::Missing => (header::AUTHORIZATION.as_str(), None),
        Auth::Token => (
            "X-Auth-Token",
            Some(memory.token.clone().unwrap_or_default().into_bytes()),
        ),
        Auth::RawAuthorization(bytes) => (header::AUTHORIZATION.as_str(), Some(bytes.clone())),
        Auth::RawToken(bytes) => ("X-Auth-Token", Some(bytes.clone())),
    };
    let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(value) = value {
        headers.push((name, value));
    }
    if let Some(value) = tag(&step.if_match, memory) {
        headers.push((header::IF_MATCH.as_str(), value));
    }
    if let Some(value) = tag(&step.if_none_match, memory) {
        headers.push((header::IF_NONE_MATCH.as_str(), value));
    }
    if let Some(value) = &step.odata_version {
        headers.push(("OData-Version", value.clone()));
    }
    let declared = match step.payload {
        Payload::Oversized { declared } => declared,
        _ => step.content_length,
    };
    if declared {
        headers.push((
            header::CONTENT_LENGTH.as_str(),
            body.len().to_string().into_bytes(),
        ));
    }
    if !body.is_empty() {
        headers.push((header::CONTENT_TYPE.as_str(), b"application/json".to_vec()));
    }
    for (name, value) in headers {
        // A value no HTTP parser would hand over is not a request the service can see.
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            builder = builder.header(name, value);
        }
    }
    let request = builder.body(Body::from(body.clone())).ok()?;
    let dollar_query = query.contains("$") || query.contains("%24");
    Some(Built {
        path: request.uri().path().to_owned(),
        request,
        method,
        dollar_query,
        body,
    })
}

fn check_error_document(status: StatusCode, headers: &http::HeaderMap, bytes: &[u8], what: &str) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {status} answered with content type {content_type:?}: {:?}",
        String::from_utf8_lossy(bytes)
    );
    let document: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{what}: {status} body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    let error = &document["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {status} without error.message: {document}"
    );
    let info = error["@Message.ExtendedInfo"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {status} without @Message.ExtendedInfo: {document}"));
    assert!(!info.is_empty(), "{what}: empty ExtendedInfo: {document}");
    for message in info {
        assert!(
            message["MessageId"]
                .as_str()
                .is_some_and(|id| id.starts_with("Base.1.4.0.")),
            "{what}: MessageId not from the Base registry: {document}"
        );
        assert!(
            message["Message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: message without text: {document}"
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        assert!(
            headers.contains_key(header::WWW_AUTHENTICATE),
            "{what}: 401 without WWW-Authenticate"
        );
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        assert!(
            headers.contains_key(header::ALLOW),
            "{what}: 405 without Allow"
        );
    }
}

/// What a successful System PATCH sent for `Boot` reads back unchanged.
fn check_boot_round_trip(sent: &[u8], answer: &Value, what: &str) {
    let Ok(Value::Object(sent)) = serde_json::from_slice::<Value>(sent) else {
        return;
    };
    let Some(Value::Object(boot)) = sent.get("Boot") else {
        return;
    };
    for (field, value) in boot {
        assert_eq!(
            &answer["Boot"][field], value,
            "{what}: Boot/{field} does not read back as set"
        );
    }
}

async fn run(fixture: &Fixture, input: Input) {
    let context = reset(fixture, &input).await;
    let mut memory = Memory::default();
    for step in input.steps.iter().take(8) {
        let Some(built) = build(step, &memory) else {
            continue;
        };
        let what = format!("{} {}", built.method, built.path);
        let before = snapshot(&fixture.machine, &context).await;
        let response = app(context.clone()).oneshot(built.request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{what}: body failed: {e}"))
            .to_bytes();
        let after = snapshot(&fixture.machine, &context).await;

        if status.is_server_error() {
            assert!(
                status == StatusCode::NOT_IMPLEMENTED && built.dollar_query,
                "{what}: {status}: {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        if (status.is_client_error() || status.is_server_error()) && built.method != Method::HEAD {
            check_error_document(status, &headers, &bytes, &what);
        }
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(
                before, after,
                "{what}: refused with {status} but state changed"
            );
        }
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json && !bytes.is_empty() {
            let answer: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{what}: JSON answer does not parse: {e}"));
            if status == StatusCode::OK
                && built.method == Method::PATCH
                && answer["@odata.type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("#ComputerSystem."))
            {
                check_boot_round_trip(&built.body, &answer, &what);
            }
        }

        if let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) {
            memory.etag = Some(etag.to_owned());
        }
        if status == StatusCode::CREATED
            && let Some(token) = headers.get("X-Auth-Token").and_then(|v| v.to_str().ok())
        {
            memory.token = Some(token.to_owned());
            memory.session = headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.rsplit('/').next())
                .map(str::to_owned);
        }
        // Subscriptions never outlive the request that made them: no event can be delivered
        // (the fuzzer must not send HTTP to whatever Destination it invented).
        for subscription in context.events.list() {
            context.events.remove(&subscription.id).await.unwrap();
        }
        drain().await;
    }
}

fuzz_target!(|input: Input| {
    let fixture = fixture();
    fixture.runtime.block_on(run(fixture, input));
});
