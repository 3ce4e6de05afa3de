//! Image commands: create, ls, info, resize, rename, rm, cp, deep cp, flatten, du, diff, feature enable/disable.

use anyhow::Result;
use basalt_core::units::{format_size, parse_size};
use basalt_core::{ErrorKind, Features, ImageSpec, PoolNs};
use serde_json::{Map, Value, json};

use super::api::{self, Api, DiffExtent, DuEntry, Image, decode, image_path};
use super::error::Failure;
use super::http::query;
use super::output::{Align, Format, Table, print_json, print_text, show_time};
use super::spec::{ImageArgs, default_location};
use super::{
    CopyArgs, CreateArgs, DeepCopyArgs, DiffArgs, DuArgs, FeatureArgs, FeatureCommand, InfoArgs, LayoutArgs, LsArgs,
    RenameArgs, ResizeArgs,
};

/// rbd takes a bare `--size` number as MiB.
const SIZE_DEFAULT_UNIT: u64 = 1 << 20;

fn size_arg(text: &str, default_unit: u64) -> Result<u64, Failure> {
    parse_size(text, default_unit).map_err(|e| Failure::core(&e))
}

/// Adds the namespace to a request body when it is not the default one.
pub(super) fn put_namespace(body: &mut Map<String, Value>, key: &str, location: &PoolNs) {
    if !location.namespace.is_default() {
        body.insert(key.into(), json!(location.namespace.as_str()));
    }
}

/// Adds `obj_size`, `features`, `stripe_unit`, `stripe_count` from the layout options.
pub(super) fn put_layout(body: &mut Map<String, Value>, layout: &LayoutArgs) -> Result<(), Failure> {
    if let Some(size) = &layout.object_size {
        body.insert("obj_size".into(), json!(size_arg(size, 1)?));
    }
    if !layout.image_features.is_empty() {
        // Checked here so a typo is refused before anything is sent; the server applies the dependency rules.
        let features = Features::from_names(&layout.image_features).map_err(|e| Failure::core(&e))?;
        body.insert("features".into(), json!(features.names()));
    }
    match (&layout.stripe_unit, layout.stripe_count) {
        (Some(unit), Some(count)) => {
            body.insert("stripe_unit".into(), json!(size_arg(unit, 1)?));
            body.insert("stripe_count".into(), json!(count));
        }
        (None, None) => {}
        _ => return Err(Failure::invalid("must specify both (or neither) of stripe-unit and stripe-count")),
    }
    Ok(())
}

/// `create --size S [layout] spec`.
pub fn create(api: &Api, a: &CreateArgs) -> Result<()> {
    let spec = a.image.image_spec()?;
    let size = size_arg(&a.size, SIZE_DEFAULT_UNIT)?;
    match a.image_format {
        None | Some(2) => {}
        Some(1) => {
            return Err(Failure::invalid("image format 1 is not supported: basalt creates format 2 images").into());
        }
        Some(n) => return Err(Failure::invalid(format!("invalid image format {n}: only format 2 exists")).into()),
    }
    let mut body = Map::new();
    body.insert("name".into(), json!(spec.image.as_str()));
    body.insert("pool_name".into(), json!(spec.pool().as_str()));
    put_namespace(&mut body, "namespace", &spec.location);
    body.insert("size".into(), json!(size));
    put_layout(&mut body, &a.layout)?;
    if let Some(pool) = a.data_pool.as_deref().filter(|p| !p.is_empty()) {
        body.insert("data_pool".into(), json!(pool));
    }
    api.call("POST", "/api/block/image", Some(&Value::Object(body)))?;
    Ok(())
}

/// Lists the images of a location as raw API objects, keeping only that pool and namespace even should the server
/// answer with more.
fn list_images(api: &Api, location: &PoolNs) -> Result<Vec<Value>> {
    // An empty namespace asks for the default one only (absent would mean every namespace of the pool).
    let pairs = [("pool_name", location.pool.as_str()), ("namespace", location.namespace.as_str())];
    let path = format!("/api/block/image{}", query(&pairs));
    let listing = api.get_value(&path)?;
    let Value::Array(items) = listing else {
        return Err(Failure::new(1, format!("unexpected answer from the server for {path}: expected a list")).into());
    };
    let wanted_ns = location.namespace.as_str();
    Ok(items
        .into_iter()
        .filter(|item| {
            let pool = item.get("pool_name").and_then(Value::as_str);
            let ns = item.get("namespace").and_then(Value::as_str).unwrap_or_default();
            pool == Some(location.pool.as_str()) && ns == wanted_ns
        })
        .collect())
}

