//! `basalt device ...`: attach images to hosts and VMs, as `rbd device` does with rbd-nbd.
//!
//! `device map` connects a free `/dev/nbdX` to an export through the kernel's NBD netlink interface and leaves a
//! small daemon (see [`map`]) that replaces dead connections (`NBD_CMD_RECONFIGURE`, within the dead-connection
//! timeout) and relays TLS, which the kernel cannot speak. `device list` and `device unmap` read the daemons' state
//! files. `device connection` prints how to attach an image or snapshot (NBD URIs, QEMU, libvirt, `device map`,
//! `nbd-client`, credentials) from the API.

mod handshake;
mod map;
mod netlink;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::Global;
use super::api::image_path;
use super::output::{Format, print_json};
use super::spec::SnapArgs;

/// Device commands.
#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Map an image or snapshot to a /dev/nbdX block device (as root; needs the nbd kernel module) and print it
    Map(map::MapArgs),
    /// Unmap a device mapped by 'device map' (flushes first): unmap /dev/nbdX | SPEC
    #[command(visible_alias = "rm")]
    Unmap(map::UnmapArgs),
    /// List the devices mapped by 'device map'
    #[command(visible_alias = "ls")]
    List(map::ListArgs),
    /// How to attach an image or snapshot: NBD URIs, QEMU and libvirt lines, device map and nbd-client commands, and
    /// the credentials they need
    #[command(visible_alias = "connect-info")]
    Connection(ConnectionArgs),
}

/// `device connection`.
#[derive(Args, Debug)]
pub struct ConnectionArgs {
    #[command(flatten)]
    spec: SnapArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Runs a device command.
pub fn run(global: &Global, command: &DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Map(args) => map::map(global, args),
        DeviceCommand::Unmap(args) => map::unmap(args),
        DeviceCommand::List(args) => map::list(args),
        DeviceCommand::Connection(args) => connection(global, args),
    }
}

fn connection(global: &Global, args: &ConnectionArgs) -> Result<()> {
    let (image, snap) = args.spec.image_and_snap()?;
    let api = super::auth::connect(global)?;
    let mut path = format!("{}/connection", image_path(&image));
    if let Some(snap) = &snap {
        path.push_str(&format!("?snap={}", super::http::encode_segment(snap.as_str())));
    }
    let answer = api.get_value(&path)?;
    if args.format == Format::Json {
        return print_json(&answer);
    }
    print!("{}", connection_text(&answer));
    Ok(())
}

/// The plain layout: one labelled line per way to attach, then credentials and the warning.
fn connection_text(c: &Value) -> String {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let mut out = String::new();
    let access = if c["read_only"].as_bool() == Some(true) { "read-only" } else { "read-write" };
    out.push_str(&format!(
        "{} ({access}, {} bytes)\n",
        c["export_name"].as_str().unwrap_or_default(),
        c["size"].as_u64().unwrap_or_default()
    ));
    let mut line = |label: &str, value: Option<String>| {
        if let Some(value) = value {
            out.push_str(&format!("{label:<22}{value}\n"));
        }
    };
    line("NBD URI (TCP):", text(&c["uris"]["tcp"]));
    line("NBD URI (TLS):", text(&c["uris"]["tls"]));
    line("NBD URI (Unix):", text(&c["uris"]["unix"]));
    line("QEMU -drive:", text(&c["qemu"]["drive"]));
    line("QEMU -drive (Unix):", text(&c["qemu"]["drive_unix"]));
    line("QEMU -blockdev:", text(&c["qemu"]["blockdev"]));
    line("device map:", text(&c["device_map"]["tcp"]));
    line("device map (Unix):", text(&c["device_map"]["unix"]));
    line("nbd-client:", text(&c["nbd_client"]["tcp"]));
    line("nbd-client (Unix):", text(&c["nbd_client"]["unix"]));
    line("credentials (TCP):", text(&c["credentials"]["tcp"]));
    line("credentials (Unix):", text(&c["credentials"]["unix"]));
    line("your access:", text(&c["credentials"]["your_access"]));
    if let Some(xml) = text(&c["libvirt"]["tcp"]) {
        out.push_str("libvirt disk:\n");
        for l in xml.lines() {
            out.push_str(&format!("  {l}\n"));
        }
    }
    if let Some(warning) = text(&c["warning"]) {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}
