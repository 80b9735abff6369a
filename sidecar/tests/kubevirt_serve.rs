//! The real `kubevirt-bmc serve` process against the fake API server: it finishes a power-on
//! that an earlier sidecar began, answers health probes and metrics, and stops on SIGTERM;
//! started while the API is away or before its Secrets are mounted, it answers 503 saying so
//! instead of exiting.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use kubevirt_bmc::machine::{
    BootMode, BootOverride, BootOverrideEnabled, BootTarget, Machine, PowerAction,
};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_finishes_the_power_on_its_predecessor_began_and_stops_on_sigterm() {
    let fake = fake().await;
    // The previous sidecar: PXE once, power on -> restart; it dies with its Pod before
    // virt-controller has made the new VMI.
    let previous = machine(&fake).await;
    previous
        .set_boot_override(BootOverride {
            target: BootTarget::Pxe,
            enabled: BootOverrideEnabled::Once,
            mode: BootMode::Uefi,
        })
        .await
        .unwrap();
    fake.hold_controller(true);
    previous.power(PowerAction::On).await.unwrap();
    drop(previous);
    fake.hold_controller(false);
    assert!(paused(&vmi(&fake)));

    let dir = setup_files(&fake);
    let mut serve = spawn_serve(
        &dir.path().join("kubeconfig"),
        &dir.path().join("credentials"),
        Stdio::inherit(),
    );
    eventually("serve unpauses the new VMI", || async {
        !paused(&vmi(&fake))
    })
    .await;
    eventually("serve restores the boot order", || async {
        annotation(&fake, "bmc.kubevirt.io/boot-override").as_deref()
            == Some("None/Disabled/Legacy")
    })
    .await;
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.user.as_deref() == Some(USER) && r.subresource() == Some("unpause")),
        "the unpause came with the VM's own token"
    );

    let health = serve.health;
    eventually("healthz answers", || async {
        http_get(health, "/healthz").await.map(|r| r.0) == Some(200)
    })
    .await;
    eventually("metrics say power on", || async {
        http_get(health, "/metrics")
            .await
            .is_some_and(|(_, m)| m.contains("kubevirt_bmc_power_on 1"))
    })
    .await;
    let (code, metrics) = http_get(health, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("kubevirt_bmc_cache_synced 1"), "{metrics}");
    assert!(metrics.contains("kubevirt_bmc_power_on 1"), "{metrics}");
    assert!(
        metrics.contains("kubevirt_bmc_kubevirt_calls_total{result=\"ok\"}"),
        "{metrics}"
    );
    // Ready exactly when the Redfish listener is bound (the servers come from bmc::run).
    let (code, body) = http_get(health, "/readyz").await.unwrap();
    let bound = tokio::net::TcpStream::connect(("127.0.0.1", serve.redfish))
        .await
        .is_ok();
    assert_eq!(code == 200, bound, "{code} {body}");

    let pid = serve.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_process_killed_in_the_middle_of_finishing_is_finished_by_the_next() {
    let fake = fake().await;
    let previous = machine(&fake).await;
    fake.hold_controller(true);
    previous.power(PowerAction::ForceOff).await.unwrap();
    previous
        .set_boot_override(BootOverride {
            target: BootTarget::Pxe,
            enabled: BootOverrideEnabled::Once,
            mode: BootMode::Uefi,
        })
        .await
        .unwrap();
    previous.power(PowerAction::On).await.unwrap();
    drop(previous);
    fake.hold_controller(false);
    let new = vmi_uid(&fake);

    // The first serve process starts finishing the boot through a slow API and is killed
    // (SIGKILL) mid-way: in practice after its unpause landed and before it recorded the
    // boot (the window between the call and the facts), else before the unpause.
    fake.set_slow(Duration::from_millis(300));
    fake.clear_requests();
    let dir = setup_files(&fake);
    let kubeconfig = dir.path().join("kubeconfig");
    let credentials = dir.path().join("credentials");
    let mut first = spawn_serve(&kubeconfig, &credentials, Stdio::null());
    eventually("both watches are open", || async {
        fake.requests().iter().filter(|r| r.is_watch()).count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    fake.set_slow(Duration::ZERO);

    let _second = spawn_serve(&kubeconfig, &credentials, Stdio::null());
    eventually("the new VMI runs", || async { !paused(&vmi(&fake)) }).await;
    eventually("the boot is recorded and the restart finished", || async {
        annotation(&fake, "bmc.kubevirt.io/booted-vmi").as_deref() == Some(new.as_str())
            && annotation(&fake, "bmc.kubevirt.io/restart-of").is_none()
    })
    .await;
    eventually("the one-time override is used up", || async {
        annotation(&fake, "bmc.kubevirt.io/boot-override").as_deref()
            == Some("None/Disabled/Legacy")
    })
    .await;
    assert_eq!(vmi_uid(&fake), new, "no further restart");
}

/// Its volumes are optional (a Pod with a stale opt-in must start: compute never waits for the
/// BMC), so missing credentials are a missing file: serve stays up, says which Secret and key on
/// stderr and /readyz, and serves once the kubelet fills the volume in. Before issue 12 it
/// exited, and the kubelet restarted it in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_credentials_says_which_secret_is_missing_then_serves_once_it_appears() {
    use std::io::{BufRead, BufReader};
    let fake = fake().await;
    let dir = setup_files(&fake);
    let late = dir.path().join("late");
    let mut serve = spawn_serve(&dir.path().join("kubeconfig"), &late, Stdio::piped());
    let stderr = serve.child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let health = serve.health;
    eventually("readyz says what is missing", || async {
        http_get(health, "/readyz")
            .await
            .is_some_and(|(code, body)| {
                code == 503
                    && body.contains("no \"username\"")
                    && body.contains("Secret vm1-bmc-credentials does not exist")
            })
    })
    .await;
    assert_eq!(http_get(health, "/healthz").await.map(|r| r.0), Some(200));
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "serve must keep running"
    );
    eventually("the reason is logged", || async {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("BMC not serving") && l.contains("late"))
    })
    .await;
    // The kubelet fills the volume in once the Secret exists.
    std::fs::create_dir(&late).unwrap();
    std::fs::write(late.join("username"), "admin\n").unwrap();
    std::fs::write(late.join("password"), "s3cret\n").unwrap();
    eventually("serve becomes ready", || async {
        http_get(health, "/readyz").await.map(|r| r.0) == Some(200)
    })
    .await;
    let _ = serve.child.kill();
    let _ = serve.child.wait();
}