fn lock_column(image: &Image) -> String {
    let exclusive = Features::from_bits(image.features).is_ok_and(|f| f.contains(Features::EXCLUSIVE_LOCK));
    if exclusive && image.watchers.iter().any(|w| w.writable) { "excl".into() } else { String::new() }
}

/// `ls [-l] [--format] [pool[/ns]]`.
pub fn ls(api: &Api, a: &LsArgs) -> Result<()> {
    let location = a.location.pool_ns()?;
    let items = list_images(api, &location)?;
    if a.format == Format::Json {
        return print_json(&Value::Array(items));
    }
    let mut images: Vec<Image> = decode(Value::Array(items), "the image list")?;
    images.sort_by(|x, y| x.name.cmp(&y.name));
    if !a.long {
        let names: String = images.iter().map(|i| format!("{}\n", i.name)).collect();
        return print_text(&names);
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("SIZE", Align::Right),
        ("PARENT", Align::Left),
        ("FMT", Align::Right),
        ("PROT", Align::Left),
        ("LOCK", Align::Left),
        ("STATUS", Align::Left),
    ]);
    for image in &images {
        let parent = image.parent.as_ref().map(api::Parent::spec).unwrap_or_default();
        let format = image.image_format.unwrap_or(2).to_string();
        // An image whose information cannot be read has no object size: its size is unknown.
        let size = if image.obj_size == 0 { "?".to_owned() } else { format_size(image.size) };
        table.row(vec![
            image.name.clone(),
            size,
            parent.clone(),
            format.clone(),
            String::new(),
            lock_column(image),
            image.status.clone().unwrap_or_else(|| "OK".into()),
        ]);
        let mut snaps = image.snapshots.clone();
        snaps.sort_by_key(|s| s.id);
        for snap in snaps {
            let protected = if snap.is_protected == Some(true) { "yes" } else { "" };
            table.row(vec![
                format!("{}@{}", image.name, snap.name),
                format_size(snap.size),
                parent.clone(),
                format.clone(),
                protected.into(),
                String::new(),
                String::new(),
            ]);
        }
    }
    if table.is_empty() {
        return Ok(());
    }
    table.print()
}

/// Feature names in bit order, as rbd prints them (`layering, exclusive-lock, ...`).
fn feature_list(bits: u64) -> String {
    (0..64)
        .map(|bit| bits & (1u64 << bit))
        .filter(|&b| b != 0)
        .filter_map(|b| Features::from_bits(b).ok())
        .flat_map(Features::names)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `info [--format json] spec[@snap]`.
pub fn info(api: &Api, a: &InfoArgs) -> Result<()> {
    let (spec, snap) = a.spec.image_and_snap()?;
    let value = api.get_value(&image_path(&spec))?;
    let image: Image = decode(value.clone(), "the image")?;
    let snapshot =
        match &snap {
            Some(name) => Some(image.snapshots.iter().find(|s| s.name == name.as_str()).cloned().ok_or_else(|| {
                Failure::kind(ErrorKind::NotFound, format!("snapshot '{spec}@{name}' does not exist"))
            })?),
            None => None,
        };
    let (size, num_objs) = match &snapshot {
        Some(s) => (s.size, s.size.div_ceil(image.obj_size.max(1))),
        None => (image.size, image.num_objs),
    };
    if a.format == Format::Json {
        let mut value = value;
        if let (Some(snap), Value::Object(map)) = (&snap, &mut value) {
            // The API has no snapshot object of its own: show the image at the snapshot, with the snapshot.
            let raw = map.get("snapshots").and_then(Value::as_array).and_then(|list| {
                list.iter().find(|s| s.get("name").and_then(Value::as_str) == Some(snap.as_str())).cloned()
            });
            map.insert("size".into(), json!(size));
            map.insert("num_objs".into(), json!(num_objs));
            map.insert("snapshot".into(), raw.unwrap_or(Value::Null));
        }
        return print_json(&value);
    }
    let mut out = String::new();
    out.push_str(&format!("rbd image '{}':\n", image.name));
    out.push_str(&format!("\tsize {} in {num_objs} objects\n", format_size(size)));
    out.push_str(&format!("\torder {} ({} objects)\n", image.order, format_size(image.obj_size)));
    out.push_str(&format!("\tsnapshot_count: {}\n", image.snapshot_count.unwrap_or(image.snapshots.len() as u64)));
    out.push_str(&format!("\tid: {}\n", image.id));
    if let Some(pool) = image.data_pool.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(&format!("\tdata_pool: {pool}\n"));
    }
    out.push_str(&format!("\tblock_name_prefix: {}\n", image.block_name_prefix));
    out.push_str(&format!("\tformat: {}\n", image.image_format.unwrap_or(2)));
    out.push_str(&format!("\tfeatures: {}\n", feature_list(image.features)));
    out.push_str("\top_features: \n");
    out.push_str("\tflags: \n");
    out.push_str(&format!("\tcreate_timestamp: {}\n", show_time(image.timestamp.as_deref())));
    out.push_str(&format!("\tmodify_timestamp: {}\n", show_time(image.modify_timestamp.as_deref())));
    if let Some(status) = &image.status {
        match &image.status_detail {
            Some(detail) => out.push_str(&format!("\tstatus: {status} ({detail})\n")),
            None => out.push_str(&format!("\tstatus: {status}\n")),
        }
    }
    if let Some(s) = &snapshot {
        out.push_str(&format!("\tprotected: {}\n", if s.is_protected == Some(true) { "True" } else { "False" }));
    }
    if let Some(parent) = &image.parent {
        let trash = if parent.in_trash { " (trash)" } else { "" };
        out.push_str(&format!("\tparent: {}{trash}\n", parent.spec()));
        if let Some(overlap) = parent.overlap {
            out.push_str(&format!("\toverlap: {}\n", format_size(overlap)));
        }
    }
    let striped = Features::from_bits(image.features).is_ok_and(|f| f.contains(Features::STRIPING));
    if striped {
        out.push_str(&format!("\tstripe unit: {}\n", format_size(image.stripe_unit.unwrap_or(image.obj_size))));
        out.push_str(&format!("\tstripe count: {}\n", image.stripe_count.unwrap_or(1)));
    }
    print_text(&out)
}

