//! Command line of the `kubevirt-bmc-webhook` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser};
use kubevirt_bmc_contract::egress::{Cidr, EgressPolicy};
use kubevirt_bmc_runtime::telemetry::LogArgs;

use crate::controller::lease::ElectionConfig;
use crate::inject::InjectionConfig;
use crate::metrics::Metrics;
use crate::server::{self, Context, ServeConfig, ServerError};
use kubevirt_bmc_runtime::tls_reload::CertFiles;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    // kube's own message already ends with its I/O cause; as `reason` (not a source)
    // the one-line error chain does not repeat it.
    #[error("cannot read kubeconfig {path}: {reason}")]
    Kubeconfig {
        path: PathBuf,
        reason: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (in-cluster or kubeconfig)")]
    NoConfig(#[from] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("{0}")]
    Election(&'static str),
}

#[derive(Debug, Parser)]
#[command(
    name = "kubevirt-bmc-webhook",
    version,
    about = "Gives opted-in KubeVirt VMs a BMC sidecar"
)]
pub struct Args {
    #[command(flatten)]
    pub log: LogArgs,
    /// HTTPS address the API server calls.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: SocketAddr,
    /// PEM serving certificate (a cert-manager Secret volume in the cluster).
    #[arg(
        long,
        env = "KUBEVIRT_BMC_WEBHOOK_TLS_CERT",
        default_value = "/etc/kubevirt-bmc/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_WEBHOOK_TLS_KEY",
        default_value = "/etc/kubevirt-bmc/tls/tls.key"
    )]
    pub tls_key: PathBuf,
    /// How often the certificate files are re-read to follow a Secret rotation.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_WEBHOOK_TLS_RELOAD_SECONDS",
        default_value_t = 5
    )]
    pub tls_reload_seconds: u64,
    /// Kubeconfig to use; the in-cluster configuration or the default kubeconfig otherwise.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run the admission webhook only (no VM controller, no API access needed).
    #[arg(long, env = "KUBEVIRT_BMC_WEBHOOK_NO_CONTROLLER")]
    pub no_controller: bool,
    /// Let `bmc.kubevirt.io/service-type` ask for `NodePort` or `LoadBalancer`, which expose a
    /// VM's IPMI and Redfish beyond the cluster. Off by default: such VMs get a ClusterIP
    /// Service and a warning.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_ALLOW_EXTERNAL_SERVICES",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub allow_external_services: bool,
    /// StorageClass of the DataVolumes that import virtual media (`spec.storage.
    /// storageClassName`); unset: the cluster's default class, CDI's choice. Any binding mode
    /// works: the DataVolume asks CDI for immediate binding.
    #[arg(long, env = "KUBEVIRT_BMC_MEDIA_STORAGE_CLASS")]
    pub media_storage_class: Option<String>,
    /// While CDI is not installed, how often API discovery is asked whether it is now.
    #[arg(long, env = "KUBEVIRT_BMC_CDI_RECHECK_SECONDS", default_value_t = 120)]
    pub cdi_recheck_seconds: u64,
    /// How many VMs the controller reconciles at the same time (0: no limit).
    #[arg(
        long,
        env = "KUBEVIRT_BMC_RECONCILE_CONCURRENCY",
        default_value_t = crate::controller::run::DEFAULT_CONCURRENCY
    )]
    pub reconcile_concurrency: u16,
    #[command(flatten)]
    pub election: ElectionArgs,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
    #[command(flatten)]
    pub certificates: CertificateArgs,
}

/// The sidecars' serving certificates, signed by the installation's CA (Secret
/// `kubevirt-bmc-ca` in `--leader-election-namespace`, the Pod's own namespace).
#[derive(Debug, Clone, ClapArgs)]
pub struct CertificateArgs {
    /// Make the CA Secret when it does not exist; `false` where cert-manager issues it (the
    /// cert-manager overlay), so the two never race for it.
    #[arg(
        long = "bmc-ca-create",
        env = "KUBEVIRT_BMC_CA_CREATE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub create_ca: bool,
    /// Lifetime of a sidecar certificate; the sidecar renews it at two thirds.
    #[arg(
        long = "bmc-certificate-hours",
        env = "KUBEVIRT_BMC_CERTIFICATE_HOURS",
        default_value_t = 24,
        value_parser = clap::value_parser!(u64).range(1..=8760)
    )]
    pub hours: u64,
    /// The cluster's DNS domain (the kubelet's `--cluster-domain`): the sidecars' certificates
    /// name `<vm>-bmc.<ns>.svc.<domain>`. Passed to every sidecar.
    #[arg(
        long = "cluster-domain",
        env = kubevirt_bmc_contract::certificate::CLUSTER_DOMAIN_ENV,
        default_value = kubevirt_bmc_contract::certificate::DEFAULT_CLUSTER_DOMAIN
    )]
    pub cluster_domain: String,
    /// Where the sidecars send their CSRs: this server's Service. Passed to every sidecar.
    #[arg(
        long = "sidecar-certificate-url",
        env = "KUBEVIRT_BMC_SIDECAR_CERTIFICATE_URL",
        default_value = "https://kubevirt-bmc-webhook.kubevirt-bmc.svc/bmc-certificate"
    )]
    pub url: String,
    /// The CA of this server's own certificate (the `ca.crt` of its TLS Secret), passed to
    /// every sidecar so it verifies whom it sends its token to. Read at start.
    #[arg(
        long = "sidecar-certificate-url-ca",
        env = "KUBEVIRT_BMC_SIDECAR_CERTIFICATE_URL_CA",
        default_value = "/etc/kubevirt-bmc/tls/ca.crt"
    )]
    pub url_ca: PathBuf,
}

