//! The `voxwire` command: `serve` (the default), `token`, `keys`, `models`, `retention` and
//! `loadgen`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use voxwire::config::{Config, ProcessEnv, EXIT_CONFIG};
use voxwire::engines::Engines;
use voxwire::models::{fetch, human_size, ModelStore, Status, MODELS};
use voxwire::AppState;

#[derive(Parser)]
#[command(name = "voxwire", version, about = "Real-time voice agent server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (overrides VOXWIRE_BIND).
    #[arg(long, global = true)]
    bind: Option<String>,
    /// Never download models; fail with a clear message if one is missing.
    #[arg(
        long,
        global = true,
        env = "VOXWIRE_OFFLINE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    offline: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a signed token for JWT_SECRET.
    Token {
        /// The user the token is for.
        #[arg(long)]
        sub: String,
        /// Tenant.
        #[arg(long)]
        org: Option<String>,
        /// Agent the token's calls default to.
        #[arg(long)]
        agent: Option<String>,
        /// What the token may do: `caller` (its own calls), `operator` or `admin` (watch every
        /// call of its org).
        #[arg(long, default_value = "caller", value_parser = ["caller", "operator", "admin"])]
        role: String,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Manage the local model files.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Simulate callers against a running server; print latency, CPU and memory figures.
    Loadgen(voxwire::loadgen::Options),
    /// Delete expired calls (VOXWIRE_RETENTION_DAYS, agents' retention_days).
    Retention {
        #[command(subcommand)]
        action: RetentionAction,
    },
    /// Manage organisations' API keys in the configured store (VOXWIRE_DATABASE_URL).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create an API key for an org (the org is created if new); the key is printed once.
    Create {
        /// The organisation.
        #[arg(long)]
        org: String,
        /// What the key is for, e.g. `backend`.
        #[arg(long)]
        name: String,
    },
    /// List keys (id, org, name, created, last used, revoked); never a secret.
    List {
        /// Only this organisation's keys.
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a key by its id; it stops working at once.
    Revoke {
        /// The key's id, from `keys list`.
        id: String,
    },
}

#[derive(Subcommand)]
enum RetentionAction {
    /// Delete the expired calls now, with their items, events, metrics and recordings, from
    /// the configured store; print the counts.
    Run,
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Download, verify and install the pinned models that are missing or corrupt.
    Fetch {
        /// Only these models (ids from `models list`).
        #[arg(long)]
        only: Vec<String>,
    },
    /// Show which models are present, their sizes and where they are.
    List {
        /// Also check every file's SHA-256 (slower).
        #[arg(long)]
        verify: bool,
    },
}

fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle otherwise re-reads the CPU count on every matrix multiply.
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if let Some(bind) = &cli.bind {
        // Flags win over the environment; set before any thread starts.
        std::env::set_var("VOXWIRE_BIND", bind);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "voxwire=info,tower_http=warn".into()),
        )
        .init();
    let command = match cli.command.unwrap_or(Command::Serve) {
        // A client of some server: this machine's server configuration does not apply.
        Command::Loadgen(options) => return loadgen(options),
        command => command,
    };
    let mut config = match Config::from_env(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    config.offline |= cli.offline;
    match command {
        Command::Serve => serve(config),
        Command::Loadgen(options) => loadgen(options),
        Command::Models { action } => models(action, &config),
        Command::Retention {
            action: RetentionAction::Run,
        } => retention(&config),
        Command::Keys { action } => keys(action, &config),
        Command::Token {
            sub,
            org,
            agent,
            role,
            ttl,
        } => {
            let role: voxwire::auth::Role = match role.parse() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("configuration error: --role: {e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            let Some(secret) = config.jwt_secret.as_deref() else {
                eprintln!("configuration error: JWT_SECRET: must be set to sign tokens");
                return ExitCode::from(EXIT_CONFIG as u8);
            };
            let max = config.net.max_token_ttl;
            if ttl > max {
                eprintln!(
                    "configuration error: --ttl {} is longer than VOXWIRE_MAX_TOKEN_TTL ({}): the server would refuse the token",
                    humantime::format_duration(ttl),
                    humantime::format_duration(max)
                );
                return ExitCode::from(EXIT_CONFIG as u8);
            }
            let auth = voxwire::auth::Authenticator::new(secret.as_bytes()).with_max_ttl(max);
            match auth.issue_with_role(&sub, org.as_deref(), agent.as_deref(), role, ttl) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot sign a token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn models(action: ModelsAction, config: &Config) -> ExitCode {
    let store = ModelStore::new(&config.models_dir);
    let offline = config.offline;
    match action {
        ModelsAction::List { verify } => {
            use std::io::Write as _;
            // A closed pipe (`| head`) ends the listing quietly instead of panicking.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "models directory: {}", store.dir.display());
            for spec in MODELS {
                let status = if verify {
                    store.verify(spec)
                } else {
                    store.status(spec)
                };
                let state = match status {
                    Status::Present => "present".to_string(),
                    Status::Missing(_) => "missing".to_string(),
                    Status::Corrupt(p, why) => format!("CORRUPT: {} ({why})", p.display()),
                };
                let _ = writeln!(
                    out,
                    "  {:<24} {:>9}  {:<8} {}\n  {:<24} {}",
                    spec.id,
                    human_size(spec.size()),
                    state,
                    spec.purpose,
                    "",
                    store.model_dir(spec.id).display()
                );
            }
            ExitCode::SUCCESS
        }
        ModelsAction::Fetch { only } => {
            if offline {
                eprintln!("models fetch: --offline forbids downloading");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
            for id in &only {
                if voxwire::models::spec(id).is_none() {
                    eprintln!("unknown model `{id}`; see `voxwire models list`");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            }
            for spec in MODELS
                .iter()
                .filter(|s| only.is_empty() || only.iter().any(|o| o == s.id))
            {
                match store.verify(spec) {
                    Status::Present => println!("{}: present and verified", spec.id),
                    Status::Missing(_) | Status::Corrupt(..) => {
                        if let Err(e) = fetch::fetch(&store, spec, &mut std::io::stdout()) {
                            eprintln!("{e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn loadgen(options: voxwire::loadgen::Options) -> ExitCode {
    // Each simulated caller holds a socket.
    let _ = voxwire::server::raise_fd_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = options.json;
    match runtime.block_on(voxwire::loadgen::run(options)) {
        Ok(report) if json => {
            println!("{}", report.json());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.markdown());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn retention(config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let policy = voxwire::retention::Policy::new(config.store.retention_days, &config.agents);
    if policy.keeps_forever() {
        println!("retention is off (VOXWIRE_RETENTION_DAYS is 0 or unset, no agent sets retention_days): nothing to delete");
        return ExitCode::SUCCESS;
    }
    runtime.block_on(async {
        let store = match voxwire::store::Store::connect(&config.store.database_url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot open the call store (VOXWIRE_DATABASE_URL): {e}");
                return ExitCode::FAILURE;
            }
        };
        let now = voxwire::call::record::now_ms();
        let dir = &config.store.recordings_dir;
        let result = voxwire::retention::run(&store, dir, &policy, now, &|_| {}).await;
        store.close().await;
        match result {
            Ok(d) => {
                println!("{}", voxwire::retention::report(&d));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("retention: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn keys(action: KeysAction, config: &Config) -> ExitCode {
    use voxwire::keys::cli::{self, CliError};
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let store = match voxwire::store::Store::connect(&config.store.database_url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot open the store (VOXWIRE_DATABASE_URL): {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = match (cli::durable(&store), action) {
            (Err(e), _) => Err(e),
            (Ok(()), KeysAction::Create { org, name }) => cli::create(&store, &org, &name).await,
            (Ok(()), KeysAction::List { org }) => cli::list(&store, org.as_deref()).await,
            (Ok(()), KeysAction::Revoke { id }) => cli::revoke(&store, &id).await,
        };
        store.close().await;
        match result {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(CliError::Usage(e)) => {
                eprintln!("keys: {e}");
                ExitCode::from(EXIT_CONFIG as u8)
            }
            Err(CliError::Failed(e)) => {
                eprintln!("keys: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match voxwire::server::raise_fd_limit() {
            Ok(n) => tracing::info!(open_files = n, "open-file limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
        let engines = match Engines::from_config(&config) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let unknown = config
            .agents
            .unknown_voices(|agent, v| engines.for_agent(agent).tts.has_voice(v));
        if let Some((agent, voice)) = unknown.first() {
            eprintln!("configuration error: VOXWIRE_AGENTS: agent `{agent}` asks for voice `{voice}`, which the text-to-speech engine does not have");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
        let listener = match tokio::net::TcpListener::bind(config.bind).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", config.bind);
                return ExitCode::FAILURE;
            }
        };
        let store = match voxwire::store::Store::connect(&config.store.database_url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot open the call store (VOXWIRE_DATABASE_URL): {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(store = %store.describe(), "call store");
        let cluster = match &config.cluster.redis_url {
            None => None,
            Some(_) => match voxwire::live::Cluster::connect(&config.cluster).await {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("cannot reach Redis (VOXWIRE_REDIS_URL): {e}");
                    return ExitCode::FAILURE;
                }
            },
        };
        if cluster.is_some() && !config.store.database_url.starts_with("postgres") {
            tracing::warn!("VOXWIRE_REDIS_URL is set but the store is not Postgres: calls cannot be resumed on another node");
        }
        let state = AppState::with_cluster(config, engines, store, cluster);
        match voxwire::run(listener, state, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("server error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
