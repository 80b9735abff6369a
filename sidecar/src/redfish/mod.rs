//! The Redfish service: HTTPS (HTTP/2 and HTTP/1.1 keep-alive) over rustls, driving the
//! machine only through the [`Machine`] interface.
//!
//! `routes` below is the whole URL space; `models`/`services` build the JSON, `system`,
//! `media`, `handlers`, `events` and `tasks` hold the handlers, `auth`, `http` and `expand`
//! the cross-cutting rules (authentication, ETags, OData headers, Redfish error bodies,
//! `$expand`).

pub mod auth;
pub mod bios;
mod chassis;
pub mod connections;
pub mod egress;
pub mod errors;
pub mod events;
pub mod expand;
mod handlers;
pub mod http;
pub mod indicators;
mod manager;
mod media;
pub mod media_size;
pub mod models;
pub mod seal;
pub mod services;
mod system;
pub mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use sha2::Digest;
use tower::Layer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use crate::bmc::SerialConsole;
use crate::credentials::Credentials;
use crate::machine::{Machine, MachineError};
use kubevirt_bmc_contract::egress::EgressPolicy;
use models::Ids;

/// How the Redfish service bounds what clients may make it do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where event destinations and media images may point.
    pub egress: Arc<EgressPolicy>,
    /// A connection with no traffic (and no request being handled) this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; one more is closed at accept.
    pub max_connections: usize,
    /// Where IPMI listens, for the Manager's `NetworkProtocol` (set by whoever binds it).
    pub ipmi_listen: Option<SocketAddr>,
    /// Where this service listens (set by [`start`] once bound).
    pub redfish_listen: Option<SocketAddr>,
}

pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl Default for Options {
    fn default() -> Self {
        Options {
            egress: Arc::new(EgressPolicy::default()),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            ipmi_listen: None,
            redfish_listen: None,
        }
    }
}

/// Shared by every handler.
pub struct Context {
    pub machine: Arc<dyn Machine>,
    /// Whether SOL can be used now (IPMI's `sol set enabled` switches it).
    pub serial_console: SerialConsole,
    pub credentials: Credentials,
    pub ids: Ids,
    pub sessions: auth::Sessions,
    pub events: Arc<events::Events>,
    pub tasks: tasks::Tasks,
    pub egress: Arc<EgressPolicy>,
    /// Failed logins per client address (IPMI's rule: slowed down after three).
    pub logins: auth::LoginThrottle,
    /// The Manager's clock, as an offset in microseconds from the node's clock: a client may
    /// set the BMC's clock as it can a physical one's (Ironic's `verify_bmc_clock`). Kept in
    /// memory: a restarted BMC reads the node's clock again, which is the right time.
    pub clock_offset_micros: std::sync::atomic::AtomicI64,
    /// Where IPMI and Redfish listen, when known.
    pub ipmi_listen: Option<SocketAddr>,
    pub redfish_listen: Option<SocketAddr>,
    /// The System's last body (see `system_body`).
    system_body: system::SystemBodyCache,
}

impl Context {
    /// Reads identity, session key and subscriptions from the machine; starts event
    /// delivery. Must run inside tokio.
    pub async fn new(
        machine: Arc<dyn Machine>,
        serial_console: SerialConsole,
        credentials: Credentials,
    ) -> Result<Arc<Self>, MachineError> {
        Self::with_options(machine, serial_console, credentials, &Options::default()).await
    }

    pub async fn with_options(
        machine: Arc<dyn Machine>,
        serial_console: SerialConsole,
        credentials: Credentials,
        options: &Options,
    ) -> Result<Arc<Self>, MachineError> {
        let inventory = machine.inventory().await?;
        let ids = Ids {
            system: inventory.name.clone(),
            uuid: inventory.uuid.clone(),
            service_uuid: service_uuid(&inventory.uuid),
        };
        let sessions = auth::Sessions::load(machine.clone()).await?;
        let events = events::Events::load(
            machine.clone(),
            ids.clone(),
            sessions.seal(),
            events::RETRY_INTERVAL,
            options.egress.clone(),
        )
        .await?;
        Ok(Arc::new(Context {
            machine,
            serial_console,
            credentials,
            ids,
            sessions,
            events,
            tasks: tasks::Tasks::default(),
            egress: options.egress.clone(),
            logins: auth::LoginThrottle::default(),
            clock_offset_micros: std::sync::atomic::AtomicI64::new(0),
            ipmi_listen: options.ipmi_listen,
            redfish_listen: options.redfish_listen,
            system_body: Default::default(),
        }))
    }
}

