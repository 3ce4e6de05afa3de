//! The `basalt` binary: one program for the server (`serve`), the rbd-style CLI that talks to it, and `fsck`.
//!
//! Failures print exactly one line, `basalt: <what went wrong>`, on stderr and exit with the errno of the cause
//! (2 for ENOENT, 16 for EBUSY, 22 for EINVAL, ...) or 1; argument errors exit 2, as clap does.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    if std::env::args_os().len() <= 1 {
        // `basalt` alone: the overview of commands, as before the CLI grew, not an error.
        let mut command = <cli::Cli as clap::CommandFactory>::command();
        let _ = command.print_help();
        return ExitCode::SUCCESS;
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return argument_error(&err),
    };
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let (message, code) = match err.downcast_ref::<cli::Failure>() {
                Some(failure) => (failure.message.clone(), failure.exit_code),
                None => (format!("{err:#}"), 1),
            };
            eprintln!("basalt: {}", one_line(&message));
            ExitCode::from(code.max(1))
        }
    }
}

/// Help and version go to stdout in full; real argument errors become one line, keeping clap's exit code.
fn argument_error(err: &clap::Error) -> ExitCode {
    if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    // clap's message is the text before the first blank line or usage line; fold it onto one line.
    let rendered = err.render().to_string();
    let text: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect();
    let text = text.join(" ");
    let message = format!("{} (see 'basalt help')", text.strip_prefix("error: ").unwrap_or(&text));
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "basalt: {message}");
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

/// Folds a message onto one line, so every failure is exactly one line of stderr.
fn one_line(message: &str) -> String {
    message.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}