/// `resize --size S [--allow-shrink] spec`.
pub fn resize(api: &Api, a: &ResizeArgs) -> Result<()> {
    let spec = a.image.image_spec()?;
    let size = size_arg(&a.size, SIZE_DEFAULT_UNIT)?;
    let path = image_path(&spec);
    let image: Image = api.get(&path)?;
    // rbd checks both before asking librbd, with these messages.
    if size == image.size {
        return Err(Failure::invalid("new size is equal to original size").into());
    }
    if size < image.size && !a.allow_shrink {
        return Err(Failure::invalid("shrinking an image is only allowed with the --allow-shrink flag").into());
    }
    api.long_call("PUT", &path, Some(&json!({"size": size, "allow_shrink": a.allow_shrink})), "Resizing image")?;
    Ok(())
}

/// `rename src dest`: within the source's pool and namespace.
pub fn rename(api: &Api, a: &RenameArgs) -> Result<()> {
    let source = a.image.image_spec()?;
    let dest = a.dest.dest_spec(&source.location)?;
    if dest.pool() != source.pool() {
        return Err(Failure::invalid("mv/rename across pools not supported").into());
    }
    if dest.namespace() != source.namespace() {
        return Err(Failure::invalid("mv/rename across namespaces not supported").into());
    }
    api.call("PUT", &image_path(&source), Some(&json!({"name": dest.image.as_str()})))?;
    Ok(())
}

/// `rm spec`.
pub fn rm(api: &Api, a: &ImageArgs) -> Result<()> {
    let spec = a.image_spec()?;
    api.long_call("DELETE", &image_path(&spec), None, "Removing image")?;
    Ok(())
}

fn dest_body(dest: &ImageSpec) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("dest_pool_name".into(), json!(dest.pool().as_str()));
    put_namespace(&mut body, "dest_namespace", &dest.location);
    body.insert("dest_image_name".into(), json!(dest.image.as_str()));
    body
}

/// `cp src[@snap] dest`: a standalone copy of the head or of one snapshot.
pub fn copy(api: &Api, a: &CopyArgs) -> Result<()> {
    let (source, snap) = a.source.image_and_snap()?;
    let dest = a.dest.dest_spec(&default_location()?)?;
    let mut body = dest_body(&dest);
    if let Some(snap) = &snap {
        body.insert("snapshot_name".into(), json!(snap.as_str()));
    }
    put_layout(&mut body, &a.layout)?;
    let path = format!("{}/copy", image_path(&source));
    api.long_call("POST", &path, Some(&Value::Object(body)), "Image copy")?;
    Ok(())
}

/// `deep cp src dest`: the image with all its snapshots.
pub fn deep_copy(api: &Api, a: &DeepCopyArgs) -> Result<()> {
    let source = a.source.image_spec()?;
    let dest = a.dest.dest_spec(&default_location()?)?;
    let path = format!("{}/deep_copy", image_path(&source));
    api.long_call("POST", &path, Some(&Value::Object(dest_body(&dest))), "Image deep copy")?;
    Ok(())
}

