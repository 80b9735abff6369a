//! Runs the BMC's protocol servers for one machine; shared by `simulate` and `serve`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::credentials::Credentials;
use crate::machine::Machine;

/// Everything the protocol servers need besides the machine.
pub struct BmcConfig {
    pub ipmi_listen: SocketAddr,
    pub redfish_listen: SocketAddr,
    pub credentials: Credentials,
    pub tls: Arc<rustls::ServerConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{server} server stopped: {reason}")]
    Stopped {
        server: &'static str,
        reason: String,
    },
}

/// Serves IPMI and Redfish for `machine` until `shutdown` completes or a server fails.
pub async fn run(
    machine: Arc<dyn Machine>,
    config: BmcConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BmcError> {
    let ipmi =
        crate::ipmi::IpmiServer::bind(config.ipmi_listen, machine.clone(), &config.credentials)
            .await
            .map_err(|source| BmcError::Bind {
                addr: config.ipmi_listen,
                source,
            })?;
    let ipmi = ipmi.run();

    // Redfish: started here by the Redfish front end.
    let _ = &config.tls;
    tracing::warn!(
        "Redfish is not part of this build yet: nothing listens on {}",
        config.redfish_listen
    );

    tokio::select! {
        error = ipmi => Err(BmcError::Stopped { server: "IPMI", reason: error.to_string() }),
        () = shutdown => Ok(()),
    }
}
