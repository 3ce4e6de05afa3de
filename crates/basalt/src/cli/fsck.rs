//! `basalt fsck` and `basalt upgrade`: check or upgrade a stopped store with the embedded engine directly (no server
//! involved).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::error::Failure;

/// Prints the notes and errors of the check and a summary line (images, layers and data blocks checked); exits 1 when the store is inconsistent.
pub fn run(dir: &Path) -> Result<ExitCode> {
    // Any failure to run the check at all exits 2, as before the CLI grew its other commands.
    let report = basalt_engine::fsck::fsck(dir).map_err(|e| Failure::new(2, e.to_string()))?;
    for note in &report.notes {
        println!("note: {note}");
    }
    for error in &report.errors {
        println!("error: {error}");
    }
    println!(
        "checked {} image(s), {} layer(s) and {} data block(s) in {}: {}",
        report.images,
        report.layers,
        report.blocks_checked,
        dir.display(),
        if report.is_clean() { "clean".to_owned() } else { format!("{} error(s)", report.errors.len()) }
    );
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Upgrades the store's format in place; exits 2 when it cannot (a running server holds the store, an unknown
/// version).
pub fn upgrade(dir: &Path) -> Result<ExitCode> {
    use basalt_engine::upgrade::Upgraded;
    let done = basalt_engine::upgrade::upgrade(dir).map_err(|e| Failure::new(2, e.to_string()))?;
    match done {
        Upgraded::From(old) => println!(
            "upgraded the store in {} from format {old} to format {}",
            dir.display(),
            basalt_engine::FORMAT_VERSION
        ),
        Upgraded::AlreadyCurrent => {
            println!("the store in {} already has format {}", dir.display(), basalt_engine::FORMAT_VERSION)
        }
    }
    Ok(ExitCode::SUCCESS)
}