/// `flatten spec`.
pub fn flatten(api: &Api, a: &ImageArgs) -> Result<()> {
    let spec = a.image_spec()?;
    api.long_call("POST", &format!("{}/flatten", image_path(&spec)), None, "Image flatten")?;
    Ok(())
}

/// `du [spec[@snap]]`: one image, or every image of the pool.
pub fn du(api: &Api, a: &DuArgs) -> Result<()> {
    let whole_pool =
        a.spec.spec.as_deref().is_none_or(str::is_empty) && a.spec.image.as_deref().is_none_or(str::is_empty);
    let targets: Vec<(ImageSpec, Option<String>)> = if whole_pool {
        let location =
            super::spec::PoolNsArgs { spec: None, pool: a.spec.pool.clone(), namespace: a.spec.namespace.clone() }
                .pool_ns()?;
        let images: Vec<Image> = decode(Value::Array(list_images(api, &location)?), "the image list")?;
        let mut names: Vec<String> = images.into_iter().map(|i| i.name).collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let image = basalt_core::ImageName::new(name).map_err(|e| Failure::core(&e))?;
                Ok((ImageSpec::new(location.pool.clone(), location.namespace.clone(), image), None))
            })
            .collect::<Result<_, Failure>>()?
    } else {
        let (spec, snap) = a.spec.image_and_snap()?;
        vec![(spec, snap.map(|s| s.to_string()))]
    };
    let mut json_rows = Vec::new();
    let mut table = Table::new(&[("NAME", Align::Left), ("PROVISIONED", Align::Right), ("USED", Align::Right)]);
    let (mut total_provisioned, mut total_used) = (0u64, 0u64);
    for (spec, snap) in &targets {
        let path = format!("{}/du", image_path(spec));
        let raw = api.get_value(&path)?;
        let entries: Vec<DuEntry> = decode(raw.clone(), &path)?;
        let raw_entries = raw.as_array().cloned().unwrap_or_default();
        for (entry, raw_entry) in entries.iter().zip(raw_entries) {
            if snap.is_some() && entry.snapshot != *snap {
                continue;
            }
            let name = match &entry.snapshot {
                Some(s) => format!("{}@{s}", spec.image),
                None => spec.image.to_string(),
            };
            // rbd's total counts each image's size once (its head) and every snapshot's own usage.
            if entry.snapshot.is_none() || snap.is_some() {
                total_provisioned = total_provisioned.saturating_add(entry.provisioned_bytes);
            }
            total_used = total_used.saturating_add(entry.used_bytes);
            table.row(vec![name, format_size(entry.provisioned_bytes), format_size(entry.used_bytes)]);
            let mut row = raw_entry;
            if let Value::Object(map) = &mut row {
                map.insert("name".into(), json!(spec.image.as_str()));
            }
            json_rows.push(row);
        }
    }
    if a.format == Format::Json {
        return print_json(&Value::Array(json_rows));
    }
    table.row(vec!["<TOTAL>".into(), format_size(total_provisioned), format_size(total_used)]);
    table.print()
}

/// `scrub [spec]`: one image, or every image of the store, checked against its checksums; fails (exit 1) when a block
/// is damaged.
pub fn scrub(api: &Api, a: &ImageArgs, format: Format) -> Result<()> {
    let whole_store = a.spec.as_deref().is_none_or(str::is_empty) && a.image.as_deref().is_none_or(str::is_empty);
    let path =
        if whole_store { "/api/block/scrub".to_owned() } else { format!("{}/scrub", image_path(&a.image_spec()?)) };
    let answer = api.long_call("POST", &path, None, "Scrub")?;
    // A scrub that outlived the synchronous wait answers with its finished task, which holds the report.
    let report = match answer.get("ret_value") {
        Some(value) if answer.get("blocks_checked").is_none() => value.clone(),
        _ => answer,
    };
    let errors = report.get("errors").and_then(Value::as_array).cloned().unwrap_or_default();
    if format == Format::Json {
        print_json(&report)?;
    } else {
        let n = |key: &str| report.get(key).and_then(Value::as_u64).unwrap_or(0);
        println!(
            "scrubbed {} image(s): {} block(s), {} checked, {} damaged",
            n("images"),
            n("blocks_checked"),
            format_size(n("bytes_checked")),
            errors.len()
        );
        if !errors.is_empty() {
            let mut table = Table::new(&[("IMAGE", Align::Left), ("VIEW", Align::Left), ("OFFSET", Align::Right)]);
            for e in &errors {
                let text = |key: &str| e.get(key).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                table.row(vec![
                    text("image_spec").unwrap_or_default(),
                    text("view").unwrap_or_default(),
                    text("offset").unwrap_or_default(),
                ]);
            }
            table.print()?;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(1, format!("{} damaged block(s): their data does not match its checksum", errors.len()))
            .into())
    }
}

