//! `kubectl bmc`: see the crate documentation and `kubectl bmc --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kubevirt_bmc_contract::names;
use kubevirt_bmc_kubectl::cluster::Cluster;
use kubevirt_bmc_kubectl::hosts::{self, Format, Host, Protocol};
use kubevirt_bmc_kubectl::list::{self, Output};
use kubevirt_bmc_kubectl::vm::{NIC_CHOICE, Vm};

#[derive(Parser)]
#[command(
    name = "kubectl bmc",
    version,
    about = "The BMCs (IPMI and Redfish) kubevirt-bmc gives opted-in KubeVirt VMs: list them, opt VMs in and out, read their credentials, print host definitions for Metal3, OpenShift and Rufio",
    long_about = None,
)]
struct Cli {
    /// Path to the kubeconfig file (else $KUBECONFIG, else ~/.kube/config, as kubectl).
    #[arg(long, global = true, env = "KUBECTL_BMC_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (else its current-context).
    #[arg(long, global = true, env = "KUBECTL_BMC_CONTEXT")]
    context: Option<String>,
    /// Namespace of the VMs (else the context's namespace).
    #[arg(short, long, global = true, env = "KUBECTL_BMC_NAMESPACE")]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every opted-in VM: readiness (the reason when not ready), power, the BMC's Pod IP and
    /// Service; `-o wide` adds Service type, ports, the power a client asked for and the boot
    /// override.
    List {
        /// VMs of every namespace.
        #[arg(short = 'A', long, env = "KUBECTL_BMC_ALL_NAMESPACES")]
        all_namespaces: bool,
        #[arg(short, long, value_enum, env = "KUBECTL_BMC_OUTPUT")]
        output: Option<Output>,
    },
    /// Opt a VM in: sets bmc.kubevirt.io/enabled=true; the controller creates its BMC.
    Enable { vm: String },
    /// Opt a VM out: sets bmc.kubevirt.io/enabled=false; the controller restores the VM and
    /// deletes its BMC objects.
    Disable { vm: String },
    /// The BMC user and password of a VM, from Secret <vm>-bmc-credentials (only if the API
    /// server lets you read it).
    Credentials { vm: String },
    /// The CA certificate (PEM) the BMCs' Redfish certificates are signed by, for
    /// `curl --cacert` or Ironic's `redfish_verify_ca`.
    Ca {
        /// The namespace kubevirt-bmc is installed in.
        #[arg(
            long,
            env = "KUBECTL_BMC_INSTALL_NAMESPACE",
            default_value = "kubevirt-bmc"
        )]
        install_namespace: String,
    },
    /// Host definitions, ready to apply, for the BMCs of the given VMs.
    #[command(after_help = format!(
        "Which MAC: {NIC_CHOICE}. The MAC must be pinned in the VM: KubeVirt otherwise gives the NIC a new one at every start.\n\
         Boot mode: from the VM's firmware (bootloader.efi: UEFISecureBoot unless efi.secureBoot is false, then UEFI; else legacy).\n\
         Metal3 and Rufio get a Secret <vm>-bmc-auth with the credentials next to each host; pipe the output to `kubectl apply -f -`. \
         OpenShift gets the platform.baremetal.hosts entries to merge into install-config.yaml."
    ))]
    Hosts {
        /// The VMs (in --namespace), each opted in, with a pinned MAC on its boot NIC.
        #[arg(required = true)]
        vms: Vec<String>,
        /// metal3: BareMetalHost + Secret; openshift: install-config platform.baremetal.hosts;
        /// rufio: Machine + Secret.
        #[arg(long, value_enum, env = "KUBECTL_BMC_FORMAT")]
        format: Format,
        /// The protocol named in the Metal3 / OpenShift address.
        #[arg(
            long,
            value_enum,
            default_value = "redfish",
            env = "KUBECTL_BMC_PROTOCOL"
        )]
        protocol: Protocol,
        /// Take the boot MAC from this interface (by name) instead.
        #[arg(long, env = "KUBECTL_BMC_INTERFACE")]
        interface: Option<String>,
        /// Address the installer reaches the BMC at (e.g. a node IP with NodePort, a
        /// LoadBalancer IP); else the VM's Service <vm>-bmc.<ns>.svc, resolvable inside the cluster only.
        #[arg(long, env = "KUBECTL_BMC_HOST")]
        bmc_host: Option<String>,
        /// Redfish (HTTPS) port at --bmc-host (a NodePort's node port, say).
        #[arg(long, default_value_t = names::REDFISH_PORT, env = "KUBECTL_BMC_REDFISH_PORT")]
        redfish_port: u16,
        /// IPMI (UDP) port at --bmc-host.
        #[arg(long, default_value_t = names::IPMI_PORT, env = "KUBECTL_BMC_IPMI_PORT")]
        ipmi_port: u16,
        /// Namespace of the generated BareMetalHost / Machine and Secret (else the VM's).
        #[arg(long, env = "KUBECTL_BMC_TARGET_NAMESPACE")]
        target_namespace: Option<String>,
        /// The BMC's Redfish certificate is signed by a CA the installer trusts: do not
        /// disable certificate verification (the sidecar's own certificate is self-signed).
        #[arg(long, env = "KUBECTL_BMC_VERIFY_CERTIFICATE")]
        verify_certificate: bool,
        /// install-config role of the hosts (master, worker, arbiter); OpenShift only.
        #[arg(long, env = "KUBECTL_BMC_ROLE")]
        role: Option<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // The kube client's TLS: ring, the one provider in the tree.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cluster = Cluster::connect(cli.kubeconfig, cli.context).await?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.default_namespace.clone());
    match cli.command {
        Command::List {
            all_namespaces,
            output,
        } => {
            let scope = (!all_namespaces).then_some(namespace.as_str());
            let vms = cluster.list_vms(scope).await?;
            let services = match cluster.list_services(scope).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("warning: {e}; ports shown are the BMC's defaults");
                    Vec::new()
                }
            };
            let rows = list::rows(&vms, &services);
            match output {
                Some(Output::Json) => {
                    println!("{}", serde_json::to_string_pretty(&list::document(&rows))?)
                }
                Some(Output::Yaml) => {
                    print!("{}", serde_saphyr::to_string(&list::document(&rows))?)
                }
                Some(Output::Wide) => print!("{}", list::table(&rows, true, all_namespaces)),
                None if rows.is_empty() => {
                    let where_ = if all_namespaces {
                        "any namespace".to_owned()
                    } else {
                        format!("{namespace} namespace")
                    };
                    eprintln!("No opted-in VMs found in {where_}.");
                }
                None => print!("{}", list::table(&rows, false, all_namespaces)),
            }
        }
        Command::Enable { vm } => {
            cluster.set_enabled(&namespace, &vm, true).await?;
            println!(
                "virtualmachine.kubevirt.io/{vm} BMC enabled (the controller creates it; `kubectl bmc list -n {namespace}` shows when it is ready)"
            );
        }
        Command::Disable { vm } => {
            cluster.set_enabled(&namespace, &vm, false).await?;
            println!(
                "virtualmachine.kubevirt.io/{vm} BMC disabled (the controller restores the VM and deletes its BMC objects; restart the VM to drop the sidecar)"
            );
        }
        Command::Ca { install_namespace } => {
            print!("{}", cluster.ca(&install_namespace).await?);
        }
        Command::Credentials { vm } => {
            let object = cluster.get_vm(&namespace, &vm).await?;
            Vm::new(&object).require_opted_in()?;
            let (username, password) = cluster.credentials(&namespace, &vm).await?;
            println!("username: {username}\npassword: {password}");
        }
        Command::Hosts {
            vms,
            format,
            protocol,
            interface,
            bmc_host,
            redfish_port,
            ipmi_port,
            target_namespace,
            verify_certificate,
            role,
        } => {
            let mut hosts = Vec::new();
            let mut errors = Vec::new();
            for name in &vms {
                let built = async {
                    let object = cluster.get_vm(&namespace, name).await?;
                    let vm = Vm::new(&object);
                    vm.require_opted_in()?;
                    let status = vm.status();
                    if let Some(s) = status.as_ref().filter(|s| !s.ready) {
                        eprintln!("warning: {name}'s BMC is not ready yet: {}", s.reason);
                    }
                    let (nic, choice) = vm.boot_nic(interface.as_deref())?;
                    let mac = nic.mac.clone().unwrap_or_default();
                    if protocol == Protocol::Ipmi
                        && let Some(why) = nic.pxe_warning()
                    {
                        eprintln!("warning: {name}: {why}");
                    }
                    if vm.interfaces().len() > 1 {
                        eprintln!(
                            "{name}: boot MAC {mac} of interface {:?} ({})",
                            nic.name,
                            choice.describe()
                        );
                    }
                    let (username, password) = cluster.credentials(&namespace, name).await?;
                    let address = bmc_host.clone().unwrap_or_else(|| {
                        status
                            .map(|s| s.service)
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| format!("{}.{namespace}.svc", names::service(name)))
                    });
                    anyhow::Ok(Host {
                        name: name.clone(),
                        target_namespace: target_namespace
                            .clone()
                            .unwrap_or_else(|| namespace.clone()),
                        address,
                        redfish_port,
                        ipmi_port,
                        protocol,
                        verify_certificate,
                        username,
                        password,
                        boot_mac: mac,
                        boot_mode: vm.boot_mode(),
                        role: role.clone(),
                    })
                }
                .await;
                match built {
                    Ok(h) => hosts.push(h),
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
            if !errors.is_empty() {
                // All or nothing: half a set of hosts applied is worse than none.
                bail!("no hosts written:\n  {}", errors.join("\n  "));
            }
            if format == Format::Openshift && bmc_host.is_none() {
                eprintln!(
                    "note: the addresses are cluster-internal Service names; the installer's bootstrap host must resolve them, or pass --bmc-host"
                );
            }
            let yaml = hosts::to_yaml(&hosts::documents(format, &hosts))
                .context("writing the host definitions")?;
            print!("{yaml}");
        }
    }
    Ok(())
}
