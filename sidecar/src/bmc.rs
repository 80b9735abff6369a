//! Runs the BMC's protocol servers for one machine; shared by `simulate` and `serve`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::credentials::Credentials;
use crate::machine::Machine;

/// Everything the protocol servers need besides the machine.
pub struct BmcConfig {
    pub ipmi_listen: SocketAddr,
    pub redfish_listen: SocketAddr,
    /// Size of the IPMI session table.
    pub ipmi_max_sessions: usize,
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
    // Both listeners are bound before either serves, so a taken port fails the start
    // instead of leaving a half-working BMC.
    let ipmi = crate::ipmi::IpmiServer::bind(
        config.ipmi_listen,
        machine.clone(),
        &config.credentials,
        config.ipmi_max_sessions,
    )
    .await
    .map_err(|source| BmcError::Bind {
        addr: config.ipmi_listen,
        source,
    })?;
    let mut redfish = crate::redfish::start(
        machine.clone(),
        config.credentials.clone(),
        config.tls.clone(),
        config.redfish_listen,
    )
    .await?;
    let ipmi = ipmi.run();
    tokio::select! {
        _ = shutdown => {}
        error = ipmi => {
            redfish.shutdown().await;
            return Err(BmcError::Stopped { server: "IPMI", reason: error.to_string() });
        }
        reason = redfish.stopped() => {
            return Err(BmcError::Stopped { server: "Redfish", reason });
        }
    }
    redfish.shutdown().await;
    Ok(())
}
