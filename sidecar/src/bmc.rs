//! Runs the BMC's protocol servers for one machine; shared by `simulate` and `serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::credentials::Credentials;
use crate::machine::Machine;

/// Everything the protocol servers need besides the machine.
pub struct BmcConfig {
    pub ipmi_listen: SocketAddr,
    pub redfish_listen: SocketAddr,
    /// Size of the IPMI session table.
    pub ipmi_max_sessions: usize,
    /// Which IPMI logins are accepted unless the machine says (the VM's annotation).
    pub ipmi_auth: kubevirt_bmc_contract::annotations::IpmiAuth,
    pub credentials: Credentials,
    /// Swappable: a renewed certificate is reloaded into it while serving.
    pub tls: axum_server::tls_rustls::RustlsConfig,
    pub redfish: crate::redfish::Options,
}

#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("refusing to start: {0}")]
    Password(String),
    #[error("{server} server stopped: {reason}")]
    Stopped {
        server: &'static str,
        reason: String,
    },
}

/// The serial console as the front ends report it. IPMI owns the switch (`ipmitool sol set
/// enabled`); Redfish shows it in the Manager's `SerialConsole`. Cheap to clone: clones share
/// one switch.
#[derive(Debug, Clone)]
pub struct SerialConsole {
    /// The machine has a console at all.
    available: bool,
    enabled: Arc<AtomicBool>,
}

impl SerialConsole {
    pub fn new(available: bool, enabled: bool) -> Self {
        SerialConsole {
            available,
            enabled: Arc::new(AtomicBool::new(enabled)),
        }
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// A client could attach now: the machine has a console and SOL is enabled.
    pub fn service_enabled(&self) -> bool {
        self.available && self.enabled.load(Ordering::Relaxed)
    }
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
        config.ipmi_auth,
    )
    .await
    .map_err(|source| BmcError::Bind {
        addr: config.ipmi_listen,
        source,
    })?;
    // IPMI would silently cut a long password (clients then fail to log in with the one
    // they were given) and an empty one is no protection: say so instead of serving.
    if let Some(problem) = ipmi
        .auth
        .password_problem(config.credentials.password.as_bytes())
    {
        return Err(BmcError::Password(problem));
    }
    let mut redfish = crate::redfish::start(
        machine.clone(),
        ipmi.serial_console(),
        config.credentials.clone(),
        config.tls.clone(),
        config.redfish_listen,
        crate::redfish::Options {
            ipmi_listen: ipmi.local_addr().ok(),
            ..config.redfish.clone()
        },
    )
    .await?;
    // A task of its own: inside this select every datagram's wake-up would poll the
    // shutdown signal and the Redfish server too (perf: a tenth of the loop's own CPU).
    let mut ipmi = tokio::spawn(ipmi.run());
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        stopped = &mut ipmi => {
            let reason = match stopped {
                Ok(error) => error.to_string(),
                Err(join) => join.to_string(),
            };
            Err(BmcError::Stopped { server: "IPMI", reason })
        }
        reason = redfish.stopped() => {
            ipmi.abort();
            return Err(BmcError::Stopped { server: "Redfish", reason });
        }
    };
    ipmi.abort();
    redfish.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::SerialConsole;

    #[test]
    fn the_console_is_offered_only_when_present_and_enabled_and_clones_share_the_switch() {
        let ipmi = SerialConsole::new(true, true);
        let redfish = ipmi.clone();
        assert!(redfish.service_enabled());
        ipmi.set_enabled(false);
        assert!(!redfish.service_enabled());
        ipmi.set_enabled(true);
        assert!(redfish.service_enabled());
        // A machine without a console never offers one, whatever the switch says.
        assert!(!SerialConsole::new(false, true).service_enabled());
    }
}
