use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kinesis_agent::agent::{self, Mode};
use kinesis_agent::config::{self, DEFAULT_CONFIG_FILE};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Exit codes (documented in the README).
const EXIT_OK: u8 = 0;
/// Fatal: invalid configuration when starting, checkpoint store unusable, or a permission /
/// missing-stream error in `--once`.
const EXIT_FATAL: u8 = 1;
/// `--check-config` found problems; `--once` left records undelivered.
const EXIT_INCOMPLETE: u8 = 2;
/// The daemon's configuration is invalid (sysexits' EX_CONFIG): restarting cannot help, so the
/// systemd unit's `RestartPreventExitStatus` leaves it stopped instead of retrying every 5 s.
/// `--once` keeps 1 for it, as documented.
const EXIT_CONFIG: u8 = 78;

/// Ships lines of local files to Amazon Kinesis Data Streams and Firehose.
#[derive(Parser, Debug)]
#[command(name = "kinesis-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration file (the Java agent's agent.json format).
    #[arg(short = 'c', long = "configuration", value_name = "PATH", default_value = DEFAULT_CONFIG_FILE, global = true)]
    configuration: PathBuf,
    /// Directory of drop-in files whose `flows` are added [default: agent.d beside the configuration file].
    #[arg(long = "config-dir", value_name = "DIR", global = true)]
    config_dir: Option<PathBuf>,
    /// Ship what the files hold now, wait for every acknowledgement, write checkpoints, exit.
    #[arg(long)]
    once: bool,
    /// With --once: give a flow up (exit 2) when its destination has accepted nothing for this
    /// long, retries included: 300 (seconds), 90s, 10m, 1h.
    #[arg(long = "give-up-after", value_name = "DURATION", default_value = "300", value_parser = parse_duration, requires = "once")]
    give_up_after: std::time::Duration,
    /// With --once: without a terminal, log a progress line per flow this often (on a terminal
    /// progress bars are drawn instead).
    #[arg(long = "progress-every", value_name = "DURATION", default_value = "10s", value_parser = parse_duration, requires = "once")]
    progress_every: std::time::Duration,
    /// With --once: show no progress (bars or lines).
    #[arg(long = "no-progress", requires = "once")]
    no_progress: bool,
    /// Parse and validate the configuration, print the effective flows, exit.
    #[arg(long = "check-config")]
    check_config: bool,
    /// With --check-config: also check that each destination exists and is active in its
    /// region, and whose credentials these are (calls AWS, or the configured endpoints).
    #[arg(long = "check-destinations", requires = "check_config")]
    check_destinations: bool,
    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG also works.
    #[arg(short = 'L', long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
}

/// Without a command, the agent runs (as a daemon, or with `--once`).
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Per flow and file: size, bytes acknowledged, bytes behind, and whether the file is fully
    /// shipped. Reads the checkpoint file only (no lock, no write): safe while the agent runs.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// Read this checkpoint file instead of the configuration's `checkpointFile`.
    #[arg(long = "checkpoint-file", value_name = "PATH")]
    checkpoint_file: Option<PathBuf>,
    /// Print one JSON document (for scripts; fields in the README).
    #[arg(long)]
    json: bool,
}

/// `300`, `300s`, `5m`, `1h`: a whole number of seconds, minutes or hours, at least 1 s. Ours, not
/// humantime's: a bare number means seconds here (humantime refuses it). The error is a message,
/// as clap's value parsers take.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a duration such as 300, 90s, 10m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("`{text}`: the unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("must be at least 1 s".to_owned());
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// `log.file` could not be opened (logging goes to standard error instead).
#[derive(Debug, thiserror::Error)]
#[error("log.file: cannot open the log file {}: {source}{}", path.display(), kinesis_agent::service::sandbox_hint(source))]
struct LogFileError {
    path: std::path::PathBuf,
    source: std::io::Error,
}