/// A user-named Secret whose owner did not list the VM in `kubevirt-bmc-vms`: the sidecar
/// refuses to serve with it and says so on the VM (the controller cannot read that Secret),
/// then serves, and clears its report, once the owner agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_secret_without_its_owners_consent_is_refused_and_reported_on_the_vm() {
    let fake = fake().await;
    let dir = setup_files(&fake);
    let credentials = dir.path().join("credentials");
    let mut serve = spawn_serve_with(
        &dir.path().join("kubeconfig"),
        &credentials,
        Stdio::null(),
        &[("KUBEVIRT_BMC_USER_CREDENTIALS", "team-bmc")],
    );
    eventually("the refusal is on the VM", || async {
        annotation(&fake, "bmc.kubevirt.io/sidecar-problem").is_some_and(|p| {
            p.contains("Secret team-bmc") && p.contains("has not agreed") && !p.contains("s3cret")
        })
    })
    .await;
    let health = serve.health;
    let (code, body) = http_get(health, "/readyz").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", serve.redfish))
            .await
            .is_err(),
        "Redfish must not answer with credentials nobody agreed to"
    );
    // The owner agrees: kubectl patch secret team-bmc -p '{"stringData":{"kubevirt-bmc-vms":"vm1"}}'
    std::fs::write(credentials.join("consent-vms"), VM).unwrap();
    eventually("serve becomes ready", || async {
        http_get(health, "/readyz").await.map(|r| r.0) == Some(200)
    })
    .await;
    eventually("the report is cleared", || async {
        annotation(&fake, "bmc.kubevirt.io/sidecar-problem").is_none()
    })
    .await;
    let _ = serve.child.kill();
    let _ = serve.child.wait();
}