/// `diff [--from-snap S] [--whole-object] spec[@snap]`.
pub fn diff(api: &Api, a: &DiffArgs) -> Result<()> {
    let (spec, to_snap) = a.spec.image_and_snap()?;
    let from = a.from_snap.as_deref().filter(|s| !s.is_empty()).map(basalt_core::SnapName::new).transpose();
    let from = from.map_err(|e| Failure::core(&e))?;
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(from) = &from {
        pairs.push(("from_snap", from.as_str()));
    }
    if let Some(to) = &to_snap {
        pairs.push(("to_snap", to.as_str()));
    }
    pairs.push(("whole_object", if a.whole_object { "true" } else { "false" }));
    let path = format!("{}/diff{}", image_path(&spec), query(&pairs));
    let raw = api.get_value(&path)?;
    if a.format == Format::Json {
        return print_json(&raw);
    }
    let extents: Vec<DiffExtent> = decode(raw, "the diff")?;
    let mut table = Table::new(&[("Offset", Align::Left), ("Length", Align::Left), ("Type", Align::Left)]);
    for e in &extents {
        table.row(vec![e.offset.to_string(), e.length.to_string(), if e.exists { "data" } else { "zero" }.into()]);
    }
    table.print()
}

/// `feature enable|disable spec F...`: sends the full wanted feature set, as the API's PUT takes it.
pub fn feature(api: &Api, command: &FeatureCommand) -> Result<()> {
    let (a, enable): (&FeatureArgs, bool) = match command {
        FeatureCommand::Enable(a) => (a, true),
        FeatureCommand::Disable(a) => (a, false),
    };
    // The image comes first unless --image names it; the rest are features.
    let (spec_text, names) = match a.image.as_deref().filter(|i| !i.is_empty()) {
        Some(_) => (None, &a.args[..]),
        None => (a.args.first().cloned(), a.args.get(1..).unwrap_or_default()),
    };
    let image =
        ImageArgs { spec: spec_text, pool: a.pool.clone(), namespace: a.namespace.clone(), image: a.image.clone() };
    let spec = image.image_spec()?;
    let mut requested = Features::from_names(names).map_err(|e| Failure::core(&e))?;
    if requested.is_empty() {
        return Err(Failure::invalid("at least one feature name must be specified").into());
    }
    let path = image_path(&spec);
    let image: Image = api.get(&path)?;
    let current = Features::from_bits(image.features).map_err(|e| Failure::core(&e))?;
    for name in requested.names() {
        let feature = Features::from_name(name).map_err(|e| Failure::core(&e))?;
        if enable && current.contains(feature) {
            return Err(Failure::invalid(format!("feature '{name}' is already enabled on '{spec}'")).into());
        }
        if !enable && !current.contains(feature) {
            return Err(Failure::invalid(format!("feature '{name}' is already disabled on '{spec}'")).into());
        }
    }
    // object-map and fast-diff are always switched together, as in the reference.
    let pair = Features::OBJECT_MAP.union(Features::FAST_DIFF);
    if requested.intersects(pair) {
        requested = requested.union(pair);
    }
    let wanted = if enable { current.union(requested) } else { current.difference(requested) };
    api.call("PUT", &path, Some(&json!({"features": wanted.names()})))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_print_in_bit_order() {
        assert_eq!(feature_list(61), "layering, exclusive-lock, object-map, fast-diff, deep-flatten");
        assert_eq!(feature_list(0), "");
    }

    #[test]
    fn stripe_options_come_in_pairs() {
        let mut body = Map::new();
        let layout = LayoutArgs { stripe_unit: Some("64K".into()), ..LayoutArgs::default() };
        assert_eq!(put_layout(&mut body, &layout).expect_err("unit alone").exit_code, 22);
        let layout = LayoutArgs {
            object_size: Some("8M".into()),
            image_features: vec!["layering,exclusive-lock".into()],
            stripe_unit: Some("64K".into()),
            stripe_count: Some(4),
        };
        put_layout(&mut body, &layout).expect("valid layout");
        assert_eq!(body["obj_size"], json!(8 << 20));
        assert_eq!(body["stripe_unit"], json!(65536));
        assert_eq!(body["features"], json!(["exclusive-lock", "layering"]));
        let layout = LayoutArgs { image_features: vec!["bogus".into()], ..LayoutArgs::default() };
        assert!(put_layout(&mut body, &layout).is_err());
    }
}
