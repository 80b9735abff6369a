//! The DMTF validators against the simulated BMC, run once each (they are slow) in
//! parallel: Service Validator and Protocol Validator must report 0 failures; the Interop
//! Validator with Ironic's profile may fail only on RAID volume creation, which a VM cannot
//! offer.

mod redfish_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use redfish_support::{Bmc, PASSWORD, USER, venv_tool};

/// A certificate for 127.0.0.1 the validators can verify (the protocol validator's
/// unauthenticated requests ignore `--no-cert-check`).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn start(cert: &Path, key: &Path) -> Bmc {
    Bmc::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
}

fn csdl() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/testdata/redfish-csdl");
    dir.is_dir().then_some(dir)
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Validators exit non-zero when anything fails; the counts below say what.
    text
}

/// PASS, WARN, FAIL from the service/interop validators' summary table.
fn table_counts(text: &str) -> (u64, u64, u64) {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.contains("PASS") || !l.contains("FAIL"));
    lines.next();
    let row = lines
        .find(|l| l.trim_start().starts_with('|'))
        .unwrap_or_else(|| panic!("no summary table in:\n{text}"));
    let numbers: Vec<u64> = row
        .split('|')
        .filter_map(|cell| cell.trim().parse().ok())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

fn debug_log(dir: &Path) -> String {
    let mut text = String::new();
    for entry in walk(dir) {
        if entry.extension().is_some_and(|e| e == "log") {
            text.push_str(&std::fs::read_to_string(&entry).unwrap_or_default());
        }
    }
    text
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn failures(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" FAIL - ")).collect()
}

#[test]
fn dmtf_validators_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let service_bmc = start(&cert, &key);
    let protocol_bmc = start(&cert, &key);
    let interop_bmc = start(&cert, &key);
    let service_dir = dir.path().join("service");
    let protocol_dir = dir.path().join("protocol");
    let interop_dir = dir.path().join("interop");

    let service = std::thread::scope(|scope| {
        let service = scope.spawn(|| {
            let mut command = Command::new(venv_tool("rf_service_validator"));
            command
                .args(["-r", &service_bmc.url(), "-u", USER, "-p", PASSWORD])
                .args(["--authtype", "Session", "--logdir"])
                .arg(&service_dir)
                .env("REQUESTS_CA_BUNDLE", &cert);
            if let Some(csdl) = csdl() {
                command.arg("--schema_directory").arg(csdl);
            }
            run(&mut command, "rf_service_validator")
        });
        let protocol = scope.spawn(|| {
            run(
                Command::new(venv_tool("rf_protocol_validator"))
                    .args(["-r", &protocol_bmc.url(), "-u", USER, "-p", PASSWORD])
                    .arg("--ca-bundle")
                    .arg(&cert)
                    .args(["--avoid-http-redirect", "--report-type", "tsv"])
                    .arg("--report-dir")
                    .arg(&protocol_dir)
                    .env("REQUESTS_CA_BUNDLE", &cert),
                "rf_protocol_validator",
            )
        });
        let interop = scope.spawn(|| {
            let profile = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../e2e/testdata/redfish-profiles/OpenStackIronicProfile.v1_2_0.json");
            assert!(
                profile.exists(),
                "Ironic profile missing: {}",
                profile.display()
            );
            run(
                Command::new(venv_tool("rf_interop_validator"))
                    .args(["-r", &interop_bmc.url(), "-u", USER, "-p", PASSWORD])
                    .args(["--authtype", "Session", "--logdir"])
                    .arg(&interop_dir)
                    .arg(profile)
                    .env("REQUESTS_CA_BUNDLE", &cert),
                "rf_interop_validator",
            )
        });
        let service = service.join().unwrap();
        let protocol = protocol.join().unwrap();
        let interop = interop.join().unwrap();

        let (pass, warn, fail) = table_counts(&service);
        println!("Redfish-Service-Validator: {pass} pass, {warn} warn, {fail} fail");
        let service_log = debug_log(&service_dir);
        assert_eq!(
            fail,
            0,
            "service validator failures:\n{:#?}",
            failures(&service_log)
        );
        assert!(pass > 500, "suspiciously few checks: {pass}");

        let summary = protocol
            .lines()
            .find(|l| l.starts_with("Summary - PASS"))
            .unwrap_or_else(|| panic!("no protocol summary:\n{protocol}"));
        println!("Redfish-Protocol-Validator: {summary}");
        let failed_checks: Vec<String> = std::fs::read_dir(&protocol_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .flat_map(|t| {
                t.lines()
                    .filter(|l| l.contains("\tFAIL\t"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            summary.contains("FAIL: 0,"),
            "{summary}\nfailed checks:\n{}\n{protocol}",
            failed_checks.join("\n")
        );

        let (pass, warn, fail) = table_counts(&interop);
        println!(
            "Redfish-Interop-Validator (Ironic profile): {pass} pass, {warn} warn, {fail} fail"
        );
        let interop_log = debug_log(&interop_dir);
        for line in failures(&interop_log) {
            // The RAID profile lines (no storage controllers to configure). `Bios` has its
            // `@Redfish.Settings` now (pending settings applied at the next boot).
            assert!(
                line.contains("OperationApplyTimeSupport") || line.contains("'POST' not found"),
                "unexpected interop failure: {line}"
            );
        }
        (pass, fail)
    });
    assert!(service.0 > 50);
}
