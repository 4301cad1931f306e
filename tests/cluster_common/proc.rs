//! A child process that cannot outlive the test: each has a watchdog (`setsid sh`, in its own
//! session so a Ctrl-C to the test run does not take it down first) that SIGKILLs it when the
//! test process ends, however it ends. Dropping a `Proc` kills and reaps the child and tells
//! the watchdog it is done.

use std::io::Write as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub struct Proc {
    pub name: String,
    child: Child,
    /// Reads one line: `done` (the child was reaped) or end of input (this process died).
    watchdog: Child,
}

impl Proc {
    /// Spawns `cmd` and its watchdog. Panics naming `name` if it cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}: run scripts/setup"));
        let script = format!(
            "read x; [ \"$x\" = done ] || kill -9 {} 2>/dev/null",
            child.id()
        );
        let watchdog = Command::new("setsid")
            .args(["-w", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a watchdog (setsid, sh)");
        Proc {
            name: name.to_string(),
            child,
            watchdog,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, as a crash of the machine or the process would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most `within`) for it to exit. Blocks: call it from
    /// `spawn_blocking`.
    pub fn terminate(mut self, within: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(sent, "cannot send SIGTERM to {} ({pid})", self.name);
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not exit within {within:?} of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut stdin) = self.watchdog.stdin.take() {
            let _ = stdin.write_all(b"done\n");
        }
        let _ = self.watchdog.wait();
    }
}

/// A free loopback port (free when asked: whoever binds it next must retry if it was taken).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// A directory removed when this process ends (dropping the guard, or dying).
pub struct TempDir {
    pub path: std::path::PathBuf,
    watchdog: Child,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        let script = format!("read _; cd /; rm -rf '{}'", path.display());
        let watchdog = Command::new("setsid")
            .args(["-w", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a watchdog (setsid, sh)");
        TempDir { path, watchdog }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.watchdog.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.watchdog.wait();
    }
}
