//! kubectl-bmc: the kubectl plugin for kubevirt-bmc. It reads and writes exactly what the
//! controller and the sidecar already keep on the VM (the `bmc.kubevirt.io/*` annotations of
//! `kubevirt-bmc-contract`) and the credentials Secret the controller creates, with the user's
//! own kubeconfig, and turns them into what installers take.
//!
//! * [`vm`]: reading a VM: opt-in, the controller's status, boot NIC and MAC, firmware.
//! * [`list`]: `kubectl bmc list` rows and their table, JSON and YAML forms.
//! * [`hosts`]: Metal3 BareMetalHost, OpenShift install-config hosts, Rufio Machine.
//! * [`cluster`]: the API calls (the only I/O).

pub mod cluster;
pub mod hosts;
pub mod list;
pub mod vm;
