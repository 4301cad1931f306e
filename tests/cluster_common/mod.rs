//! A voxwire cluster on one machine, for the tests (and benchmarks, through `#[path]`): a
//! throw-away Postgres (one database per cluster in a cluster shared by the process), a
//! throw-away Redis, three nodes of the real binary on the same store, Redis and recordings
//! folder, and HAProxy in front of them. Everything listens on free loopback ports, lives in a
//! temporary directory, and is stopped when the `Cluster` is dropped or the test process dies.
//! Needs Debian's `postgresql`, `redis-server` and `haproxy` (`scripts/setup` installs them).
#![allow(dead_code)]

pub mod client;
pub mod haproxy;
pub mod node;
#[path = "../store_common/pg.rs"]
pub mod pg;
pub mod proc;
pub mod redis;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::Connection;
use voxwire::auth::{Authenticator, Role};

pub use client::*;
use haproxy::Haproxy;
use node::Node;
use pg::PgServer;
use proc::TempDir;
use redis::Redis;

/// The nodes' JWT secret.
pub const SECRET: &str = "cluster-secret-0123456789abcdef";
/// How many nodes a cluster has: `node1`, `node2`, `node3`.
pub const NODES: usize = 3;

/// What a cluster's nodes are started with besides the defaults.
#[derive(Default, Clone)]
pub struct Options {
    /// `agents.toml` text (default: `tests/fixtures/agents.toml`).
    pub agents: Option<String>,
    /// More environment variables for every node.
    pub env: Vec<(String, String)>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub proxy: Haproxy,
    pub redis: Redis,
    /// The nodes' `VOXWIRE_DATABASE_URL`.
    pub database_url: String,
    auth: Authenticator,
    // Dropped last: the processes above are gone before their directory is removed.
    pub dir: TempDir,
}

fn shared_postgres() -> Arc<PgServer> {
    static PG: OnceLock<Arc<PgServer>> = OnceLock::new();
    PG.get_or_init(|| Arc::new(PgServer::start())).clone()
}

/// A new database in the process's Postgres cluster; its URL.
async fn new_database() -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let pg = tokio::task::spawn_blocking(shared_postgres).await.unwrap();
    let name = format!("cluster{}", SEQ.fetch_add(1, Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(&pg.url("voxwire"))
        .await
        .expect("connect to postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a database");
    pg.url(&name)
}

impl Cluster {
    /// Postgres, Redis, the three nodes (node1 first, so that it alone runs the migrations,
    /// then the other two together) and HAProxy once it counts them all up.
    pub async fn start(options: Options) -> Cluster {
        let dir = TempDir::new("voxwire-cluster");
        let database_url = new_database().await;
        let redis = Redis::start(&dir.path).await;
        let agents = match &options.agents {
            Some(text) => {
                let path = dir.path.join("agents.toml");
                std::fs::write(&path, text).expect("write agents.toml");
                path.to_string_lossy().into_owned()
            }
            None => concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agents.toml").into(),
        };
        let recordings = dir.path.join("recordings");
        let recordings = recordings.to_string_lossy().into_owned();
        let redis_url = redis.url();
        let env_of = |name: &str| {
            let mut env: Vec<(String, String)> = [
                ("JWT_SECRET", SECRET),
                ("VOXWIRE_STT", "fake"),
                ("VOXWIRE_LLM", "fake"),
                ("VOXWIRE_TTS", "fake"),
                ("VOXWIRE_VAD", "energy"),
                ("VOXWIRE_DATABASE_URL", database_url.as_str()),
                ("VOXWIRE_REDIS_URL", redis_url.as_str()),
                ("VOXWIRE_NODE_ID", name),
                ("VOXWIRE_AGENTS", agents.as_str()),
                ("VOXWIRE_RECORDINGS_DIR", recordings.as_str()),
                ("RUST_LOG", "voxwire=info"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            env.extend(options.env.iter().cloned());
            env
        };
        let node1 = Node::start("node1", dir.path.clone(), env_of("node1")).await;
        let (node2, node3) = tokio::join!(
            Node::start("node2", dir.path.clone(), env_of("node2")),
            Node::start("node3", dir.path.clone(), env_of("node3")),
        );
        let nodes = vec![node1, node2, node3];
        let ports: Vec<(String, u16)> = nodes.iter().map(|n| (n.name.clone(), n.port)).collect();
        let proxy = Haproxy::start(&dir.path, &ports).await;
        Cluster {
            nodes,
            proxy,
            redis,
            database_url,
            auth: Authenticator::new(SECRET.as_bytes()),
            dir,
        }
    }

    /// Node `n` (1, 2 or 3).
    pub fn node(&self, n: usize) -> &Node {
        assert!((1..=NODES).contains(&n), "no node{n}");
        &self.nodes[n - 1]
    }

    /// A token for `sub` of `org` with `role`, valid for ten minutes.
    pub fn token(&self, sub: &str, org: Option<&str>, role: Role) -> String {
        self.auth
            .issue_with_role(sub, org, None, role, Duration::from_secs(600))
            .expect("issue a token")
    }

    /// A caller's token.
    pub fn caller_token(&self, sub: &str, org: Option<&str>) -> String {
        self.token(sub, org, Role::Caller)
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn lb(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.port)
    }

    /// `http://127.0.0.1:PORT` of node `n`.
    pub fn direct(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}", self.node(n).port)
    }

    pub fn lb_ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.proxy.port)
    }

    /// A caller's socket through the proxy (trying again for up to 10 s while the proxy has
    /// no node to give it).
    pub async fn connect_lb(&self, token: &str) -> Caller {
        Caller::connect_within(&self.lb_ws_url(), token, Duration::from_secs(10)).await
    }

    /// A caller's socket on node `n` directly.
    pub async fn connect_node(&self, n: usize, token: &str) -> Caller {
        match Caller::connect(&self.node(n).ws_url(), token).await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to node{n}: {}", e.0),
        }
    }

    /// The last `lines` of every node's log, for a failure message.
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| format!("== {}.log\n{}", n.name, n.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs(30));
        }
    }
}
