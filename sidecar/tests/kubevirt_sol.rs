//! Serial over LAN on the KubeVirt machine: the real `kubevirt-bmc serve` process against the
//! fake API server, `ipmitool -I lanplus -C 17 sol activate` in a tmux pseudo-terminal. SOL
//! reaches the VMI's serial console (a `plain.kubevirt.io` WebSocket), follows a reboot to
//! the new VMI, and says plainly when the Role lacks the console permission.

mod support;
mod tmux;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::*;
use tmux::{Logs, Tmux};

struct Running {
    serve: Serve,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Logs for Running {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn start_serve(fake: &kubevirt_bmc_e2e::fake_apiserver::FakeApiServer) -> Running {
    let dir = setup_files(fake);
    let log = dir.path().join("serve.log");
    let serve = spawn_serve(
        &dir.path().join("kubeconfig"),
        &dir.path().join("credentials"),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let health = serve.health;
    eventually("serve is ready", || async {
        http_get(health, "/readyz").await.map(|r| r.0) == Some(200)
    })
    .await;
    Running {
        serve,
        log,
        _dir: dir,
    }
}

fn sol_command(running: &Running) -> String {
    format!(
        "ipmitool -I lanplus -C 17 -H 127.0.0.1 -p {} -U admin -P s3cret sol activate; \
         echo SOL-EXITED=$?; sleep 60",
        running.serve.ipmi
    )
}

fn banner(uid: &str) -> String {
    format!("fake serial console of VMI vms/vm1 (uid {uid})")
}

/// tmux waits block; the fake API server needs the runtime meanwhile.
async fn wait_for(tmux: &Tmux, needle: &str, running: &Running) -> String {
    tokio::task::block_in_place(|| tmux.wait_for("sol", needle, running))
}

async fn open_consoles(fake: &kubevirt_bmc_e2e::fake_apiserver::FakeApiServer) -> usize {
    fake.open_consoles()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sol_reaches_the_vmi_console_follows_a_reboot_and_detaches() {
    let fake = fake().await;
    let running = start_serve(&fake).await;
    let first = vmi_uid(&fake);
    // Nobody attached: the BMC leaves the console free (for `virtctl console` users).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(open_consoles(&fake).await, 0);

    let tmux = Tmux::new("kubevirt");
    tmux.start("sol", &sol_command(&running));
    wait_for(&tmux, "SOL Session operational", &running).await;
    wait_for(&tmux, &banner(&first), &running).await;
    assert_eq!(open_consoles(&fake).await, 1);
    let upgrade = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/virtualmachineinstances/vm1/console"))
        .expect("the console request");
    assert_eq!(
        (
            upgrade.method.as_str(),
            upgrade.status,
            upgrade.user.as_deref()
        ),
        ("GET", 101, Some(USER)),
        "the upgrade came with the VM's own token"
    );
    tmux.keys("sol", &["hello-kubevirt", "Enter"]);
    wait_for(&tmux, "login: hello-kubevirt", &running).await;

    // A reboot is a new VMI. While there is none the console says it waits, once.
    fake.hold_controller(true);
    assert!(fake.guest_shutdown(NS, VM));
    wait_for(&tmux, "console connection closed", &running).await;
    let screen = wait_for(&tmux, "no running VM instance; waiting for one", &running).await;
    fake.hold_controller(false);
    let second = {
        let mut uid = vmi_uid(&fake);
        for _ in 0..100 {
            if uid != first {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            uid = vmi_uid(&fake);
        }
        uid
    };
    assert_ne!(second, first);
    let screen_after = wait_for(
        &tmux,
        "console reconnected to the new VM instance",
        &running,
    )
    .await;
    wait_for(&tmux, &banner(&second), &running).await;
    assert_eq!(
        screen_after.matches("waiting for one").count(),
        screen.matches("waiting for one").count(),
        "the wait is said once:\n{screen_after}"
    );
    tmux.keys("sol", &["after-reboot", "Enter"]);
    wait_for(&tmux, "login: after-reboot", &running).await;

    // ipmitool's ~B sends a break; KubeVirt's console cannot, and says so.
    tmux.keys("sol", &["Enter", "~B"]);
    wait_for(&tmux, "cannot send a break; ignored", &running).await;

    // Detaching closes the WebSocket.
    tmux.keys("sol", &["Enter", "~."]);
    wait_for(&tmux, "SOL-EXITED=0", &running).await;
    eventually("the console socket is closed", || async {
        open_consoles(&fake).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_console_permission_sol_says_what_the_role_lacks() {
    let fake = fake().await;
    fake.deny_resources(TOKEN, &["virtualmachineinstances/console"]);
    let running = start_serve(&fake).await;
    let tmux = Tmux::new("forbidden");
    tmux.start("sol", &sol_command(&running));
    wait_for(&tmux, "SOL Session operational", &running).await;
    let screen = wait_for(
        &tmux,
        "cannot open the serial console: the BMC's service account may not get \
         virtualmachineinstances/console of vms/vm1; grant it in the VM's BMC Role",
        &running,
    )
    .await;
    // The API server's own words follow, naming the user and the resource.
    assert!(
        screen.contains("cannot get resource \"virtualmachineinstances/console\" in API group \"subresources.kubevirt.io\""),
        "{screen}"
    );
    let refused = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/console"))
        .map(|r| r.status)
        .collect::<Vec<_>>();
    assert!(
        !refused.is_empty() && refused.iter().all(|s| *s == 403),
        "{refused:?}"
    );
    assert_eq!(open_consoles(&fake).await, 0);
    tmux.keys("sol", &["Enter", "~."]);
    wait_for(&tmux, "SOL-EXITED=0", &running).await;
}
