//! kubevirt-bmc-webhook: the mutating admission webhook that injects the BMC sidecar into
//! virt-launcher Pods, and the controller that prepares opted-in VMs.

pub mod cli;
pub mod server;
