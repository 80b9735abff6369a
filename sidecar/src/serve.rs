//! `kubevirt-bmc serve`: the BMC of one KubeVirt VM, run in its virt-launcher Pod. The flags
//! and their environment variables are the contract with the webhook that injects the
//! sidecar (see the README).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::bmc::{self, BmcConfig};
use kubevirt_bmc_runtime::exit::shutdown_signal;

use crate::certificate::{Signer, renew_forever};
use crate::cli::CliError;
use crate::credentials::Credentials;
use crate::health::{self, HealthState};
use crate::machine::kubevirt::{KubevirtConfig, KubevirtMachine};
use axum_server::tls_rustls::RustlsConfig;
use kubevirt_bmc_contract::names;
use kubevirt_bmc_runtime::tls::Identity;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Namespace of the VM (downward API: metadata.namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Name of the VM (downward API: the Pod's `kubevirt.io/domain` annotation).
    #[arg(long, env = "VM_NAME")]
    pub vm_name: String,
    /// Name of this Pod, for logs.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Address IPMI and Redfish listen on (downward API: status.podIP).
    #[arg(long, env = "POD_IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub pod_ip: IpAddr,
    /// UDP port of IPMI (RMCP/RMCP+).
    #[arg(long, env = "KUBEVIRT_BMC_IPMI_PORT", default_value_t = kubevirt_bmc_contract::names::IPMI_PORT)]
    pub ipmi_port: u16,
    /// TCP port of Redfish (HTTPS).
    #[arg(long, env = "KUBEVIRT_BMC_REDFISH_PORT", default_value_t = kubevirt_bmc_contract::names::REDFISH_PORT)]
    pub redfish_port: u16,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_HEALTH_LISTEN",
        default_value = "0.0.0.0:8623"
    )]
    pub health_listen: SocketAddr,
    /// The mounted credentials Secret: files `username`, `password`, optional `session-key`.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_CREDENTIALS_DIR",
        default_value = kubevirt_bmc_contract::names::CREDENTIALS_MOUNT
    )]
    pub credentials_dir: PathBuf,
    /// A kubeconfig to use instead of the token directory (development only).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The mounted token Secret of the VM's `<vm>-bmc` ServiceAccount (`token`, `ca.crt`):
    /// mounted into this container only, never the Pod's default token directory (which
    /// belongs to the Pod's own account and reaches the guest). The token is re-read as it
    /// changes.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_TOKEN_DIR",
        default_value = kubevirt_bmc_contract::names::TOKEN_MOUNT
    )]
    pub token_dir: PathBuf,
    /// The API server's URL; `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` when
    /// absent, as every in-cluster client does.
    #[arg(long, env = "KUBEVIRT_BMC_API_SERVER")]
    pub api_server: Option<String>,
    /// The user's Secret mounted as the credentials (webhook-set): its key `kubevirt-bmc-vms`
    /// must list this VM, or the BMC refuses to serve with it.
    #[arg(long, env = "KUBEVIRT_BMC_USER_CREDENTIALS")]
    pub user_credentials: Option<String>,
    /// PEM certificate for Redfish, followed on disk as it rotates; when absent, one from the
    /// installation's CA (`--certificate-url`), else self-signed for the Pod IP.
    #[arg(long, env = "KUBEVIRT_BMC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "KUBEVIRT_BMC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The controller's endpoint that signs this BMC's certificate (webhook-set), asked with
    /// the token of `--token-dir`.
    #[arg(long, env = kubevirt_bmc_contract::certificate::SIGNER_URL_ENV)]
    pub certificate_url: Option<String>,
    /// PEM bundle `--certificate-url`'s server is verified with (webhook-set).
    #[arg(long, env = kubevirt_bmc_contract::certificate::SIGNER_CA_ENV, requires = "certificate_url")]
    pub certificate_url_ca: Option<String>,
    /// The cluster's DNS domain, for the Service names the certificate carries.
    #[arg(
        long,
        env = kubevirt_bmc_contract::certificate::CLUSTER_DOMAIN_ENV,
        default_value = kubevirt_bmc_contract::certificate::DEFAULT_CLUSTER_DOMAIN
    )]
    pub cluster_domain: String,
    #[command(flatten)]
    pub ipmi: crate::cli::IpmiLimits,
    #[command(flatten)]
    pub redfish: crate::cli::RedfishLimits,
}

