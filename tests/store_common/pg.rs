//! A throw-away Postgres cluster: Debian's server binaries (`scripts/setup` installs them), a
//! temporary directory, a free loopback port and the socket in that directory. As root the
//! server runs as the `postgres` user (it refuses root). A watchdog process removes the cluster
//! when this test process ends, however it ends, so a cluster kept in a `static` is cleaned up
//! too.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The password in every URL handed out. The cluster trusts loopback connections and never
/// asks for it: it is there so tests can check it is never shown.
pub const PASSWORD: &str = "pw-never-shown-7f3a";

pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Its stdin closing (this process ending) makes it stop the server and remove `dir`.
    watchdog: Mutex<Option<Child>>,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "Postgres server binaries not found (/usr/lib/postgresql/*/bin/initdb): run scripts/setup"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

impl PgServer {
    /// initdb, start, and create the database `voxwire`. Panics with the server's log if it
    /// does not come up.
    pub fn start() -> PgServer {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "voxwire-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        let as_postgres = is_root();
        let mut server = PgServer {
            bin,
            dir,
            port: 0,
            as_postgres,
            watchdog: Mutex::new(None),
        };
        if as_postgres {
            server.run_root(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&server.dir),
            );
        }
        server.spawn_watchdog();
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        // A port free a moment ago may be taken by the time the server binds it: try again.
        for attempt in 0.. {
            server.port = free_port();
            if server.try_start() {
                break;
            }
            if attempt == 4 {
                panic!("postgres did not start:\n{}", server.log());
            }
        }
        let port = server.port.to_string();
        server.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "voxwire"],
        );
        server
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash would.
    pub fn stop(&self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// Starts it again on the same port after [`PgServer::stop`].
    pub fn start_again(&self) {
        assert!(
            self.try_start(),
            "postgres did not restart:\n{}",
            self.log()
        );
    }

    fn try_start(&self) -> bool {
        let data = self.data();
        let log = self.dir.join("log").to_string_lossy().into_owned();
        // No fsync: a commit reaches the kernel, which keeps it through `stop` (a crash of the
        // server, not of the machine). `synchronous_commit` stays on, or an immediate stop
        // would lose commits still in the server's WAL buffers.
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        self.command("pg_ctl")
            .args([
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// A server binary, as the `postgres` user when this process is root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // The postgres user may not be able to enter the directory the tests run in.
        c.current_dir(&self.dir);
        c
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}: run scripts/setup"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn run_root(&self, c: &mut Command) {
        let ok = c.status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "{c:?} failed");
    }

    /// `setsid sh`: in its own session, so a Ctrl-C to the test run does not take it down
    /// before it has cleaned up.
    fn spawn_watchdog(&self) {
        let q = |p: &Path| format!("'{}'", p.display());
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                q(&pg_ctl),
                q(&self.dir.join("data"))
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                q(&pg_ctl),
                q(&self.dir.join("data"))
            )
        };
        let script = format!(
            "read _; cd /; {stop} >/dev/null 2>&1; rm -rf {}",
            q(&self.dir)
        );
        let child = Command::new("setsid")
            .args(["-w", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cluster's watchdog (setsid, sh)");
        *self.watchdog.lock().unwrap() = Some(child);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Closing the watchdog's stdin makes it stop the server and remove the directory.
        if let Some(mut child) = self.watchdog.lock().unwrap().take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = child.wait();
        }
    }
}