/// `curl -sk` over HTTPS: (status, body); `None` while nothing answers.
fn curl(port: u16, path: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl not found");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    let code = code.trim().parse::<u16>().ok().filter(|c| *c != 0)?;
    Some((code, body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_with_the_api_away_answers_503_saying_so_then_serves() {
    let fake = fake().await;
    let dir = setup_files(&fake);
    fake.set_down(true);
    let mut serve = spawn_serve(
        &dir.path().join("kubeconfig"),
        &dir.path().join("credentials"),
        Stdio::null(),
    );
    let redfish = serve.redfish;
    let answer = std::sync::Mutex::new(None);
    eventually("Redfish answers while the API is away", || {
        let got = tokio::task::block_in_place(|| curl(redfish, "/redfish/v1"));
        let some = got.is_some();
        *answer.lock().unwrap() = got;
        async move { some }
    })
    .await;
    let (code, body) = answer.into_inner().unwrap().unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("the BMC is starting: cannot read the VM from the KubeVirt API"),
        "{body}"
    );
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "serve keeps running instead of exiting into a restart loop"
    );
    fake.set_down(false);
    eventually_within(
        "Redfish serves once the API is back",
        WATCH_BACK_WITHIN,
        || {
            let code = tokio::task::block_in_place(|| curl(redfish, "/redfish/v1")).map(|a| a.0);
            async move { code == Some(200) }
        },
    )
    .await;
}

/// ipmitool against the serve process, with the credentials `setup_files` writes.
fn ipmitool(port: u16, interface: &[&str], command: &str) -> std::process::Output {
    Command::new("ipmitool")
        .args(interface)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "admin", "-P", "s3cret", "-R", "1", "-N", "1"])
        .args(command.split_whitespace())
        .output()
        .expect("ipmitool is installed (e2e/setup.sh)")
}

/// The VM's `ipmi-auth` is followed while the BMC runs: tightened to strict, IPMI v1.5
/// stops logging in (and its sessions end) while RMCP+ suite 17 goes on; loosened again,
/// v1.5 is back. No restart of the sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_ipmi_login_policy_applies_without_a_restart() {
    let fake = fake().await;
    let set_policy = |value: &'static str| {
        fake.modify(kubevirt_bmc_e2e::fake_apiserver::Gvr::vm(), NS, VM, |vm| {
            vm["metadata"]["annotations"]["bmc.kubevirt.io/ipmi-auth"] = value.into();
        });
    };
    set_policy("compatible");
    let dir = setup_files(&fake);
    let serve = spawn_serve(
        &dir.path().join("kubeconfig"),
        &dir.path().join("credentials"),
        Stdio::inherit(),
    );
    let port = serve.ipmi;
    let works = |interface: &'static [&'static str]| async move {
        let out = tokio::task::spawn_blocking(move || ipmitool(port, interface, "power status"))
            .await
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Chassis Power")
    };
    const V15: &[&str] = &["-I", "lan"];
    const SUITE_17: &[&str] = &["-I", "lanplus", "-C", "17"];
    eventually("IPMI v1.5 logs in under compatible", || works(V15)).await;
    set_policy("strict");
    eventually("IPMI v1.5 is refused once strict", || async {
        !works(V15).await
    })
    .await;
    assert!(works(SUITE_17).await, "suite 17 still logs in");
    set_policy("compatible");
    eventually("IPMI v1.5 logs in again", || works(V15)).await;
}