/// Why the mounted files do not let the BMC start yet. Its volumes are optional (compute must
/// never wait for the BMC), so a Secret that does not exist shows up here as a missing file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountProblem {
    #[error(
        "no token for ServiceAccount {account} in {dir}: Secret {secret} does not exist or is not filled in yet (the BMC controller creates it when the VM opts in with bmc.kubevirt.io/enabled=true; kube-controller-manager fills it in)"
    )]
    Token {
        account: String,
        secret: String,
        dir: PathBuf,
    },
    #[error("no {key:?} in {dir}: Secret {secret} does not exist or lacks the key {key:?}")]
    Credentials {
        secret: String,
        key: &'static str,
        dir: PathBuf,
    },
    #[error(
        "Secret {secret} is named by bmc.kubevirt.io/credentials-secret but its owner has not agreed to its use by VM {vm}: its key {key:?} must list {vm} (kubectl patch secret {secret} -p '{{\"stringData\":{{\"{key}\":\"{vm}\"}}}}'); refusing to serve with it"
    )]
    NoConsent {
        secret: String,
        vm: String,
        key: &'static str,
    },
}

fn non_empty(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| !b.iter().all(u8::is_ascii_whitespace))
}

/// Whether the token (`None`: a kubeconfig is used instead) and credentials are all there,
/// and a user's Secret agreed to (its consent file lists `vm`). Reads files only.
pub fn check_mounts(
    vm: &str,
    token_dir: Option<&Path>,
    credentials_dir: &Path,
    user_credentials: Option<&str>,
) -> Result<(), MountProblem> {
    if let Some(token_dir) = token_dir
        && !non_empty(&token_dir.join("token"))
    {
        return Err(MountProblem::Token {
            account: names::service_account(vm),
            secret: names::token_secret(vm),
            dir: token_dir.to_owned(),
        });
    }
    let secret = user_credentials
        .map(str::to_owned)
        .unwrap_or_else(|| names::credentials_secret(vm));
    for key in [names::SECRET_USERNAME, names::SECRET_PASSWORD] {
        if !non_empty(&credentials_dir.join(key)) {
            return Err(MountProblem::Credentials {
                secret,
                key,
                dir: credentials_dir.to_owned(),
            });
        }
    }
    if user_credentials.is_some() {
        let listed =
            std::fs::read_to_string(credentials_dir.join(names::CONSENT_FILE)).unwrap_or_default();
        if !listed
            .split(|c: char| c == ',' || c.is_whitespace())
            .any(|name| name == vm)
        {
            return Err(MountProblem::NoConsent {
                secret,
                vm: vm.to_owned(),
                key: names::CONSENT_KEY,
            });
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read the BMC credentials {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    #[error("cannot set up the Kubernetes client: {0}")]
    Kube(String),
    #[error(transparent)]
    Health(#[from] health::HealthError),
}

fn read_secret_file(dir: &Path, key: &str) -> Result<String, ServeError> {
    let path = dir.join(key);
    let text = std::fs::read_to_string(&path).map_err(|e| ServeError::Credentials {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let value = text.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err(ServeError::Credentials {
            path,
            reason: "the file is empty".into(),
        });
    }
    Ok(value)
}

impl ServeArgs {
    async fn kube_client(&self) -> Result<kube::Client, ServeError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| ServeError::Kube(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| ServeError::Kube(format!("{}: {e}", path.display())))?
            }
            None => self.token_config()?,
        };
        kube::Client::try_from(config).map_err(|e| ServeError::Kube(e.to_string()))
    }

    /// The in-cluster configuration, but with our token directory instead of the Pod's.
    fn token_config(&self) -> Result<kube::Config, ServeError> {
        let url = match &self.api_server {
            Some(url) => url.clone(),
            None => {
                let var = |name: &str| {
                    std::env::var(name).map_err(|_| {
                        ServeError::Kube(format!(
                            "{name} is not set: not in a cluster, so give --api-server"
                        ))
                    })
                };
                let host = var("KUBERNETES_SERVICE_HOST")?;
                let port = var("KUBERNETES_SERVICE_PORT")?;
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let uri = url
            .parse::<http::Uri>()
            .map_err(|e| ServeError::Kube(format!("API server URL {url:?}: {e}")))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = self.namespace.clone();
        let ca = self.token_dir.join("ca.crt");
        if let Ok(pem) = std::fs::read(&ca) {
            use rustls_pki_types::pem::PemObject;
            let certs: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .map(|c| c.to_vec())
                .collect();
            if !certs.is_empty() {
                config.root_cert = Some(certs);
                // Re-read periodically, like the in-cluster configuration does.
                config.root_cert_file = Some(ca);
            }
        }
        // kube re-reads a token file at least once a minute.
        config.auth_info.token_file = Some(self.token_dir.join("token").display().to_string());
        Ok(config)
    }

    /// Writes (or, with `None`, clears) why the BMC does not serve on the VM, where the
    /// controller shows it; possible only once the token is there. Best effort: the log and
    /// `/readyz` say it too.
    async fn report_on_vm(&self, problem: Option<&str>) {
        use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
        let Ok(client) = self.kube_client().await else {
            return;
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
            "virtualmachines",
        );
        let vms = Api::<DynamicObject>::namespaced_with(client, &self.namespace, &resource);
        let patch = serde_json::json!({"metadata": {"annotations": {
            kubevirt_bmc_contract::annotations::SIDECAR_PROBLEM: problem
        }}});
        if let Err(error) = vms
            .patch(
                &self.vm_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(%error, "cannot report on the VM why the BMC does not serve");
        }
    }

    /// Until the token and credentials are mounted (and a user's Secret agreed to), say why
    /// and look again; the kubelet fills optional Secret volumes in once the Secrets exist.
    async fn wait_for_mounts(&self, health: &HealthState) {
        let mut last: Option<MountProblem> = None;
        let mut reported = false;
        loop {
            match check_mounts(
                &self.vm_name,
                self.kubeconfig
                    .is_none()
                    .then_some(self.token_dir.as_path()),
                &self.credentials_dir,
                self.user_credentials.as_deref(),
            ) {
                Ok(()) => {
                    *health.waiting.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    if reported {
                        self.report_on_vm(None).await;
                    }
                    return;
                }
                Err(problem) => {
                    if last.as_ref() != Some(&problem) {
                        tracing::error!(vm = %self.vm_name, "BMC not serving: {problem}");
                        *health.waiting.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(problem.to_string());
                        // Without a token there is no way to the API; the controller then
                        // knows best (it creates the token Secret).
                        if !matches!(problem, MountProblem::Token { .. }) {
                            self.report_on_vm(Some(&problem.to_string())).await;
                            reported = true;
                        }
                        last = Some(problem);
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }

    /// The Redfish TLS configuration, kept current in the background: the operator's files
    /// (followed as they rotate), else a certificate from the installation's CA (renewed), else
    /// a self-signed one (with a log line saying why, and further attempts at the CA).
    async fn serving_tls(&self) -> Result<RustlsConfig, CliError> {
        use kubevirt_bmc_runtime::tls_reload::{self, CertFiles};
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let files = CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let (tls, current) = files.initial()?;
            tokio::spawn(tls_reload::follow(
                files,
                tls.clone(),
                current,
                std::time::Duration::from_secs(5),
                |_| {},
            ));
            return Ok(tls);
        }
        let names = vec!["localhost".to_owned(), self.pod_ip.to_string()];
        let self_signed = || -> Result<RustlsConfig, CliError> {
            Ok(RustlsConfig::from_config(
                Identity::self_signed(&names)?.server_config()?,
            ))
        };
        let (Some(url), Some(ca_pem)) = (&self.certificate_url, &self.certificate_url_ca) else {
            tracing::warn!(
                "no certificate service configured ({}): serving a self-signed certificate, which clients cannot verify",
                kubevirt_bmc_contract::certificate::SIGNER_URL_ENV
            );
            return self_signed();
        };
        let signer = Arc::new(Signer {
            url: url.clone(),
            ca_pem: ca_pem.clone(),
            token_file: self.token_dir.join("token"),
            namespace: self.namespace.clone(),
            vm: self.vm_name.clone(),
            cluster_domain: self.cluster_domain.clone(),
            pod_ip: Some(self.pod_ip),
        });
        // The first attempt is bounded: the BMC must come up even while the controller is away.
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), signer.request()).await;
        let issued = match first {
            Ok(Ok(issued)) => match issued.identity.server_config() {
                Ok(config) => {
                    tracing::info!(%url, "serving a certificate from the installation's CA");
                    let tls = RustlsConfig::from_config(config);
                    tokio::spawn(renew_forever(
                        signer,
                        tls.clone(),
                        Some((issued.not_before, issued.not_after)),
                    ));
                    return Ok(tls);
                }
                Err(error) => error.to_string(),
            },
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("{url} did not answer within 5 s"),
        };
        tracing::error!(
            "serving a self-signed certificate for now (clients that verify will refuse it): no certificate from the installation's CA: {issued}; asking again in the background"
        );
        let tls = self_signed()?;
        tokio::spawn(renew_forever(signer, tls.clone(), None));
        Ok(tls)
    }

    pub async fn run(self) -> Result<(), CliError> {
        let dir = &self.credentials_dir;
        let ipmi_listen = SocketAddr::new(self.pod_ip, self.ipmi_port);
        let redfish_listen = SocketAddr::new(self.pod_ip, self.redfish_port);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.send_replace(true);
        });
        let until_stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        // Up before anything else, so the probes see a live container that says what it waits
        // for instead of one that crashes in a loop.
        let machine_slot: Arc<std::sync::OnceLock<Arc<KubevirtMachine>>> = Arc::default();
        let metrics_slot = machine_slot.clone();
        let health_state = Arc::new(HealthState {
            redfish: redfish_listen,
            metrics: Box::new(move || {
                metrics_slot
                    .get()
                    .map(|m| m.metrics_text())
                    .unwrap_or_default()
            }),
            ready: AtomicBool::new(false),
            waiting: Default::default(),
        });
        let health = health::bind(self.health_listen, health_state.clone(), until_stopped())
            .await
            .map_err(ServeError::from)?;
        let health = tokio::spawn(health);
        tokio::select! {
            () = self.wait_for_mounts(&health_state) => {}
            () = until_stopped() => return Ok(()),
        }
        let credentials = Credentials::new(
            read_secret_file(dir, names::SECRET_USERNAME)?,
            read_secret_file(dir, names::SECRET_PASSWORD)?,
        );
        let client = self.kube_client().await?;
        let machine = Arc::new(KubevirtMachine::start(
            client,
            KubevirtConfig {
                namespace: self.namespace.clone(),
                vm_name: self.vm_name.clone(),
                credentials_dir: Some(dir.clone()),
            },
        ));
        let tls = self.serving_tls().await?;
        let _ = machine_slot.set(machine.clone());
        tracing::info!(
            vm = %self.vm_name,
            namespace = %self.namespace,
            pod = self.pod_name.as_deref().unwrap_or("-"),
            %ipmi_listen,
            %redfish_listen,
            "serving the BMC of a KubeVirt VM"
        );
        let config = BmcConfig {
            ipmi_listen,
            redfish_listen,
            ipmi_max_sessions: self.ipmi.ipmi_max_sessions.into(),
            ipmi_auth: self.ipmi.ipmi_auth,
            credentials,
            tls,
            redfish: self.redfish.options(),
        };
        bmc::run(machine, config, until_stopped()).await?;
        if let Ok(Err(error)) = health.await {
            tracing::warn!(%error, "health server ended with an error");
        }
        Ok(())
    }
}

#[cfg(test)]
mod mount_tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn a_missing_token_or_credential_is_named_with_its_secret() {
        let token = tempfile::tempdir().unwrap();
        let creds = tempfile::tempdir().unwrap();
        let problem = check_mounts("vm1", Some(token.path()), creds.path(), None).unwrap_err();
        assert!(
            matches!(&problem, MountProblem::Token { secret, account, .. } if secret == "vm1-bmc-token" && account == "vm1-bmc"),
            "{problem}"
        );
        write(token.path(), &[("token", "eyJ...")]);
        let problem = check_mounts("vm1", Some(token.path()), creds.path(), None).unwrap_err();
        assert!(
            problem.to_string().contains("vm1-bmc-credentials"),
            "{problem}"
        );
        write(creds.path(), &[("username", "admin"), ("password", "p")]);
        assert_eq!(
            check_mounts("vm1", Some(token.path()), creds.path(), None),
            Ok(())
        );
        // A kubeconfig replaces the token directory.
        assert_eq!(check_mounts("vm1", None, creds.path(), None), Ok(()));
    }

    #[test]
    fn a_user_secret_serves_only_when_its_owner_listed_the_vm() {
        let token = tempfile::tempdir().unwrap();
        let creds = tempfile::tempdir().unwrap();
        write(token.path(), &[("token", "t")]);
        write(creds.path(), &[("username", "admin"), ("password", "p")]);
        let problem =
            check_mounts("vm1", Some(token.path()), creds.path(), Some("team-bmc")).unwrap_err();
        assert_eq!(
            problem,
            MountProblem::NoConsent {
                secret: "team-bmc".into(),
                vm: "vm1".into(),
                key: "kubevirt-bmc-vms"
            }
        );
        assert!(
            problem
                .to_string()
                .contains("kubectl patch secret team-bmc"),
            "{problem}"
        );
        write(creds.path(), &[("consent-vms", "vm10, vm2")]);
        assert!(check_mounts("vm1", Some(token.path()), creds.path(), Some("team-bmc")).is_err());
        write(creds.path(), &[("consent-vms", "vm2,vm1")]);
        assert_eq!(
            check_mounts("vm1", Some(token.path()), creds.path(), Some("team-bmc")),
            Ok(())
        );
    }
}
