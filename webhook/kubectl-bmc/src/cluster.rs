//! The plugin's only I/O: the API server, reached with the user's kubeconfig and nothing else
//! (no service account, no impersonation), so the API server decides what this user may see.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;
use kubevirt_bmc_contract::{annotations, names};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot use the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error(
        "ConfigMap {namespace}/{name} has no {key:?}: the controller publishes the CA once it runs (is kubevirt-bmc installed in {namespace}?)"
    )]
    NoCa {
        namespace: String,
        name: &'static str,
        key: &'static str,
    },
    #[error(
        "VM {namespace}/{name} not found (`kubectl get vm -n {namespace}` lists the VMs there)"
    )]
    VmNotFound { namespace: String, name: String },
    #[error(
        "you may not read Secret {namespace}/{name}, which holds VM {vm}'s BMC credentials (the API server said: {message}). Ask a cluster admin for `get` on it, e.g. `kubectl create role {vm}-bmc-reader -n {namespace} --verb=get --resource=secrets --resource-name={name}` and `kubectl create rolebinding {vm}-bmc-reader -n {namespace} --role={vm}-bmc-reader --user=YOU`"
    )]
    SecretForbidden {
        namespace: String,
        name: String,
        vm: String,
        message: String,
    },
    #[error(
        "Secret {namespace}/{name} not found: the controller creates it once VM {vm} is opted in (`kubectl bmc list -n {namespace}` shows why it is not ready)"
    )]
    SecretNotFound {
        namespace: String,
        name: String,
        vm: String,
    },
    #[error(
        "Secret {namespace}/{name} has no {key:?} key (the controller writes \"{}\" and \"{}\")",
        names::SECRET_USERNAME,
        names::SECRET_PASSWORD
    )]
    SecretIncomplete {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("{action}: the API server refused: {message}")]
    Forbidden { action: String, message: String },
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
}

fn vm_resource() -> ApiResource {
    ApiResource {
        group: "kubevirt.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "kubevirt.io/v1".to_owned(),
        kind: "VirtualMachine".to_owned(),
        plural: "virtualmachines".to_owned(),
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn refused(action: String, e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(status) if status.code == 403 => ClusterError::Forbidden {
            action,
            message: status.message.clone(),
        },
        source => ClusterError::Api { action, source },
    }
}

pub struct Cluster {
    client: kube::Client,
    /// The kubeconfig context's namespace (`default` when it names none), as kubectl uses.
    pub default_namespace: String,
}

impl Cluster {
    pub async fn connect(
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
    ) -> Result<Cluster, ClusterError> {
        let file = match kubeconfig {
            Some(path) => Kubeconfig::read_from(&path),
            // KUBECONFIG (every file it lists, merged), else ~/.kube/config: kubectl's order.
            None => Kubeconfig::read(),
        }
        .map_err(|e| ClusterError::Kubeconfig(e.to_string()))?;
        let options = KubeConfigOptions {
            context,
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| ClusterError::Kubeconfig(e.to_string()))?;
        let default_namespace = config.default_namespace.clone();
        let client =
            kube::Client::try_from(config).map_err(|e| ClusterError::Kubeconfig(e.to_string()))?;
        Ok(Cluster {
            client,
            default_namespace,
        })
    }

    fn vms(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &vm_resource()),
            None => Api::all_with(self.client.clone(), &vm_resource()),
        }
    }

    /// VMs of `namespace`, or of every namespace when `None`.
    pub async fn list_vms(&self, namespace: Option<&str>) -> Result<Vec<Value>, ClusterError> {
        let where_ = namespace.map_or("in any namespace".to_owned(), |ns| {
            format!("in namespace {ns}")
        });
        let list = self
            .vms(namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| refused(format!("listing VMs {where_}"), e))?;
        Ok(list
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).expect("an object read as JSON writes as JSON"))
            .collect())
    }

    pub async fn list_services(&self, namespace: Option<&str>) -> Result<Vec<Value>, ClusterError> {
        let api: Api<Service> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| refused("listing Services".to_owned(), e))?;
        Ok(list
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).expect("an object read as JSON writes as JSON"))
            .collect())
    }

    pub async fn get_vm(&self, namespace: &str, name: &str) -> Result<Value, ClusterError> {
        match self.vms(Some(namespace)).get(name).await {
            Ok(o) => Ok(serde_json::to_value(o).expect("an object read as JSON writes as JSON")),
            Err(e) if code(&e) == Some(404) => Err(ClusterError::VmNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            Err(e) => Err(refused(format!("reading VM {namespace}/{name}"), e)),
        }
    }

    /// Sets `bmc.kubevirt.io/enabled` on the VM (a merge patch of that one annotation: the
    /// controller does the rest, and the validating webhook checks the value).
    pub async fn set_enabled(
        &self,
        namespace: &str,
        name: &str,
        enabled: bool,
    ) -> Result<(), ClusterError> {
        let patch = json!({"metadata": {"annotations": {
            annotations::ENABLED: if enabled { "true" } else { "false" },
        }}});
        match self
            .vms(Some(namespace))
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some(404) => Err(ClusterError::VmNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            Err(e) => Err(refused(format!("annotating VM {namespace}/{name}"), e)),
        }
    }

    /// The BMC user and password of `vm`, from the Secret the controller keeps for it.
    /// The CA certificate the BMCs' certificates chain to, as the controller publishes it
    /// (readable by every authenticated user).
    pub async fn ca(&self, namespace: &str) -> Result<String, ClusterError> {
        use kubevirt_bmc_contract::certificate::{CA_CONFIGMAP_KEY, CA_NAME};
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let missing = || ClusterError::NoCa {
            namespace: namespace.to_owned(),
            name: CA_NAME,
            key: CA_CONFIGMAP_KEY,
        };
        let map = match api.get(CA_NAME).await {
            Ok(map) => map,
            Err(e) if code(&e) == Some(404) => return Err(missing()),
            Err(e) => {
                return Err(refused(
                    format!("reading ConfigMap {namespace}/{CA_NAME}"),
                    e,
                ));
            }
        };
        map.data
            .and_then(|mut d| d.remove(CA_CONFIGMAP_KEY))
            .ok_or_else(missing)
    }

    pub async fn credentials(
        &self,
        namespace: &str,
        vm: &str,
    ) -> Result<(String, String), ClusterError> {
        let name = names::credentials_secret(vm);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = match api.get(&name).await {
            Ok(s) => s,
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(ClusterError::SecretForbidden {
                    namespace: namespace.to_owned(),
                    name,
                    vm: vm.to_owned(),
                    message: status.message.clone(),
                });
            }
            Err(e) if code(&e) == Some(404) => {
                return Err(ClusterError::SecretNotFound {
                    namespace: namespace.to_owned(),
                    name,
                    vm: vm.to_owned(),
                });
            }
            Err(e) => return Err(refused(format!("reading Secret {namespace}/{name}"), e)),
        };
        let data = secret.data.unwrap_or_default();
        let field = |key: &'static str| {
            data.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .ok_or_else(|| ClusterError::SecretIncomplete {
                    namespace: namespace.to_owned(),
                    name: name.clone(),
                    key,
                })
        };
        Ok((
            field(names::SECRET_USERNAME)?,
            field(names::SECRET_PASSWORD)?,
        ))
    }
}
