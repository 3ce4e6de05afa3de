//! Namespace, pool and configuration commands.

use anyhow::Result;
use basalt_core::units::format_size;
use basalt_core::{ErrorKind, PoolName};
use serde_json::{Value, json};

use super::api::{Api, ConfigEntry, NamespaceEntry, Pool, decode, image_path};
use super::error::Failure;
use super::http::encode_segment;
use super::output::{Align, Format, Table, print_json, print_text};
use super::spec::ImageArgs;
use super::{ConfigAction, ConfigCommand, NamespaceCommand, PoolApplicationCommand, PoolCommand};

fn pool_name(text: &str) -> Result<PoolName, Failure> {
    PoolName::new(text).map_err(|e| Failure::core(&e))
}

/// Runs a `namespace` subcommand.
pub fn namespace(api: &Api, command: &NamespaceCommand) -> Result<()> {
    match command {
        NamespaceCommand::Create(a) | NamespaceCommand::Rm(a) => {
            let location = a.location.pool_ns()?;
            if location.namespace.is_default() {
                return Err(Failure::invalid("namespace name was not specified (use pool/namespace)").into());
            }
            let base = format!("/api/block/pool/{}/namespace", encode_segment(location.pool.as_str()));
            if matches!(command, NamespaceCommand::Create(_)) {
                api.call("POST", &base, Some(&json!({"namespace": location.namespace.as_str()})))?;
            } else {
                api.call("DELETE", &format!("{base}/{}", encode_segment(location.namespace.as_str())), None)?;
            }
            Ok(())
        }
        NamespaceCommand::Ls(a) => {
            let location = a.location.pool_ns()?;
            if !location.namespace.is_default() {
                return Err(Failure::invalid("namespace ls takes a pool, not pool/namespace").into());
            }
            let path = format!("/api/block/pool/{}/namespace", encode_segment(location.pool.as_str()));
            let raw = api.get_value(&path)?;
            if a.format == Format::Json {
                return print_json(&raw);
            }
            let mut list: Vec<NamespaceEntry> = decode(raw, &path)?;
            list.sort_by(|x, y| x.namespace.cmp(&y.namespace));
            if list.is_empty() {
                return Ok(());
            }
            let mut table = Table::new(&[("NAME", Align::Left), ("IMAGES", Align::Right)]);
            for ns in list {
                table.row(vec![ns.namespace, ns.num_images.map(|n| n.to_string()).unwrap_or_default()]);
            }
            table.print()
        }
    }
}

/// Which configuration level a command addresses, with its API path.
struct ConfigTarget {
    level: &'static str,
    path: String,
}

/// Splits `[ENTITY] KEY [VALUE]` for a level, taking the entity from the options when they give it.
fn config_target(
    command: &ConfigCommand,
    args: &[String],
    keys: usize,
    pool: &Option<String>,
    namespace: &Option<String>,
    image: &Option<String>,
) -> Result<(ConfigTarget, Vec<String>), Failure> {
    let (entity, rest) = match args.len() {
        n if n == keys => (None, args.to_vec()),
        n if n == keys + 1 => (Some(args[0].clone()), args[1..].to_vec()),
        _ => {
            let shape = if keys == 2 { "KEY VALUE" } else { "KEY" };
            return Err(Failure::invalid(format!("expected [ENTITY] {shape}, got {} argument(s)", args.len())));
        }
    };
    let target = match command {
        ConfigCommand::Global { .. } => {
            if let Some(entity) = entity.filter(|e| e != "global") {
                return Err(Failure::invalid(format!("invalid config entity '{entity}': only 'global' is supported")));
            }
            ConfigTarget { level: "global", path: "/api/block/config/global".into() }
        }
        ConfigCommand::Pool { .. } => {
            let name = match (entity, pool.as_deref().filter(|p| !p.is_empty())) {
                (Some(e), Some(p)) if e != p => {
                    return Err(Failure::invalid(format!("the pool is given twice: '{e}' and --pool '{p}'")));
                }
                (Some(e), _) => e,
                (None, Some(p)) => p.to_owned(),
                (None, None) => return Err(Failure::invalid("pool name was not specified")),
            };
            let pool = pool_name(&name)?;
            ConfigTarget { level: "pool", path: format!("/api/block/config/pool/{}", encode_segment(pool.as_str())) }
        }
        ConfigCommand::Image { .. } => {
            let spec =
                ImageArgs { spec: entity, pool: pool.clone(), namespace: namespace.clone(), image: image.clone() }
                    .image_spec()?;
            let encoded = image_path(&spec).replacen("/api/block/image/", "", 1);
            ConfigTarget { level: "image", path: format!("/api/block/config/image/{encoded}") }
        }
    };
    Ok((target, rest))
}

