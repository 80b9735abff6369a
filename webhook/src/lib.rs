//! kubevirt-bmc-webhook: the mutating admission webhook that injects the BMC sidecar into
//! virt-launcher Pods, and the controller that prepares opted-in VMs.

pub mod annotations;
pub mod cli;
pub mod inject;
pub mod names;
pub mod server;
pub mod sidecar;
