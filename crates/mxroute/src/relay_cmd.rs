use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use mx_relay::{Config, Relay, RelayError};

use crate::{Fatal, exit};

#[derive(Args)]
pub struct RelayArgs {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    /// Configuration file (TOML). Without one, the documented defaults apply.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum RelayCommand {
    /// Check the configuration and print it as the relay would use it.
    Check,
    /// Read a password on standard input and print an argon2 hash for the users file.
    HashPassword,
}

fn load(args: &RelayArgs) -> Result<Config, Fatal> {
    match &args.config {
        Some(path) => Config::load(path).map_err(|e| {
            let code = match e {
                RelayError::Io { .. } => exit::NO_INPUT,
                _ => exit::CONFIG,
            };
            Fatal::new(code, e)
        }),
        None => Ok(Config::default()),
    }
}

pub async fn run(args: RelayArgs) -> Result<u8, Fatal> {
    match args.command {
        Some(RelayCommand::HashPassword) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map_err(|e| {
                Fatal::new(exit::NO_INPUT, format!("cannot read the password: {e}"))
            })?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(Fatal::new(exit::DATA_ERR, "empty password"));
            }
            let hash = mx_relay::users::hash_password(password)
                .map_err(|e| Fatal::new(exit::SOFTWARE, e))?;
            println!("{hash}");
            Ok(0)
        }
        Some(RelayCommand::Check) => {
            let config = load(&args)?;
            println!("configuration ok: {config:#?}");
            Ok(0)
        }
        None => serve(load(&args)?).await,
    }
}

async fn serve(config: Config) -> Result<u8, Fatal> {
    let relay = Relay::start(&config).await.map_err(|e| {
        let code = match e {
            RelayError::Bind { .. } => exit::OS_ERR,
            RelayError::Io { .. } => exit::NO_INPUT,
            _ => exit::CONFIG,
        };
        Fatal::new(code, e)
    })?;
    // A daemon must not die because whoever started it closed our stdout: status lines are
    // best effort (println! would panic on a closed pipe).
    let say = |line: String| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    for addr in relay.local_addrs() {
        say(format!("relay: accepting SMTP on {addr}"));
    }
    say(format!(
        "relay: spool {}, maildir {}, local domains: {}",
        config.spool.path.display(),
        config.server.maildir_root.display(),
        if config.server.local_domains.is_empty() {
            "(none)".to_string()
        } else {
            config.server.local_domains.join(" ")
        }
    ));
    wait_for_signal().await?;
    say("relay: shutting down".into());
    relay.shutdown().await;
    Ok(0)
}

pub(crate) async fn wait_for_signal() -> Result<(), Fatal> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Fatal::new(exit::OS_ERR, format!("cannot wait for SIGTERM: {e}")))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