impl CertificateArgs {
    /// What the webhook tells the sidecars; `None` (the sidecars then serve self-signed
    /// certificates and say so) when this server's CA cannot be read.
    pub fn endpoint(&self) -> Option<crate::inject::CertificateEndpoint> {
        match std::fs::read_to_string(&self.url_ca) {
            Ok(ca) if ca.contains("-----BEGIN CERTIFICATE-----") => {
                Some(crate::inject::CertificateEndpoint {
                    url: self.url.clone(),
                    ca_pem: ca,
                    cluster_domain: self.cluster_domain.clone(),
                })
            }
            Ok(_) | Err(_) => {
                tracing::warn!(
                    ca = %self.url_ca.display(),
                    "no CA certificate of this server to give the sidecars: they will serve self-signed certificates"
                );
                None
            }
        }
    }
}

/// Leader election among the replicas (client-go's defaults are 15 s / 10 s / 2 s; shorter
/// here so a dead leader is replaced within about 12 s).
#[derive(Debug, Clone, ClapArgs)]
pub struct ElectionArgs {
    /// Elect one controller among the replicas with a Lease; `false` runs it unconditionally
    /// (one replica only, or development).
    #[arg(
        long = "leader-elect",
        env = "KUBEVIRT_BMC_LEADER_ELECT",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub enabled: bool,
    /// Namespace of the `kubevirt-bmc-controller` Lease (the Pod's own, from the downward API).
    #[arg(
        long = "leader-election-namespace",
        env = "POD_NAMESPACE",
        default_value = crate::names::INSTALL_NAMESPACE
    )]
    pub namespace: String,
    #[arg(
        long = "leader-election-lease-seconds",
        env = "KUBEVIRT_BMC_LEADER_LEASE_SECONDS",
        default_value_t = 10.0
    )]
    pub lease_seconds: f64,
    /// Must be shorter than the lease: the leader stops before anyone may take over.
    #[arg(
        long = "leader-election-renew-deadline-seconds",
        env = "KUBEVIRT_BMC_LEADER_RENEW_DEADLINE_SECONDS",
        default_value_t = 7.0
    )]
    pub renew_deadline_seconds: f64,
    #[arg(
        long = "leader-election-retry-seconds",
        env = "KUBEVIRT_BMC_LEADER_RETRY_SECONDS",
        default_value_t = 2.0
    )]
    pub retry_seconds: f64,
}

impl ElectionArgs {
    /// `None` when disabled; an error when the durations cannot keep one writer.
    pub fn config(&self, instance: &str) -> Result<Option<ElectionConfig>, CliError> {
        if !self.enabled {
            return Ok(None);
        }
        let secs = |v: f64| Duration::try_from_secs_f64(v).ok().filter(|d| !d.is_zero());
        let (Some(lease), Some(renew), Some(retry)) = (
            secs(self.lease_seconds),
            secs(self.renew_deadline_seconds),
            secs(self.retry_seconds),
        ) else {
            return Err(CliError::Election(
                "leader election durations must be positive numbers of seconds",
            ));
        };
        if !(retry < renew && renew < lease) {
            return Err(CliError::Election(
                "leader election needs retry < renew deadline < lease duration",
            ));
        }
        Ok(Some(ElectionConfig {
            namespace: self.namespace.clone(),
            // As client-go's examples: the Pod name plus a unique part, so a restarted Pod
            // (same name) never mistakes the old process's Lease for its own.
            identity: format!("{instance}_{}", uuid_like()),
            lease_duration: lease,
            renew_deadline: renew,
            retry_period: retry,
        }))
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    let bytes: [u8; 8] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, ClapArgs)]
pub struct SidecarArgs {
    /// Image of the injected `bmc` container. The manifests set it to the webhook's own image
    /// (kustomize copies the Deployment's image into this variable).
    #[arg(long = "sidecar-image", env = "KUBEVIRT_BMC_SIDECAR_IMAGE")]
    pub image: String,
    #[arg(
        long = "sidecar-image-pull-policy",
        env = "KUBEVIRT_BMC_SIDECAR_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent",
        value_parser = ["Always", "IfNotPresent", "Never"]
    )]
    pub image_pull_policy: String,
    /// CPU for the sidecar, used as both request and limit (guaranteed-QoS VMs require it).
    #[arg(
        long = "sidecar-cpu",
        env = "KUBEVIRT_BMC_SIDECAR_CPU",
        default_value = "50m"
    )]
    pub cpu: String,
    /// Memory for the sidecar, used as both request and limit.
    #[arg(
        long = "sidecar-memory",
        env = "KUBEVIRT_BMC_SIDECAR_MEMORY",
        default_value = "64Mi"
    )]
    pub memory: String,
    /// Add the `net.ipv4.ip_unprivileged_port_start=0` sysctl so the sidecar binds 623/443;
    /// `false` makes it listen on 10623/10443 (the Service still exposes 623/443).
    #[arg(
        long = "low-port-sysctl",
        env = "KUBEVIRT_BMC_LOW_PORT_SYSCTL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub low_port_sysctl: bool,
    /// Ranges the sidecars may send events to and import media from although refused by
    /// default (loopback, link-local, ...), comma-separated CIDRs; passed to every sidecar.
    #[arg(long = "egress-allow", env = kubevirt_bmc_contract::egress::ALLOW_ENV, value_delimiter = ',', value_parser = parse_cidr)]
    pub egress_allow: Vec<Cidr>,
    /// Ranges the sidecars may never reach: the cluster's service and pod ranges
    /// (comma-separated CIDRs); wins over `--egress-allow`. Passed to every sidecar.
    #[arg(long = "egress-deny", env = kubevirt_bmc_contract::egress::DENY_ENV, value_delimiter = ',', value_parser = parse_cidr)]
    pub egress_deny: Vec<Cidr>,
}

