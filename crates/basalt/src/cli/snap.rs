//! Snapshot commands (`snap create|ls|rename|protect|unprotect|rollback|rm|purge|limit`), `clone` and `children`.

use anyhow::Result;
use basalt_core::units::format_size;
use basalt_core::{ImageSpec, SnapName, parse_spec};
use serde_json::{Map, Value, json};

use super::api::{Api, Child, Image, decode, image_path, join_spec};
use super::error::Failure;
use super::http::encode_segment;
use super::image::{put_layout, put_namespace};
use super::output::{Align, Format, Table, print_json, print_text, show_time};
use super::spec::default_location;
use super::{ChildrenArgs, CloneArgs, SnapCommand, SnapLimitCommand, SnapRenameArgs};

fn snap_path(image: &ImageSpec, snap: &SnapName) -> String {
    format!("{}/snap/{}", image_path(image), encode_segment(snap.as_str()))
}

/// Runs a `snap` subcommand.
pub fn run(api: &Api, command: &SnapCommand) -> Result<()> {
    match command {
        SnapCommand::Create(a) => {
            let (image, snap) = a.spec.snap_spec()?;
            let path = format!("{}/snap", image_path(&image));
            api.call("POST", &path, Some(&json!({"snapshot_name": snap.as_str()})))?;
        }
        SnapCommand::Ls(a) => {
            let image = a.image.image_spec()?;
            let raw = api.get_value(&image_path(&image))?;
            let snapshots = raw.get("snapshots").cloned().unwrap_or(Value::Array(Vec::new()));
            if a.format == Format::Json {
                return print_json(&snapshots);
            }
            let info: Image = decode(raw, "the image")?;
            let mut snaps = info.snapshots;
            snaps.sort_by_key(|s| s.id);
            if snaps.is_empty() {
                return Ok(());
            }
            let mut table = Table::new(&[
                ("SNAPID", Align::Right),
                ("NAME", Align::Left),
                ("SIZE", Align::Right),
                ("PROTECTED", Align::Left),
                ("TIMESTAMP", Align::Left),
            ]);
            for s in snaps {
                table.row(vec![
                    s.id.to_string(),
                    s.name,
                    format_size(s.size),
                    if s.is_protected == Some(true) { "yes" } else { "" }.into(),
                    show_time(s.timestamp.as_deref()),
                ]);
            }
            table.print()?;
        }
        SnapCommand::Rename(a) => rename(api, a)?,
        SnapCommand::Protect(a) | SnapCommand::Unprotect(a) => {
            let (image, snap) = a.spec.snap_spec()?;
            let protect = matches!(command, SnapCommand::Protect(_));
            api.call("PUT", &snap_path(&image, &snap), Some(&json!({"is_protected": protect})))?;
        }
        SnapCommand::Rollback(a) => {
            let (image, snap) = a.spec.snap_spec()?;
            let path = format!("{}/rollback", snap_path(&image, &snap));
            api.long_call("POST", &path, None, "Rolling back to snapshot")?;
        }
        SnapCommand::Rm(a) => {
            let (image, snap) = a.spec.snap_spec()?;
            api.long_call("DELETE", &snap_path(&image, &snap), None, "Removing snap")?;
        }
        SnapCommand::Purge(a) => {
            let image = a.image.image_spec()?;
            let path = format!("{}/snap_purge", image_path(&image));
            api.long_call("POST", &path, None, "Removing all snapshots")?;
        }
        SnapCommand::Limit { command } => {
            let (image, limit) = match command {
                SnapLimitCommand::Set(a) => (a.image.image_spec()?, json!(a.limit)),
                SnapLimitCommand::Clear(a) => (a.image.image_spec()?, Value::Null),
            };
            let path = format!("{}/snap_limit", image_path(&image));
            api.call("PUT", &path, Some(&json!({ "limit": limit })))?;
        }
    }
    Ok(())
}

/// `snap rename image@old new` (or `image@new`, which must name the same image).
fn rename(api: &Api, a: &SnapRenameArgs) -> Result<()> {
    let (image, snap) = a.spec.snap_spec()?;
    let dest = match (a.dest.as_deref(), a.dest_snap.as_deref()) {
        (Some(_), Some(_)) => return Err(Failure::invalid("the new snapshot name is given twice").into()),
        (Some(d), None) | (None, Some(d)) => d,
        (None, None) => return Err(Failure::invalid("destination snapshot name was not specified").into()),
    };
    let new_name = if dest.contains('@') {
        // A full spec: fill in the source's pool and namespace when it names only `image@snap`.
        let full = if dest.contains('/') { dest.to_owned() } else { format!("{}/{dest}", image.location) };
        match parse_spec(&full).map_err(|e| Failure::core(&e))? {
            (dest_image, Some(new)) if dest_image == image => new,
            (_, Some(_)) => {
                return Err(Failure::invalid("source and destination image names must be the same").into());
            }
            (_, None) => return Err(Failure::invalid("destination snapshot name was not specified").into()),
        }
    } else {
        SnapName::new(dest).map_err(|e| Failure::core(&e))?
    };
    api.call("PUT", &snap_path(&image, &snap), Some(&json!({"new_snap_name": new_name.as_str()})))?;
    Ok(())
}

/// `clone parent@snap child`.
pub fn clone(api: &Api, a: &CloneArgs) -> Result<()> {
    let (parent, snap) = a.parent.snap_spec()?;
    let child = a.dest.dest_spec(&default_location()?)?;
    let mut body = Map::new();
    body.insert("child_pool_name".into(), json!(child.pool().as_str()));
    put_namespace(&mut body, "child_namespace", &child.location);
    body.insert("child_image_name".into(), json!(child.image.as_str()));
    put_layout(&mut body, &a.layout)?;
    let path = format!("{}/clone", snap_path(&parent, &snap));
    api.call("POST", &path, Some(&Value::Object(body)))?;
    Ok(())
}

/// `children [--all] spec@snap`.
pub fn children(api: &Api, a: &ChildrenArgs) -> Result<()> {
    let (image, snap) = a.spec.snap_spec()?;
    let path = format!("{}/children", snap_path(&image, &snap));
    let raw = api.get_value(&path)?;
    let list: Vec<Child> = decode(raw.clone(), &path)?;
    if a.format == Format::Json {
        let kept: Vec<Value> = raw
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| a.all || c.get("in_trash").and_then(Value::as_bool) != Some(true))
            .collect();
        return print_json(&Value::Array(kept));
    }
    let mut out = String::new();
    for child in list.iter().filter(|c| a.all || !c.in_trash) {
        let name = join_spec(&child.pool_name, child.namespace.as_deref().unwrap_or_default(), &child.image_name);
        if child.in_trash {
            out.push_str(&format!("{name} (trash {})\n", child.image_id.as_deref().unwrap_or("?")));
        } else {
            out.push_str(&format!("{name}\n"));
        }
    }
    print_text(&out)
}
