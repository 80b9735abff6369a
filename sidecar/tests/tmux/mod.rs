//! A private tmux server for driving interactive clients (`ipmitool sol activate`,
//! `ipmiconsole`) through a real pseudo-terminal.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// What a failed wait prints besides the screen: the BMC's log.
pub trait Logs {
    fn log_text(&self) -> String;
}

/// A private tmux server (its own socket name), so parallel tests never meet.
pub struct Tmux {
    socket: String,
}

fn run(mut c: Command) -> Output {
    c.output().expect("tmux runs")
}

impl Tmux {
    pub fn new(tag: &str) -> Tmux {
        Tmux {
            socket: format!("kvbmc-sol-{tag}-{}", std::process::id()),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    pub fn start(&self, window: &str, shell: &str) {
        let mut c = self.cmd();
        c.args([
            "new-session",
            "-d",
            "-s",
            window,
            "-x",
            "120",
            "-y",
            "40",
            shell,
        ]);
        let out = run(c);
        assert!(out.status.success(), "tmux: {out:?}");
    }

    pub fn keys(&self, window: &str, keys: &[&str]) {
        let mut c = self.cmd();
        c.args(["send-keys", "-t", window]).args(keys);
        assert!(run(c).status.success());
    }

    /// The pane's text, wrapped lines joined (long console lines stay searchable).
    pub fn screen(&self, window: &str) -> String {
        let mut c = self.cmd();
        c.args(["capture-pane", "-p", "-J", "-t", window]);
        String::from_utf8_lossy(&run(c).stdout).into_owned()
    }

    /// Waits until the pane shows `needle`; the whole screen and the log on failure.
    pub fn wait_for(&self, window: &str, needle: &str, bmc: &dyn Logs) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen(window);
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never appeared; screen:\n{screen}\nBMC log:\n{}",
                bmc.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}