fn parse_cidr(text: &str) -> Result<Cidr, String> {
    text.parse()
        .map_err(|e: kubevirt_bmc_contract::egress::EgressError| e.to_string())
}

impl Args {
    /// Serves admission over HTTPS and, unless `--no-controller`, runs the VM controller,
    /// until SIGTERM or Ctrl-C.
    pub async fn run(self) -> Result<(), CliError> {
        let metrics = Arc::new(Metrics::default());
        let mut injection = self.sidecar.injection_config();
        injection.certificate = self.certificates.endpoint();
        let mut signer = None;
        let config = ServeConfig {
            listen: self.listen,
            files: CertFiles {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
            },
            reload_interval: Duration::from_secs(self.tls_reload_seconds.max(1)),
        };
        let mut controller = None;
        if !self.no_controller {
            let client = kube_client(self.kubeconfig.as_deref()).await?;
            let certs = crate::certs::signer::Signer::new(
                client.clone(),
                crate::certs::signer::SignerConfig {
                    namespace: self.election.namespace.clone(),
                    create_ca: self.certificates.create_ca,
                    lifetime: Duration::from_secs(self.certificates.hours * 3600),
                    cluster_domain: self.certificates.cluster_domain.clone(),
                },
            );
            // Every replica signs (the Service sends a sidecar to either), so every replica
            // makes sure the CA exists and is published, not only the leader.
            tokio::spawn(prepare_ca(certs.clone()));
            signer = Some(certs);
            // Events name the reporting instance: the webhook Pod in a cluster.
            let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "local".to_owned());
            let policy = crate::controller::plan::Policy {
                external_services: self.allow_external_services,
                media_storage_class: self.media_storage_class.clone(),
                cdi_recheck: Some(Duration::from_secs(self.cdi_recheck_seconds.max(1))),
            };
            let election = self.election.config(&instance)?;
            controller = Some(tokio::spawn(crate::controller::run::run(
                client,
                metrics.clone(),
                instance,
                election,
                policy,
                self.reconcile_concurrency,
            )));
        }
        let ctx = Arc::new(Context {
            injection,
            metrics: metrics.clone(),
            signer,
        });
        let handle = axum_server::Handle::new();
        let shutdown = handle.clone();
        tokio::spawn(async move {
            kubevirt_bmc_runtime::exit::shutdown_signal().await;
            shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        server::serve(config, ctx, handle).await?;
        // The controller saw the same signal; let it release the leader Lease so the other
        // replica takes over at once rather than after a lease duration.
        if let Some(controller) = controller {
            let _ = tokio::time::timeout(Duration::from_secs(5), controller).await;
        }
        Ok(())
    }
}

/// Until the CA Secret and its ConfigMap are there (cert-manager may issue it later; the API
/// may be away), try again; signing waits for it meanwhile and answers 503.
async fn prepare_ca(signer: Arc<crate::certs::signer::Signer>) {
    let mut delay = Duration::from_secs(1);
    loop {
        match signer.prepare().await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "the sidecars' certificate authority is not ready; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// `--kubeconfig` when given, otherwise in-cluster or the default kubeconfig: the
/// webhook also runs outside a cluster during development.
async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, CliError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|reason| {
                CliError::Kubeconfig {
                    path: path.to_owned(),
                    reason,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|reason| CliError::Kubeconfig {
                    path: path.to_owned(),
                    reason,
                })?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&crate::field_manager::layer())
        .build())
}

impl SidecarArgs {
    pub fn injection_config(&self) -> InjectionConfig {
        InjectionConfig {
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            low_port_sysctl: self.low_port_sysctl,
            egress: EgressPolicy::new(self.egress_allow.clone(), self.egress_deny.clone()),
            certificate: None,
        }
    }
}
