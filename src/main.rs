//! The `voxwire` command: `serve` (the default) and `token`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use voxwire::config::{Config, ProcessEnv, EXIT_CONFIG};
use voxwire::engines::Engines;
use voxwire::AppState;

#[derive(Parser)]
#[command(name = "voxwire", version, about = "Real-time voice agent server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (overrides VOXWIRE_BIND).
    #[arg(long, global = true)]
    bind: Option<String>,
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
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    if let Some(bind) = &cli.bind {
        // Flags win over the environment; set before any thread starts.
        std::env::set_var("VOXWIRE_BIND", bind);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "voxwire=info,tower_http=warn".into()),
        )
        .init();
    let config = match Config::from_env(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Token {
            sub,
            org,
            agent,
            ttl,
        } => {
            let Some(secret) = config.jwt_secret.as_deref() else {
                eprintln!("configuration error: JWT_SECRET: must be set to sign tokens");
                return ExitCode::from(EXIT_CONFIG as u8);
            };
            let auth = voxwire::auth::Authenticator::new(secret.as_bytes());
            match auth.issue(&sub, org.as_deref(), agent.as_deref(), ttl) {
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

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let engines = match Engines::from_config(&config) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(config.bind).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", config.bind);
                return ExitCode::FAILURE;
            }
        };
        let state = AppState::new(config, engines);
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
