//! HAProxy in front of the nodes, as a cluster is deployed: plain round robin with no
//! stickiness, health checks on `/health`, connection failures retried on another node, and
//! WebSockets kept open as tunnels. Its statistics (CSV) say which nodes it counts as up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::proc::{free_port, Proc};

pub struct Haproxy {
    pub port: u16,
    pub stats_port: u16,
    _proc: Proc,
}

/// The configuration for `nodes` (name, port), the front on `port`, statistics on `stats`.
pub fn config(port: u16, stats: u16, nodes: &[(String, u16)]) -> String {
    let mut cfg = format!(
        "global\n\
         \x20 maxconn 4096\n\
         defaults\n\
         \x20 mode http\n\
         \x20 timeout connect 2s\n\
         \x20 timeout client 60s\n\
         \x20 timeout server 60s\n\
         \x20 timeout tunnel 1h\n\
         \x20 option redispatch\n\
         \x20 retries 3\n\
         frontend voxwire\n\
         \x20 bind 127.0.0.1:{port}\n\
         \x20 default_backend nodes\n\
         listen stats\n\
         \x20 bind 127.0.0.1:{stats}\n\
         \x20 stats enable\n\
         \x20 stats uri /stats\n\
         backend nodes\n\
         \x20 balance roundrobin\n\
         \x20 option httpchk GET /health\n"
    );
    for (name, node_port) in nodes {
        cfg.push_str(&format!(
            "  server {name} 127.0.0.1:{node_port} check inter 500ms fall 2 rise 1\n"
        ));
    }
    cfg
}

impl Haproxy {
    /// Writes the configuration into `dir` and starts `haproxy -db` on it; waits until it
    /// serves its statistics and counts every node up.
    pub async fn start(dir: &Path, nodes: &[(String, u16)]) -> Haproxy {
        let path = dir.join("haproxy.cfg");
        let log = dir.join("haproxy.log");
        for _ in 0..5 {
            let (port, stats_port) = (free_port(), free_port());
            std::fs::write(&path, config(port, stats_port, nodes)).expect("write haproxy.cfg");
            let out = std::fs::File::create(&log).expect("create haproxy.log");
            let mut cmd = Command::new(binary());
            cmd.arg("-f")
                .arg(&path)
                .arg("-db")
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("haproxy.log"))
                .stderr(out);
            let mut proc = Proc::spawn("haproxy", &mut cmd);
            let mut ready = false;
            for _ in 0..200 {
                if proc.exited().is_some() {
                    break;
                }
                if let Ok(up) = servers(stats_port).await {
                    if up.len() == nodes.len() && up.iter().all(|(_, s)| s.starts_with("UP")) {
                        ready = true;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if ready {
                return Haproxy {
                    port,
                    stats_port,
                    _proc: proc,
                };
            }
        }
        panic!(
            "haproxy did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Each node's name and status as HAProxy sees it (`UP`, `DOWN`, `UP 1/2`...).
    pub async fn servers(&self) -> Vec<(String, String)> {
        servers(self.stats_port)
            .await
            .expect("haproxy's statistics")
    }

    /// Waits (at most `within`) until HAProxy counts `node` as `up` or not.
    pub async fn wait_for(&self, node: &str, up: bool, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let servers = self.servers().await;
            let is_up = servers
                .iter()
                .any(|(n, s)| n == node && s.starts_with("UP"));
            if is_up == up {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "haproxy never counted {node} {}: {servers:?}",
                if up { "up" } else { "down" }
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Debian puts it in `/usr/sbin`, which is not on every user's `PATH`.
fn binary() -> &'static str {
    if Path::new("/usr/sbin/haproxy").is_file() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    }
}

/// The backend's servers from the statistics CSV.
async fn servers(stats_port: u16) -> Result<Vec<(String, String)>, reqwest::Error> {
    let csv = reqwest::get(format!("http://127.0.0.1:{stats_port}/stats;csv"))
        .await?
        .text()
        .await?;
    Ok(csv
        .lines()
        .filter(|l| l.starts_with("nodes,"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            let (name, status) = (cols.get(1)?, cols.get(17)?);
            (*name != "BACKEND").then(|| (name.to_string(), status.to_string()))
        })
        .collect())
}
