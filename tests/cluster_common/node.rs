//! One voxwire node: the real binary (`serve --offline`) with the fake engines and the energy
//! detector, on a fixed loopback port so that it can be killed and started again where HAProxy
//! expects it. Its log goes to `<name>.log` in the cluster's directory.

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::proc::{free_port, Proc};

pub struct Node {
    pub name: String,
    pub port: u16,
    env: Vec<(String, String)>,
    dir: PathBuf,
    proc: Mutex<Option<Proc>>,
}

impl Node {
    /// Starts a node named `name` with `env`, on a free port, and waits for `/health`.
    pub async fn start(name: &str, dir: PathBuf, env: Vec<(String, String)>) -> Node {
        for _ in 0..5 {
            let node = Node {
                name: name.to_string(),
                port: free_port(),
                env: env.clone(),
                dir: dir.clone(),
                proc: Mutex::new(None),
            };
            // A port free a moment ago may be taken by the time the node binds it.
            if node.try_start().await {
                return node;
            }
        }
        panic!(
            "{name} did not start:\n{}",
            log_tail(&dir.join(format!("{name}.log")), 40)
        );
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// The end of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Whether its process is running.
    pub fn running(&self) -> bool {
        let mut proc = self.proc.lock().unwrap();
        proc.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// SIGKILL: the node dies at once, sockets and all.
    pub async fn kill(&self) {
        let proc = self.proc.lock().unwrap().take();
        if let Some(p) = proc {
            tokio::task::spawn_blocking(move || p.kill()).await.unwrap();
        }
    }

    /// SIGTERM (a drain) and waits for the process to exit; returns how it exited.
    pub async fn terminate(&self) -> ExitStatus {
        let p = self
            .proc
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        tokio::task::spawn_blocking(move || p.terminate(Duration::from_secs(30)))
            .await
            .unwrap()
    }

    /// Starts it again on its port (after `kill` or `terminate`).
    pub async fn restart(&self) {
        assert!(
            self.try_start().await,
            "{} did not start again:\n{}",
            self.name,
            self.log_tail(40)
        );
    }

    async fn try_start(&self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the node's log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxwire"));
        cmd.args(["serve", "--offline", "--bind"])
            .arg(format!("127.0.0.1:{}", self.port))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // No `.env` of the checkout is read: the directory has none.
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the node's log"))
            .stderr(log);
        let mut proc = Proc::spawn(&self.name, &mut cmd);
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if proc.exited().is_some() {
                return false;
            }
            if let Ok(r) = client.get(self.url("/health")).send().await {
                if r.status() == 200 {
                    *self.proc.lock().unwrap() = Some(proc);
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