/// A UUID for the service derived from the machine's, so it is stable across restarts.
fn service_uuid(machine_uuid: &str) -> String {
    let digest = sha2::Sha256::digest(format!("kubevirt-bmc:{machine_uuid}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The whole URL space.
pub fn routes(context: Arc<Context>) -> Router {
    use handlers as h;
    let system = "/redfish/v1/Systems/{id}";
    let media_routes = |router: Router<Arc<Context>>, owner: &str| {
        router
            .route(&format!("{owner}/VirtualMedia"), get(media::collection_get))
            .route(
                &format!("{owner}/VirtualMedia/{{media}}"),
                get(media::get).patch(media::patch),
            )
            .route(
                &format!("{owner}/VirtualMedia/{{media}}/Actions/VirtualMedia.InsertMedia"),
                post(media::insert),
            )
            .route(
                &format!("{owner}/VirtualMedia/{{media}}/Actions/VirtualMedia.EjectMedia"),
                post(media::eject),
            )
    };
    let mut router = Router::new()
        .route("/redfish", get(h::versions))
        .route("/redfish/v1", get(h::root))
        .route("/redfish/v1/odata", get(h::odata))
        .route("/redfish/v1/$metadata", get(h::metadata))
        .route("/redfish/v1/Systems", get(system::systems))
        .route(system, get(system::system).patch(system::patch_system))
        .route(
            &format!("{system}/Actions/ComputerSystem.Reset"),
            post(system::reset),
        )
        .route(
            &format!("{system}/EthernetInterfaces"),
            get(system::interfaces),
        )
        .route(&format!("{system}/Processors"), get(system::processors))
        .route(&format!("{system}/Memory"), get(system::memories))
        .route(&format!("{system}/Storage"), get(system::storages))
        .route(
            &format!("{system}/SimpleStorage"),
            get(system::simple_storages),
        )
        .route(
            &format!("{system}/Storage/1/Drives/{{drive}}"),
            get(system::drive),
        )
        .route(
            &format!("{system}/Storage/1/Controllers"),
            get(system::controllers),
        )
        .route(
            &format!("{system}/Storage/1/Controllers/{{controller}}"),
            get(system::controller),
        )
        .route(&format!("{system}/Storage/1/Volumes"), get(system::volumes))
        .route(&format!("{system}/Bios"), get(bios::get))
        .route(
            &format!("{system}/Bios/Settings"),
            get(bios::get_settings).patch(bios::patch_settings),
        )
        .route(
            &format!("{system}/SecureBoot"),
            get(system::secure_boot).patch(system::patch_secure_boot),
        )
        .route("/redfish/v1/Chassis", get(chassis::list))
        .route(
            "/redfish/v1/Chassis/{id}",
            get(chassis::get).patch(chassis::patch),
        )
        .route("/redfish/v1/Chassis/{id}/Thermal", get(chassis::thermal))
        .route("/redfish/v1/Chassis/{id}/Power", get(chassis::power))
        .route("/redfish/v1/Managers", get(media::managers))
        .route(
            "/redfish/v1/Managers/{id}",
            get(media::manager).patch(media::patch_manager),
        )
        .route(
            "/redfish/v1/Managers/{id}/NetworkProtocol",
            get(manager::network_protocol),
        )
        .route(
            "/redfish/v1/Managers/{id}/EthernetInterfaces",
            get(manager::interfaces),
        )
        .route(
            "/redfish/v1/Managers/{id}/EthernetInterfaces/{interface}",
            get(manager::interface),
        )
        .route(
            "/redfish/v1/Managers/{id}/Actions/Manager.Reset",
            post(media::manager_reset),
        )
        .route(
            "/redfish/v1/SessionService",
            get(h::session_service).patch(h::patch_session_service),
        )
        .route(
            "/redfish/v1/SessionService/Sessions",
            get(h::sessions).post(h::create_session),
        )
        .route(
            "/redfish/v1/SessionService/Sessions/Members",
            post(h::create_session),
        )
        .route(
            "/redfish/v1/EventService/Subscriptions/Members",
            post(h::create_subscription),
        )
        .route(
            "/redfish/v1/SessionService/Sessions/{id}",
            get(h::session).delete(h::delete_session),
        )
        .route("/redfish/v1/AccountService", get(h::account_service))
        .route("/redfish/v1/AccountService/Accounts", get(h::accounts))
        .route(
            "/redfish/v1/AccountService/Accounts/{id}",
            get(h::account).patch(h::patch_account),
        )
        .route("/redfish/v1/AccountService/Roles", get(h::roles))
        .route("/redfish/v1/AccountService/Roles/{id}", get(h::role))
        .route("/redfish/v1/EventService", get(h::event_service))
        .route(
            "/redfish/v1/EventService/Subscriptions",
            get(h::subscriptions).post(h::create_subscription),
        )
        .route(
            "/redfish/v1/EventService/Subscriptions/{id}",
            get(h::subscription).delete(h::delete_subscription),
        )
        .route("/redfish/v1/EventService/SSE", get(h::sse))
        .route(
            "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
            post(h::submit_test_event),
        )
        .route("/redfish/v1/UpdateService", get(bios::update_service_get))
        .route(
            "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
            post(bios::simple_update),
        )
        .route(
            "/redfish/v1/UpdateService/FirmwareInventory",
            get(bios::firmware_inventory_get),
        )
        .route(
            "/redfish/v1/UpdateService/FirmwareInventory/{id}",
            get(bios::firmware_item_get),
        )
        .route("/redfish/v1/TaskService", get(tasks::service))
        .route("/redfish/v1/TaskService/Tasks", get(tasks::list))
        .route("/redfish/v1/TaskService/Tasks/{id}", get(tasks::get))
        .route(
            "/redfish/v1/TaskService/TaskMonitors/{id}",
            get(tasks::monitor),
        )
        .route("/redfish/v1/Registries", get(h::registries))
        .route("/redfish/v1/Registries/{id}", get(h::registry))
        .route(
            "/redfish/v1/Registries/{id}/{file}",
            get(h::registry_document),
        );
    for kind in [
        "EthernetInterfaces",
        "Processors",
        "Memory",
        "Storage",
        "SimpleStorage",
    ] {
        router = router.route(&format!("{system}/{kind}/{{member}}"), get(system::member));
    }
    router = media_routes(router, system);
    router = media_routes(router, "/redfish/v1/Managers/{id}");
    router
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn_with_state(
            context.clone(),
            expand::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            context.clone(),
            auth::require,
        ))
        .layer(axum::middleware::from_fn(http::conventions))
        .with_state(context)
}

/// The service as a tower Service: the routes behind trailing-slash normalisation.
pub fn app(context: Arc<Context>) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(routes(context))
}

#[derive(Debug, thiserror::Error)]
pub enum RedfishError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl From<RedfishError> for crate::bmc::BmcError {
    fn from(error: RedfishError) -> Self {
        match error {
            RedfishError::Bind { addr, source } => crate::bmc::BmcError::Bind { addr, source },
        }
    }
}

/// A running Redfish server.
pub struct RedfishServer {
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Reads the machine until it answers (see `start`).
    loader: Option<tokio::task::AbortHandle>,
    pub local_addr: SocketAddr,
}

impl RedfishServer {
    /// Completes when the server stops by itself (an error); says why.
    pub async fn stopped(&mut self) -> String {
        match (&mut self.task).await {
            Ok(Ok(())) => "stopped".to_owned(),
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        }
    }

    /// Lets requests in flight finish (up to 5 s), then stops.
    pub async fn shutdown(self) {
        if let Some(loader) = &self.loader {
            loader.abort();
        }
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = self.task.await;
    }
}

const LOAD_RETRY: Duration = Duration::from_millis(200);
const LOAD_RETRY_MAX: Duration = Duration::from_secs(5);

/// The reason alone: the 503 says "unavailable" already.
fn why(error: &MachineError) -> String {
    match error {
        MachineError::Unavailable(reason) => reason.clone(),
        other => other.to_string(),
    }
}

/// Builds the service once the machine answers, retrying with backoff after a first failed
/// attempt; `waiting` holds why it does not yet.
async fn load(
    machine: Arc<dyn Machine>,
    serial_console: SerialConsole,
    credentials: Credentials,
    options: Options,
    ready: Arc<std::sync::OnceLock<NormalizePath<Router>>>,
    waiting: Arc<std::sync::Mutex<String>>,
) {
    let mut delay = LOAD_RETRY;
    loop {
        tokio::time::sleep(delay).await;
        match Context::with_options(
            machine.clone(),
            serial_console.clone(),
            credentials.clone(),
            &options,
        )
        .await
        {
            Ok(context) => {
                let _ = ready.set(app(context));
                tracing::info!("Redfish ready");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "Redfish cannot read the machine yet; answering 503 meanwhile");
                *waiting.lock().unwrap_or_else(|p| p.into_inner()) = why(&error);
                delay = (delay * 2).min(LOAD_RETRY_MAX);
            }
        }
    }
}

