//! Running real NBD clients as subprocesses, with a time limit, failing loudly when one is not installed.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Longest a single client run may take before it is killed.
const TOOL_TIMEOUT_SECS: u32 = 120;

/// The Debian package that provides a client.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "qemu-img" | "qemu-io" => "qemu-utils",
        "nbdinfo" | "nbdcopy" => "libnbd-bin",
        "timeout" => "coreutils",
        _ => "(unknown package)",
    }
}

/// Finds a client on PATH; panics with the package to install when it is missing, so the test fails loudly
/// instead of skipping.
pub fn find(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{tool}` is not installed, and the NBD tests drive real clients: install it with \
         `apt-get install -y {}`",
        package_of(tool)
    );
}

/// Runs a client under `timeout` and returns its output, whatever its exit status.
pub fn run(tool: &str, args: &[&str]) -> Output {
    let program = find(tool);
    let output = Command::new(find("timeout"))
        .arg("--kill-after=5")
        .arg(TOOL_TIMEOUT_SECS.to_string())
        .arg(&program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {tool}: {err}"));
    if output.status.code() == Some(124) {
        panic!("{tool} {args:?} did not finish in {TOOL_TIMEOUT_SECS} s\n{}", describe(&output));
    }
    output
}

/// Runs a client that must succeed and returns its standard output.
pub fn run_ok(tool: &str, args: &[&str]) -> String {
    let output = run(tool, args);
    assert!(output.status.success(), "{tool} {args:?} failed\n{}", describe(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs qemu-io commands on a raw image; every command must succeed and every pattern must verify.
pub fn qemu_io(uri: &str, read_only: bool, commands: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    if read_only {
        args.push("-r");
    }
    for command in commands {
        args.extend(["-c", command]);
    }
    args.push(uri);
    let output = run("qemu-io", &args);
    let text = describe(&output);
    assert!(
        output.status.success()
            && !text.contains("Pattern verification failed")
            && !text.contains("Parsing error")
            && !text.contains("failed:"),
        "qemu-io {args:?} failed\n{text}"
    );
    text
}

/// Formats a run's exit status and both output streams for an assertion message.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
