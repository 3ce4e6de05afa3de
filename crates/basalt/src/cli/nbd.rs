//! `basalt nbd cert issue USER --out DIR`: a TLS client certificate for NBD from basalt's own CA, written as qemu's
//! `tls-creds-x509` directory and libnbd's `tls-certificates=` directory expect it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::api::Api;
use super::error::Failure;
use super::http::encode_segment;

/// NBD commands.
#[derive(Subcommand, Debug)]
pub enum NbdCommand {
    /// TLS client certificates for the NBD listener (`serve --nbd-tls auto`)
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

/// Certificate commands.
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a client certificate naming USER; writes DIR/ca-cert.pem, DIR/client-cert.pem and DIR/client-key.pem
    Issue(IssueArgs),
}

/// `nbd cert issue`.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// The basalt user the certificate names; NBD clients using it get that user's access
    user: String,
    /// The directory to write the files into (created if missing)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Runs an NBD command.
pub fn run(api: &Api, command: &NbdCommand) -> Result<()> {
    let NbdCommand::Cert { command: CertCommand::Issue(args) } = command;
    let path = format!("/api/user/{}/nbd-certificate", encode_segment(&args.user));
    let answer = api.call("POST", &path, None)?;
    let field = |name: &str| {
        answer[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failure::new(1, format!("the server's answer to POST {path} has no {name}")))
    };
    let (ca, cert, key) = (field("ca_cert")?, field("client_cert")?, field("client_key")?);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write(&args.out.join("ca-cert.pem"), &ca, 0o644)?;
    write(&args.out.join("client-cert.pem"), &cert, 0o644)?;
    write(&args.out.join("client-key.pem"), &key, 0o600)?;
    println!(
        "wrote {dir}/ca-cert.pem, {dir}/client-cert.pem and {dir}/client-key.pem for user '{user}'",
        dir = args.out.display(),
        user = args.user
    );
    Ok(())
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("restricting {}", path.display()))?;
    file.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