/// Runs a `config` subcommand.
pub fn config(api: &Api, command: &ConfigCommand) -> Result<()> {
    let action = match command {
        ConfigCommand::Global { command } | ConfigCommand::Pool { command } | ConfigCommand::Image { command } => {
            command
        }
    };
    match action {
        ConfigAction::List(a) => {
            let args: Vec<String> = a.entity.iter().cloned().collect();
            let (target, _) = config_target(command, &args, 0, &a.pool, &a.namespace, &a.image)?;
            let raw = api.get_value(&target.path)?;
            if a.format == Format::Json {
                return print_json(&raw);
            }
            let entries: Vec<ConfigEntry> = decode(raw, &target.path)?;
            let mut table = Table::new(&[("Name", Align::Left), ("Value", Align::Left), ("Source", Align::Left)]);
            for e in &entries {
                table.row(vec![e.name.clone(), e.value_text(), e.source_text()]);
            }
            table.print()
        }
        ConfigAction::Get(a) => {
            let (target, rest) = config_target(command, &a.args, 1, &a.pool, &a.namespace, &a.image)?;
            let key = &rest[0];
            let entries: Vec<ConfigEntry> = api.get(&target.path)?;
            let entry = entries
                .iter()
                .find(|e| &e.name == key)
                .ok_or_else(|| Failure::invalid(format!("invalid config key: {key}")))?;
            // rbd prints only what is set at the level asked about; inherited values are "not set" there.
            if target.level != "global" && entry.source_text() != target.level {
                return Err(Failure::kind(ErrorKind::NotFound, format!("{key} is not set")).into());
            }
            print_text(&format!("{}\n", entry.value_text()))
        }
        ConfigAction::Set(a) => {
            let (target, rest) = config_target(command, &a.args, 2, &a.pool, &a.namespace, &a.image)?;
            api.call("PUT", &target.path, Some(&json!({"name": rest[0], "value": rest[1]})))?;
            Ok(())
        }
        ConfigAction::Rm(a) => {
            let (target, rest) = config_target(command, &a.args, 1, &a.pool, &a.namespace, &a.image)?;
            api.call("PUT", &target.path, Some(&json!({"name": rest[0], "value": Value::Null})))?;
            Ok(())
        }
    }
}

/// Runs a `pool` subcommand.
pub fn pool(api: &Api, command: &PoolCommand) -> Result<()> {
    match command {
        PoolCommand::Create(a) => {
            let name = pool_name(&a.pool)?;
            let mut body = json!({ "pool": name.as_str() });
            if !a.applications.is_empty() {
                body["application_metadata"] = json!(a.applications);
            }
            api.call("POST", "/api/pool", Some(&body))?;
            Ok(())
        }
        PoolCommand::Ls(a) => {
            let raw = api.get_value("/api/pool")?;
            if a.format == Format::Json {
                return print_json(&raw);
            }
            let mut pools: Vec<Pool> = decode(raw, "/api/pool")?;
            pools.sort_by(|x, y| x.pool_name.cmp(&y.pool_name));
            if !a.long {
                let text: String = pools.iter().map(|p| format!("{}\n", p.pool_name)).collect();
                return print_text(&text);
            }
            let mut table = Table::new(&[
                ("NAME", Align::Left),
                ("ID", Align::Right),
                ("APPLICATIONS", Align::Left),
                ("HEALTH", Align::Left),
                ("IMAGES", Align::Right),
                ("PROVISIONED", Align::Right),
                ("USED", Align::Right),
            ]);
            for p in pools {
                let stats = p.stats.as_ref();
                table.row(vec![
                    p.pool_name.clone(),
                    p.pool.map(|id| id.to_string()).unwrap_or_default(),
                    p.application_metadata.join(","),
                    p.health.clone().unwrap_or_default(),
                    stats.and_then(|s| s.image_count).map(|n| n.to_string()).unwrap_or_default(),
                    stats.and_then(|s| s.provisioned_bytes).map(format_size).unwrap_or_default(),
                    stats.and_then(|s| s.used_bytes).map(format_size).unwrap_or_default(),
                ]);
            }
            table.print()
        }
        PoolCommand::Rm(a) => {
            let name = pool_name(&a.pool)?;
            api.call("DELETE", &format!("/api/pool/{}", encode_segment(name.as_str())), None)?;
            Ok(())
        }
        PoolCommand::Application { command } => {
            let (a, enable) = match command {
                PoolApplicationCommand::Enable(a) => (a, true),
                PoolApplicationCommand::Disable(a) => (a, false),
            };
            let name = pool_name(&a.pool)?;
            let pools: Vec<Pool> = api.get("/api/pool")?;
            let pool = pools
                .into_iter()
                .find(|p| p.pool_name == name.as_str())
                .ok_or_else(|| Failure::kind(ErrorKind::NotFound, format!("pool '{name}' does not exist")))?;
            let mut apps = pool.application_metadata;
            if enable {
                if !apps.contains(&a.app) {
                    apps.push(a.app.clone());
                }
            } else {
                apps.retain(|x| x != &a.app);
            }
            let path = format!("/api/pool/{}", encode_segment(name.as_str()));
            api.call("PUT", &path, Some(&json!({ "application_metadata": apps })))?;
            Ok(())
        }
        PoolCommand::SetQuota(a) => {
            let name = pool_name(&a.pool)?;
            let value = if a.field == "max_bytes" {
                basalt_core::units::parse_size(&a.value, 1).map_err(|e| Failure::core(&e))?
            } else {
                a.value.trim().parse::<u64>().map_err(|_| {
                    Failure::invalid(format!("invalid max_objects '{}': expected a whole number", a.value))
                })?
            };
            let field = format!("quota_{}", a.field);
            let path = format!("/api/pool/{}", encode_segment(name.as_str()));
            api.call("PUT", &path, Some(&json!({ field: value })))?;
            Ok(())
        }
        PoolCommand::GetQuota(a) => {
            let name = pool_name(&a.pool)?;
            let pools: Vec<Pool> = api.get("/api/pool")?;
            let pool = pools
                .into_iter()
                .find(|p| p.pool_name == name.as_str())
                .ok_or_else(|| Failure::kind(ErrorKind::NotFound, format!("pool '{name}' does not exist")))?;
            let objects = match pool.quota_max_objects {
                0 => "N/A".to_owned(),
                n => format!("{n} objects"),
            };
            let bytes = match pool.quota_max_bytes {
                0 => "N/A".to_owned(),
                n => format_size(n),
            };
            print_text(&format!("quotas for pool '{name}':\n  max objects: {objects}\n  max bytes  : {bytes}\n"))
        }
    }
}