/// Binds `listen` (failing fast) and serves Redfish on it in the background. Until the
/// machine can be read (the KubeVirt API may be away when the sidecar starts), every request
/// gets 503 saying why, instead of the process exiting into a restart loop.
pub async fn start(
    machine: Arc<dyn Machine>,
    serial_console: SerialConsole,
    credentials: Credentials,
    tls: axum_server::tls_rustls::RustlsConfig,
    listen: SocketAddr,
    options: Options,
) -> Result<RedfishServer, RedfishError> {
    let bind_error = |source| RedfishError::Bind {
        addr: listen,
        source,
    };
    let listener = std::net::TcpListener::bind(listen).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let options = Options {
        redfish_listen: Some(local_addr),
        ..options
    };
    let ready = Arc::new(std::sync::OnceLock::new());
    let waiting = Arc::new(std::sync::Mutex::new(
        "still reading the machine; retry".to_owned(),
    ));
    // A first attempt inline, so a machine that answers at once is served from the start.
    match Context::with_options(
        machine.clone(),
        serial_console.clone(),
        credentials.clone(),
        &options,
    )
    .await
    {
        Ok(context) => {
            let _ = ready.set(app(context));
        }
        Err(error) => *waiting.lock().unwrap_or_else(|p| p.into_inner()) = why(&error),
    }
    let loader = ready.get().is_none().then(|| {
        tokio::spawn(load(
            machine,
            serial_console,
            credentials,
            options.clone(),
            ready.clone(),
            waiting.clone(),
        ))
        .abort_handle()
    });
    let config = tls;
    let handle = axum_server::Handle::new();
    let guard = connections::Guard::new(options.max_connections, options.idle_timeout);
    let mut server = axum_server::from_tcp_rustls(listener, config)
        .map_err(bind_error)?
        .handle(handle.clone())
        .map(|tls| tls.acceptor(guard));
    server
        .http_builder()
        .http1()
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    server
        .http_builder()
        .http2()
        .timer(hyper_util::rt::TokioTimer::new());
    let service = tower::make::Shared::new(tower::service_fn(
        move |request: axum::http::Request<hyper::body::Incoming>| {
            let app = ready.get().cloned();
            let waiting = waiting.clone();
            async move {
                use axum::response::IntoResponse;
                use tower::ServiceExt;
                match app {
                    Some(app) => app.oneshot(request).await,
                    None => {
                        // Read to the end, or the connection closes (see read_whole_body).
                        if let Err(refused) =
                            http::read_whole_body(request.map(axum::body::Body::new)).await
                        {
                            return Ok(refused);
                        }
                        let why = waiting.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        Ok(errors::ApiError::from(MachineError::Unavailable(format!(
                            "the BMC is starting: {why}"
                        )))
                        .into_response())
                    }
                }
            }
        },
    ));
    let task = tokio::spawn(server.serve(service));
    tracing::info!(%local_addr, "Redfish listening (HTTPS)");
    Ok(RedfishServer {
        handle,
        task,
        loader,
        local_addr,
    })
}
