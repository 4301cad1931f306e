//! A throw-away Redis: Debian's `redis-server` (`scripts/setup` installs it) on a free loopback
//! port, nothing saved, its working directory in the cluster's temporary directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::proc::{free_port, Proc};

pub struct Redis {
    pub port: u16,
    _proc: Proc,
}

impl Redis {
    /// Starts it and waits until it answers `PING`. Panics with its log if it does not.
    pub async fn start(dir: &Path) -> Redis {
        let log = dir.join("redis.log");
        // A port free a moment ago may be taken by the time the server binds it: try again.
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut proc = Proc::spawn("redis-server", &mut cmd);
            for _ in 0..200 {
                if ping(port).await {
                    return Redis { port, _proc: proc };
                }
                if proc.exited().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        panic!(
            "redis-server did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].starts_with(b"+PONG"),
        _ => false,
    }
}