/// The level: `-L`, else `RUST_LOG`, else `log.level`, else info. The destination: `log.file`
/// (rotated by size) or standard error. A log file that cannot be opened does not stop the agent
/// (as the Java agent's log4j fell back): logging goes to standard error and `Err` says why.
fn init_logging(level: Option<&str>, log: Option<&config::LogSettings>) -> Result<(), LogFileError> {
    use kinesis_agent::service::logfile::RotatingFile;
    use kinesis_agent::service::proxy::Redact;
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let configured = || EnvFilter::new(log.and_then(|l| l.level.as_deref()).unwrap_or("info"));
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| configured()),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| configured()),
    };
    // The SDK's region chain warns twice, at length, when instance metadata does not answer; the
    // agent says it once itself (aws::build), naming the key to set.
    let filter = match "aws_config::imds::region=error".parse() {
        Ok(quiet) if !filter.to_string().contains("aws_config") => filter.add_directive(quiet),
        _ => filter,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let opened = log.and_then(|l| l.file.as_ref().map(|path| RotatingFile::open(path, l.max_file_size, l.max_backups)));
    match opened {
        Some(Ok(file)) => {
            let file: &'static RotatingFile = Box::leak(Box::new(file));
            builder.with_writer(move || Redact(file)).with_ansi(false).init();
            Ok(())
        }
        // Drawn around the `--once` progress bars, if any.
        failed => {
            builder
                .with_writer(|| Redact(kinesis_agent::agent::progress::LogWriter))
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            match failed {
                Some(Err(source)) => {
                    let path = log.and_then(|l| l.file.clone()).unwrap_or_default();
                    Err(LogFileError { path, source })
                }
                _ => Ok(()),
            }
        }
    }
}

fn dropin_dir(cli: &Cli) -> PathBuf {
    cli.config_dir
        .clone()
        .unwrap_or_else(|| cli.configuration.parent().unwrap_or_else(|| Path::new(".")).join("agent.d"))
}

/// `kinesis-agent status`: 0, or 1 when the configuration or the checkpoint file cannot be read.
fn status(cli: &Cli, args: &StatusArgs) -> u8 {
    use kinesis_agent::checkpoint;
    use kinesis_agent::commands::status;
    let configured = match &args.checkpoint_file {
        Some(path) => path.clone(),
        None => match config::load(&cli.configuration, Some(&dropin_dir(cli))) {
            Ok(cfg) => cfg.checkpoint_file,
            // Unrelated mistakes (a flow) do not hide the checkpoints; the daemon may still run.
            Err(errs) => match config::checkpoint_file(&cli.configuration) {
                Ok(path) => {
                    let n = errs.0.len();
                    eprintln!("note: the configuration has {n} problem(s) (`kinesis-agent --check-config` lists them)");
                    path
                }
                Err(errs) => {
                    for e in &errs.0 {
                        eprintln!("error: {e}");
                    }
                    eprintln!("the checkpoint file can also be given with --checkpoint-file");
                    return EXIT_FATAL;
                }
            },
        },
    };
    let (path, note) = checkpoint::file_to_read(&configured);
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    match status::run(&path, args.json) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FATAL
        }
    }
}

