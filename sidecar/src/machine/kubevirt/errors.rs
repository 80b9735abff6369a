//! KubeVirt API failures as a BMC client must hear them.

use crate::machine::MachineError;

/// How one failed API call is to be treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Someone else wrote first (409 Conflict on a write, or our JSON patch `test` guard
    /// failed with 422): refresh and try again.
    Conflict,
    /// Anything else, already in the client's terms.
    Fatal(MachineError),
}

/// `what` names the operation for the client, e.g. "pause VirtualMachineInstance vms/vm1".
pub fn classify(error: &kube::Error, what: &str) -> Failure {
    match error {
        kube::Error::Api(status) => {
            let message = status.message.as_str();
            match status.code {
                409 if status.reason == "Conflict" && message.contains("has been modified") => {
                    Failure::Conflict
                }
                422 if status.reason == "Invalid"
                    && status.details.as_ref().is_none_or(is_empty_details) =>
                {
                    Failure::Conflict
                }
                // KubeVirt's "the state does not allow it" (e.g. "VMI is not paused").
                409 => Failure::Fatal(MachineError::NotAllowed(format!("{what}: {message}"))),
                403 => Failure::Fatal(MachineError::Forbidden(format!(
                    "the BMC's service account may not {what}; grant it in the VM's BMC Role \
                     ({message})"
                ))),
                401 => Failure::Fatal(MachineError::Forbidden(format!(
                    "the KubeVirt API did not accept the BMC's service-account token ({message})"
                ))),
                404 => Failure::Fatal(MachineError::Unavailable(format!(
                    "{what}: not found ({message})"
                ))),
                400 | 422 => Failure::Fatal(MachineError::Invalid(format!("{what}: {message}"))),
                code => Failure::Fatal(MachineError::Unavailable(format!(
                    "KubeVirt API answered {code} to {what}: {message}"
                ))),
            }
        }
        other => Failure::Fatal(MachineError::Unavailable(format!(
            "KubeVirt API unreachable ({what}): {}",
            describe_kube(other)
        ))),
    }
}

fn is_empty_details(details: &kube::core::response::StatusDetails) -> bool {
    details.name.is_empty() && details.causes.is_empty()
}

/// A short one-line description for logs and messages; never holds the token.
pub fn describe_kube(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        kube::Error::HyperError(e) => format!("connection failed: {e}"),
        kube::Error::Service(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e.as_ref());
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "code": code, "reason": reason, "message": message, "status": "Failure",
            "details": {}
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    fn fixture(name: &str) -> kube::Error {
        let path = format!(
            "{}/../e2e/testdata/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let status: kube::core::Status =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn real_conflict_and_failed_test_guard_are_retried() {
        assert_eq!(
            classify(
                &fixture("status-409-patch-vm1-stale-resourceversion.json"),
                "x"
            ),
            Failure::Conflict
        );
        assert_eq!(
            classify(&fixture("status-422-jsonpatch-test-failed.json"), "x"),
            Failure::Conflict
        );
    }

    #[test]
    fn forbidden_names_the_missing_permission() {
        let Failure::Fatal(MachineError::Forbidden(message)) =
            classify(&fixture("status-403-patch-vm2.json"), "patch VM vms/vm2")
        else {
            panic!()
        };
        assert!(message.contains("patch VM vms/vm2"), "{message}");
        assert!(
            message.contains("cannot patch resource \"virtualmachines\""),
            "{message}"
        );
    }

    #[test]
    fn kubevirt_state_refusals_are_not_allowed_with_the_message() {
        let error = api(409, "Conflict", "VMI is not paused");
        assert_eq!(
            classify(&error, "unpause VMI vms/vm1"),
            Failure::Fatal(MachineError::NotAllowed(
                "unpause VMI vms/vm1: VMI is not paused".into()
            ))
        );
        assert!(matches!(
            classify(&api(503, "ServiceUnavailable", "down"), "x"),
            Failure::Fatal(MachineError::Unavailable(_))
        ));
    }
}
