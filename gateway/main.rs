//! `buntime`: the gateway binary.
#![deny(unsafe_code)] // allowed only in `allocator`

mod access;
mod allocator;
mod api;
mod config;
mod headers;
mod lifecycle;
mod logging;
mod plugins;
mod proxy;
mod routes;
mod server;
mod state;
mod stray_env;
mod telemetry;
mod upgrade;
mod via;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Sources};

// The request path allocates about a hundred small objects per request (most inside
// Pingora and `http`); mimalloc serves them at a fraction of glibc's cost (benches/README.md).
#[global_allocator]
static ALLOCATOR: allocator::Mimalloc = allocator::Mimalloc;

#[derive(Debug, Parser)]
#[command(
    name = "buntime",
    about = "Buntime Gateway: an edge gateway on Pingora",
    version = state::VERSION
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (default: ./conf/buntime.yaml if it exists).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and list every problem.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the version.
    Version,
    /// Run a worker (the pool starts these; not for direct use).
    #[command(subcommand)]
    Worker(WorkerKind),
}

#[derive(Debug, Subcommand)]
enum WorkerKind {
    /// Kill the workers' process groups once the gateway is gone (reads them on stdin).
    Reaper,
    /// Serve a static app folder on PORT or BUNTIME_SOCKET.
    Static {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "index.html")]
        entrypoint: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker(WorkerKind::Reaper) => {
            buntime_workers::process::reaper_main();
            ExitCode::SUCCESS
        }
        Command::Worker(WorkerKind::Static { dir, entrypoint }) => {
            logging::init(log::LevelFilter::Warn, config::LogFormat::Text);
            raise_open_files_limit();
            match buntime_workers::static_files::serve(&dir, &entrypoint) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Version => {
            println!("buntime {}", state::VERSION);
            ExitCode::SUCCESS
        }
        Command::Check { config } => match load(config.as_deref()) {
            Ok(c) => {
                let (loaded, warnings) = plugins::summary(&c);
                println!(
                    "configuration OK: port {}, API at {}, {loaded} plugin(s) enabled",
                    c.server.port, c.server.api_base,
                );
                for w in warnings.iter().chain(&stray_env()) {
                    println!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(problems) => report(&problems),
        },
        Command::Serve { config } => {
            let c = match load(config.as_deref()) {
                Ok(c) => c,
                Err(problems) => return report(&problems),
            };
            logging::init(c.server.log_level, c.server.log_format);
            raise_open_files_limit();
            for w in stray_env() {
                log::warn!("{w}");
            }
            if let Err(e) = buntime_workers::process::hide_from_own_user() {
                log::warn!("the apps may read this process's environment (its secrets): {e}");
            }
            match server::serve(c) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What `stray_env` says of this process's environment.
fn stray_env() -> Vec<String> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    stray_env::warnings(names.iter().map(String::as_str), plugins::CORE)
}

/// Lifts the soft open-files limit to the hard one (the workers get theirs back).
fn raise_open_files_limit() {
    match buntime_workers::process::raise_open_files_limit() {
        Ok(Some((from, to))) => log::debug!("open files limit raised from {from} to {to}"),
        Ok(None) => {}
        Err(e) => log::warn!("could not raise the open files limit: {e}"),
    }
}

/// The config plus everything plugins validate about their own keys.
fn load(file: Option<&std::path::Path>) -> Result<Config, buntime_plugin_sdk::Problems> {
    let env = |k: &str| std::env::var(k).ok();
    let (config, mut problems) = Config::read(&Sources {
        file,
        env: &env,
        specs: plugins::CORE,
    });
    problems.extend(plugins::check(&config));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn report(problems: &buntime_plugin_sdk::Problems) -> ExitCode {
    eprintln!("invalid configuration ({} problem(s)):", problems.len());
    for p in problems.iter() {
        eprintln!("  - {p}");
    }
    ExitCode::FAILURE
}