fn main() -> ExitCode {
    kinesis_agent::service::memory::one_arena();
    let cli = Cli::parse();
    if let Some(Command::Status(args)) = &cli.command {
        // `-c` and `--config-dir` serve both (they are global); the modes do not mix.
        if cli.once || cli.check_config {
            use clap::CommandFactory;
            let what = if cli.once { "--once" } else { "--check-config" };
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, format!("`status` cannot be used with {what}"))
                .exit();
        }
        return ExitCode::from(status(&cli, args));
    }
    let dir = dropin_dir(&cli);
    let cfg = match config::load(&cli.configuration, Some(&dir)) {
        Ok(c) => c,
        // A daemon without flows (a fresh install) waits for some instead of failing the unit.
        Err(errs) if !cli.once && !cli.check_config && errs.only_missing_flows() => {
            match kinesis_agent::agent::wait_for_flows(&cli.configuration, &dir, &errs) {
                Some(c) => c,
                None => return ExitCode::from(EXIT_OK),
            }
        }
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("error: {e}");
            }
            eprintln!("{} problem(s) in the configuration", errs.0.len());
            let code = if cli.check_config {
                EXIT_INCOMPLETE
            } else if cli.once {
                EXIT_FATAL
            } else {
                EXIT_CONFIG
            };
            return ExitCode::from(code);
        }
    };
    // Before any thread starts: it may set NO_PROXY (the instance metadata service is never
    // proxied), and registers what the log must never show.
    let secret = cfg.aws.secret_access_key.as_ref().map(|s| s.0.as_str());
    kinesis_agent::service::proxy::prepare(secret.as_slice());
    if cli.check_config {
        kinesis_agent::commands::show::print_config(&cfg);
        if let Err(e) = kinesis_agent::commands::show::print_trust() {
            eprintln!("error: the CA bundle {e}");
            eprintln!("1 problem(s) in the configuration");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
        if cli.check_destinations {
            use kinesis_agent::commands::check::{Verdict, check_destinations};
            return ExitCode::from(match check_destinations(&cfg) {
                Verdict::Ok => EXIT_OK,
                Verdict::Problems => EXIT_INCOMPLETE,
                Verdict::NoRuntime => EXIT_FATAL,
            });
        }
        return ExitCode::from(EXIT_OK);
    }
    if let Err(e) = init_logging(cli.log_level.as_deref(), Some(&cfg.log)) {
        tracing::warn!("{e}; logging to standard error instead");
    }
    for n in &cfg.notices {
        tracing::warn!("{n}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()).min(4))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    let mode = if cli.once { Mode::Once } else { Mode::Daemon };
    let options = agent::RunOptions {
        mode,
        give_up_after: cli.give_up_after,
        progress: (cli.once && !cli.no_progress)
            .then(|| kinesis_agent::agent::progress::Display::detect(cli.progress_every)),
    };
    kinesis_agent::service::systemd::init();
    let code = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let reload_signal = Arc::new(Notify::new());
        if let Err(e) = kinesis_agent::service::install(shutdown.clone(), reload_signal.clone()) {
            tracing::error!("cannot install signal handlers: {e}");
            return EXIT_FATAL;
        }
        let reload = (mode == Mode::Daemon).then(|| {
            let (main, dir) = (cli.configuration.clone(), dir.clone());
            agent::Reload { signal: reload_signal, load: Box::new(move || config::load(&main, Some(&dir))) }
        });
        tracing::info!("kinesis-agent {} starting with {} flow(s)", env!("CARGO_PKG_VERSION"), cfg.flows.len());
        let outcome = match agent::run(cfg, options, shutdown, reload).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("{e}");
                let config_error = matches!(e, agent::RunError::Aws(_));
                return if config_error && mode == Mode::Daemon { EXIT_CONFIG } else { EXIT_FATAL };
            }
        };
        for f in &outcome.flows {
            let m = &f.metrics;
            if f.undelivered > 0 && mode == Mode::Daemon {
                tracing::info!(
                    "{}: {} record(s) read, {} sent; {} not yet acknowledged will be sent again at the next start",
                    f.label,
                    m.records_read,
                    m.records_sent,
                    f.undelivered
                );
            } else if f.undelivered > 0 {
                tracing::error!(
                    "{}: {} record(s) read, {} sent, {} NOT delivered{}",
                    f.label,
                    m.records_read,
                    m.records_sent,
                    f.undelivered,
                    if f.fatal { " (fatal error, see above)" } else { "" }
                );
            } else {
                tracing::info!("{}: {} record(s) read, {} sent", f.label, m.records_read, m.records_sent);
            }
            for said in kinesis_agent::metrics::status::summary(m) {
                tracing::info!("{}: {said}", f.label);
            }
            if m.unreadable > 0 && mode == Mode::Once {
                tracing::error!("{}: {} file(s) or directories could not be read (see above)", f.label, m.unreadable);
            }
        }
        match mode {
            Mode::Daemon => EXIT_OK,
            Mode::Once if outcome.all_delivered() => EXIT_OK,
            Mode::Once if outcome.any_fatal() => EXIT_FATAL,
            Mode::Once => EXIT_INCOMPLETE,
        }
    });
    ExitCode::from(code)
}
