//! The `basalt` binary: one program for the server and the rbd-style CLI.
//!
//! For now it offers the commands that need only the embedded engine: `fsck` checks a stopped store. The server
//! (`serve`) and the image commands arrive with the REST API.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: basalt <command> [options]

commands:
  fsck [--data-dir DIR]   check a stopped store (default DIR: $BASALT_DATA_DIR or ./basalt-data);
                          exits 1 if anything is inconsistent
  version                 print the version
  help                    print this help
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("basalt: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    match args.first().map(String::as_str) {
        Some("fsck") => fsck(&args[1..]),
        Some("version" | "--version" | "-V") => {
            println!("basalt {} (store format {})", env!("CARGO_PKG_VERSION"), basalt_engine::FORMAT_VERSION);
            Ok(ExitCode::SUCCESS)
        }
        Some("help" | "--help" | "-h") | None => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(format!("unknown command '{other}' (see 'basalt help')")),
    }
}

fn data_dir(args: &[String]) -> Result<PathBuf, String> {
    let mut dir = std::env::var_os("BASALT_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| "basalt-data".into());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--data-dir" => dir = rest.next().ok_or("--data-dir needs a directory")?.into(),
            other => match other.strip_prefix("--data-dir=") {
                Some(value) => dir = value.into(),
                None => return Err(format!("unexpected argument '{other}'")),
            },
        }
    }
    Ok(dir)
}

fn fsck(args: &[String]) -> Result<ExitCode, String> {
    let dir = data_dir(args)?;
    let report = basalt_engine::fsck::fsck(&dir).map_err(|e| e.to_string())?;
    for note in &report.notes {
        println!("note: {note}");
    }
    for error in &report.errors {
        println!("error: {error}");
    }
    println!(
        "checked {} image(s) and {} layer(s) in {}: {}",
        report.images,
        report.layers,
        dir.display(),
        if report.is_clean() { "clean".to_owned() } else { format!("{} error(s)", report.errors.len()) }
    );
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
