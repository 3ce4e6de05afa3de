//! `basalt serve --ceph-conf` against a real cluster: the seed's workflow and its refusals through the REST API,
//! checked against what the `rbd` CLI sees; rbd diff streams exchanged both ways with the real `rbd export-diff` and
//! `rbd import-diff`; the NBD gateway driven by qemu-img and nbdinfo; and two servers sharing their users, sessions
//! and images through one cluster.
//!
//! The cluster comes from `BASALT_CEPH_CONF` (client id `BASALT_CEPH_ID`, default `admin`), for example the
//! throw-away one of `scripts/ceph/micro-ceph.sh start DIR`. Without it each test says it was skipped, unless
//! `BASALT_REQUIRE_CEPH=1`, which makes a missing cluster a failure. Every test works in pools of its own (data and
//! server records), created with the `ceph` CLI and deleted when the test ends, so tests run in parallel and leave
//! nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use basalt_core::rbd_diff::DiffRecord;
use serde_json::{Value, json};

use crate::api::{ADMIN_PASSWORD, Server, call, call_bytes, login, start_with, wait_task};
use crate::transfer::{apply, encode};

const MIB: u64 = 1 << 20;

/// The cluster named by the environment.
struct Cluster {
    conf: PathBuf,
    id: String,
}

/// The cluster to test against, or `None` after saying the test is skipped.
fn cluster(test: &str) -> Option<Cluster> {
    match std::env::var_os("BASALT_CEPH_CONF") {
        Some(conf) => {
            let id = std::env::var("BASALT_CEPH_ID").unwrap_or_else(|_| "admin".to_owned());
            Some(Cluster { conf: PathBuf::from(conf), id })
        }
        None => {
            assert!(
                std::env::var("BASALT_REQUIRE_CEPH").map_or(true, |v| v != "1"),
                "BASALT_REQUIRE_CEPH=1 but BASALT_CEPH_CONF is unset"
            );
            eprintln!(
                "skipped {test}: set BASALT_CEPH_CONF to a cluster's ceph.conf (scripts/ceph/micro-ceph.sh start DIR)"
            );
            None
        }
    }
}

impl Cluster {
    /// Runs a Ceph CLI tool (`ceph`, `rbd`) against the cluster; returns its output whatever the exit status.
    fn tool(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .arg("-c")
            .arg(&self.conf)
            .args(["--id", &self.id])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} (apt-get install -y ceph-common): {e}"))
    }

    /// Runs a Ceph CLI tool that must succeed; returns its stdout.
    fn ok(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        let out = self.tool(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn rbd(&self, args: &[&str]) -> Vec<u8> {
        self.ok("rbd", args)
    }

    fn rbd_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.rbd(&all);
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("rbd {args:?}: not JSON ({e})"))
    }

    /// An image or snapshot as `rbd export` reads it.
    fn export(&self, spec: &str) -> Vec<u8> {
        self.rbd(&["export", "--no-progress", spec, "-"])
    }

    /// A new pool of 8 placement groups, deleted when the guard goes. With `rbd`, initialised for images.
    fn pool(&self, tag: &str, rbd: bool) -> Pool<'_> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!("it-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let pool = Pool { cluster: self, name };
        self.ok("ceph", &["osd", "pool", "create", &pool.name, "8"]);
        if rbd {
            self.rbd(&["pool", "init", &pool.name]);
        }
        pool
    }

    /// The `serve` arguments that put a server in front of this cluster, keeping its records in `meta`.
    fn serve_args(&self, meta: &Pool<'_>) -> Vec<String> {
        let conf = self.conf.to_str().expect("utf-8 path").to_owned();
        ["--ceph-conf", &conf, "--ceph-id", &self.id, "--ceph-meta-pool", &meta.name].map(str::to_owned).to_vec()
    }

    /// Starts `basalt serve` on a fresh data directory in front of the cluster.
    fn serve(&self, meta: &Pool<'_>, admin_password: Option<&str>) -> Server {
        let args = self.serve_args(meta);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        start_with(Arc::new(tempfile::tempdir().expect("temp dir")), admin_password, &args)
    }
}

/// A pool of the cluster that exists for one test.
struct Pool<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        let out = self
            .cluster
            .tool("ceph", &["osd", "pool", "delete", &self.name, &self.name, "--yes-i-really-really-mean-it"]);
        if !out.status.success() {
            eprintln!("cannot delete pool {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Deterministic bytes that look random (xorshift64*), different for each seed; never all zero in a block.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Places `data` at `offset` in `image`, growing it if needed.
fn put(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(data);
}

/// Runs the basalt CLI against a server through its API socket; the command must succeed. Returns stdout.
fn cli(server: &Server, args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("--data-dir")
        .arg(server.dir.path())
        .arg("--no-progress")
        .args(args)
        .env("HOME", server.dir.path())
        .env_remove("BASALT_URL")
        .env_remove("BASALT_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run basalt");
    assert!(out.status.success(), "basalt {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The URL-encoded `pool[/namespace]/image` of API paths.
fn enc(spec: &str) -> String {
    spec.replace('/', "%2F")
}

/// Checks the answer of a call that may run as a task: `expected` at once, or 202 and a task that succeeds.
fn finished(server: &Server, token: &str, answer: (u16, Value), expected: u16, what: &str) {
    match answer {
        (status, _) if status == expected => {}
        (202, started) => {
            let task = wait_task(server, token, &started);
            assert_eq!(task["success"], true, "{what}: {task}");
        }
        (status, body) => panic!("{what} answered {status}: {body}"),
    }
}

/// Asserts a refusal: the HTTP status and the errno code of the error body (a number in a string, as Ceph's).
fn refused(answer: (u16, Value), status: u16, code: &str, what: &str) {
    assert_eq!((answer.0, answer.1["code"].as_str()), (status, Some(code)), "{what}: {}", answer.1);
    assert!(answer.1["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {}", answer.1);
}

/// The images of one namespace as the API lists them and as `rbd ls -l` does: (name, size, parent as
/// pool/namespace/image@snap), sorted.
type Row = (String, u64, Option<String>);

fn api_rows(server: &Server, token: &str, pool: &str, namespace: &str) -> Vec<Row> {
    let path = format!("/api/block/image?pool_name={pool}&namespace={namespace}");
    let (status, list) = call(server, "GET", &path, Some(token), None);
    assert_eq!(status, 200, "{list}");
    let mut rows: Vec<Row> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            let parent = (!i["parent"].is_null()).then(|| {
                let p = &i["parent"];
                format!(
                    "{}/{}/{}@{}",
                    p["pool_name"].as_str().unwrap_or("?"),
                    p["pool_namespace"].as_str().unwrap_or(""),
                    p["image_name"].as_str().unwrap_or("?"),
                    p["snap_name"].as_str().unwrap_or("?")
                )
            });
            (i["name"].as_str().expect("name").to_owned(), i["size"].as_u64().expect("size"), parent)
        })
        .collect();
    rows.sort();
    rows
}

fn rbd_rows(cluster: &Cluster, pool: &str, namespace: &str) -> Vec<Row> {
    let list = cluster.rbd_json(&["ls", "-l", "--pool", pool, "--namespace", namespace]);
    let mut rows: Vec<Row> = list
        .as_array()
        .expect("a list")
        .iter()
        // `rbd ls -l` lists snapshots as rows of their own.
        .filter(|i| i.get("snapshot").is_none())
        .map(|i| {
            let parent = i.get("parent").map(|p| {
                format!(
                    "{}/{}/{}@{}",
                    p["pool"].as_str().unwrap_or("?"),
                    p["pool_namespace"].as_str().unwrap_or(""),
                    p["image"].as_str().unwrap_or("?"),
                    p["snapshot"].as_str().unwrap_or("?")
                )
            });
            (i["image"].as_str().expect("image").to_owned(), i["size"].as_u64().expect("size"), parent)
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn the_seed_workflow_and_its_refusals_on_ceph_match_the_rbd_cli() {
    let Some(cluster) = cluster("the_seed_workflow_and_its_refusals_on_ceph_match_the_rbd_cli") else { return };
    let pool = cluster.pool("seed", true);
    let meta = cluster.pool("seed-meta", false);
    let server = cluster.serve(&meta, Some(ADMIN_PASSWORD));
    let p = pool.name.as_str();
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let t = Some(token.as_str());

    // The cluster's pools are the server's pools, its own records pool tagged apart.
    let (status, pools) = call(&server, "GET", "/api/pool", t, None);
    assert_eq!(status, 200, "{pools}");
    let tags = |name: &str| pools.as_array().and_then(|l| l.iter().find(|x| x["pool_name"] == name)).cloned();
    assert_eq!(tags(p).map(|x| x["application_metadata"].clone()), Some(json!(["rbd"])), "{pools}");
    assert_eq!(tags(&meta.name).map(|x| x["application_metadata"].clone()), Some(json!(["basalt"])), "{pools}");

    // A golden image with data, and its configuration.
    let golden = format!("{p}/golden");
    let body = json!({"name": "golden", "pool_name": p, "size": 8 * MIB,
        "features": ["layering", "exclusive-lock", "object-map", "fast-diff"],
        "configuration": {"rbd_qos_iops_limit": 500}});
    assert_eq!(call(&server, "POST", "/api/block/image", t, Some(body.clone())).0, 201);
    refused(call(&server, "POST", "/api/block/image", t, Some(body)), 400, "17", "create twice");
    let (_, image) = call(&server, "GET", &format!("/api/block/image/{}", enc(&golden)), t, None);
    assert_eq!((image["name"].as_str(), image["size"].as_u64()), (Some("golden"), Some(8 * MIB)), "{image}");
    assert_eq!(image["features_name"], json!(["exclusive-lock", "fast-diff", "layering", "object-map"]));
    let qos =
        image["configuration"].as_array().expect("config").iter().find(|c| c["name"] == "rbd_qos_iops_limit").cloned();
    assert_eq!(qos, Some(json!({"name": "rbd_qos_iops_limit", "value": "500", "source": 2})));
    // Where librbd looks for it: the image's own configuration override.
    let override_ = cluster.rbd(&["config", "image", "get", &golden, "rbd_qos_iops_limit"]);
    assert_eq!(String::from_utf8_lossy(&override_).trim(), "500");
    let info = cluster.rbd_json(&["info", &golden]);
    assert_eq!(info["size"], 8 * MIB);
    let mut features: Vec<&str> =
        info["features"].as_array().expect("features").iter().filter_map(Value::as_str).collect();
    features.sort_unstable();
    assert_eq!(features, ["exclusive-lock", "fast-diff", "layering", "object-map"]);
    let mut data = vec![0u8; 8 * MIB as usize];
    let records = [
        DiffRecord::Size(8 * MIB),
        DiffRecord::Data { offset: 0, data: random_bytes(MIB as usize, 1) },
        DiffRecord::Data { offset: 5 * MIB + 333, data: random_bytes(70_000, 2) },
    ];
    apply(&mut data, &records);
    let (status, answer) = call_bytes(
        &server,
        "POST",
        &format!("/api/block/image/{}/import_diff", enc(&golden)),
        &token,
        &encode(&records),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert!(cluster.export(&golden) == data, "rbd export of golden differs from what was written");
    refused(call(&server, "GET", &format!("/api/block/image/{p}%2Fghost"), t, None), 404, "2", "missing image");

    // Snapshot, clone only from a protected snapshot, and the refusals a clone causes.
    let snap_path = format!("/api/block/image/{}/snap", enc(&golden));
    assert_eq!(call(&server, "POST", &snap_path, t, Some(json!({"snapshot_name": "base"}))).0, 201);
    let clone_path = format!("{snap_path}/base/clone");
    let clone_body = json!({"child_pool_name": p, "child_image_name": "vm1"});
    let answer = call(&server, "POST", &clone_path, t, Some(clone_body.clone()));
    refused(answer.clone(), 400, "22", "clone of an unprotected snapshot");
    assert!(answer.1["detail"].as_str().unwrap_or("").contains("not protected"), "{}", answer.1);
    let protect = |on: bool| call(&server, "PUT", &format!("{snap_path}/base"), t, Some(json!({"is_protected": on})));
    assert_eq!(protect(true).0, 200);
    let snaps = cluster.rbd_json(&["snap", "ls", &golden]);
    assert_eq!(snaps[0]["name"], "base", "{snaps}");
    assert_eq!(cluster.rbd_json(&["info", &format!("{golden}@base")])["protected"], "true");
    assert_eq!(call(&server, "POST", &clone_path, t, Some(clone_body)).0, 201);
    let (_, vm1) = call(&server, "GET", &format!("/api/block/image/{p}%2Fvm1"), t, None);
    assert_eq!(
        (vm1["parent"]["image_name"].as_str(), vm1["parent"]["snap_name"].as_str()),
        (Some("golden"), Some("base"))
    );
    assert!(cluster.export(&format!("{p}/vm1")) == data, "the clone does not read through to its parent");
    let children = cluster.rbd_json(&["children", &format!("{golden}@base")]);
    assert_eq!(children[0]["image"], "vm1", "{children}");
    refused(
        call(&server, "DELETE", &format!("/api/block/image/{}", enc(&golden)), t, None),
        400,
        "39",
        "delete of a parent",
    );
    refused(protect(false), 400, "16", "unprotect with a child");
    refused(
        call(&server, "DELETE", &format!("{snap_path}/base"), t, None),
        400,
        "16",
        "removal of a protected snapshot",
    );
    let (status, children) = call(&server, "GET", &format!("{snap_path}/base/children"), t, None);
    assert_eq!(status, 200);
    assert_eq!(children[0]["image_name"], "vm1", "{children}");

    // Flatten: the clone keeps its data and leaves its parent.
    let answer = call(&server, "POST", &format!("/api/block/image/{p}%2Fvm1/flatten"), t, None);
    finished(&server, &token, answer, 201, "flatten");
    let (_, vm1) = call(&server, "GET", &format!("/api/block/image/{p}%2Fvm1"), t, None);
    assert_eq!(vm1["parent"], Value::Null, "{vm1}");
    assert!(cluster.rbd_json(&["info", &format!("{p}/vm1")]).get("parent").is_none(), "rbd still sees a parent");
    assert!(cluster.export(&format!("{p}/vm1")) == data, "flatten lost data");

    // Copies: of the head, of a snapshot, and deep (with the snapshots).
    let copy_path = format!("/api/block/image/{}/copy", enc(&golden));
    let answer = call(&server, "POST", &copy_path, t, Some(json!({"dest_pool_name": p, "dest_image_name": "cp1"})));
    finished(&server, &token, answer, 201, "copy");
    let body = json!({"dest_pool_name": p, "dest_image_name": "cp-snap", "snapshot_name": "base"});
    finished(&server, &token, call(&server, "POST", &copy_path, t, Some(body)), 201, "copy of a snapshot");
    let body = json!({"dest_pool_name": p, "dest_image_name": "deep"});
    let answer = call(&server, "POST", &format!("/api/block/image/{}/deep_copy", enc(&golden)), t, Some(body));
    finished(&server, &token, answer, 201, "deep copy");
    for name in ["cp1", "cp-snap", "deep"] {
        assert!(cluster.export(&format!("{p}/{name}")) == data, "{name} differs from golden");
    }
    let snaps: Vec<String> = cluster
        .rbd_json(&["snap", "ls", &format!("{p}/deep")])
        .as_array()
        .expect("snapshots")
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(snaps, ["base"], "the deep copy has the snapshots");
    assert_eq!(cluster.rbd_json(&["snap", "ls", &format!("{p}/cp1")]), json!([]), "a plain copy has none");

    // Now that the clone is flat, the snapshot may be unprotected.
    assert_eq!(protect(false).0, 200);
    assert_eq!(cluster.rbd_json(&["info", &format!("{golden}@base")])["protected"], "false");

    // Trash: moved with a deferment, refused removal before it ends, restored under a new name, then purged.
    let (status, moved) =
        call(&server, "POST", &format!("/api/block/image/{p}%2Fvm1/move_trash"), t, Some(json!({"delay": 3600})));
    assert_eq!(status, 201, "{moved}");
    let id = moved["id"].as_str().expect("trash id").to_owned();
    let trash = cluster.rbd_json(&["trash", "ls", p]);
    assert_eq!((trash[0]["id"].as_str(), trash[0]["name"].as_str()), (Some(id.as_str()), Some("vm1")), "{trash}");
    let (_, listed) = call(&server, "GET", &format!("/api/block/image/trash?pool_name={p}"), t, None);
    assert_eq!(listed[0]["value"][0]["name"], "vm1", "{listed}");
    let answer = call(&server, "DELETE", &format!("/api/block/image/trash/{p}%2F{id}"), t, None);
    assert!(answer.1["detail"].as_str().unwrap_or("").contains("deferment"), "{}", answer.1);
    refused(answer, 400, "1", "trash removal before the deferment ends");
    let restore = json!({"new_image_name": "vm1-back"});
    let (status, answer) =
        call(&server, "POST", &format!("/api/block/image/trash/{p}%2F{id}/restore"), t, Some(restore));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(cluster.rbd_json(&["trash", "ls", p]), json!([]));
    assert!(cluster.export(&format!("{p}/vm1-back")) == data, "the restored image differs");
    let (status, moved) = call(&server, "POST", &format!("/api/block/image/{p}%2Fvm1-back/move_trash"), t, None);
    assert_eq!(status, 201, "{moved}");
    let (status, purged) = call(&server, "POST", &format!("/api/block/image/trash/purge?pool_name={p}"), t, None);
    assert_eq!(status, 201, "{purged}");
    assert_eq!(purged["removed"], json!([moved["id"]]), "{purged}");
    assert_eq!(cluster.rbd_json(&["trash", "ls", p]), json!([]));

    // Namespaces: a clone across namespaces, counts, and no removal while images remain.
    let ns_path = format!("/api/block/pool/{p}/namespace");
    assert_eq!(call(&server, "POST", &ns_path, t, Some(json!({"namespace": "tenant"}))).0, 201);
    refused(call(&server, "POST", &ns_path, t, Some(json!({"namespace": "tenant"}))), 400, "17", "namespace twice");
    assert_eq!(cluster.rbd_json(&["namespace", "ls", p]), json!([{"name": "tenant"}]));
    let body = json!({"name": "a", "pool_name": p, "namespace": "tenant", "size": 4 * MIB});
    assert_eq!(call(&server, "POST", "/api/block/image", t, Some(body)).0, 201);
    assert_eq!(protect(true).0, 200);
    let clone_body = json!({"child_pool_name": p, "child_namespace": "tenant", "child_image_name": "tenant-vm"});
    assert_eq!(call(&server, "POST", &clone_path, t, Some(clone_body)).0, 201);
    let (_, namespaces) = call(&server, "GET", &ns_path, t, None);
    assert_eq!(namespaces, json!([{"namespace": "tenant", "num_images": 2}]));
    refused(call(&server, "DELETE", &format!("{ns_path}/tenant"), t, None), 400, "16", "removal of a namespace in use");
    assert!(cluster.export(&format!("{p}/tenant/tenant-vm")) == data);

    // The listings agree with `rbd ls -l`, in both namespaces.
    let default_rows = api_rows(&server, &token, p, "");
    let names: Vec<&str> = default_rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["cp-snap", "cp1", "deep", "golden"]);
    assert_eq!(default_rows, rbd_rows(&cluster, p, ""));
    let tenant_rows = api_rows(&server, &token, p, "tenant");
    assert_eq!(
        tenant_rows,
        [("a".to_owned(), 4 * MIB, None), ("tenant-vm".to_owned(), 8 * MIB, Some(format!("{p}//golden@base")))]
    );
    assert_eq!(tenant_rows, rbd_rows(&cluster, p, "tenant"));
}

#[test]
fn diff_streams_cross_between_basalt_and_the_rbd_cli() {
    let Some(cluster) = cluster("diff_streams_cross_between_basalt_and_the_rbd_cli") else { return };
    let pool = cluster.pool("diff", true);
    let meta = cluster.pool("diff-meta", false);
    let server = cluster.serve(&meta, Some(ADMIN_PASSWORD));
    let p = pool.name.as_str();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str| dir.path().join(name);
    let spec = |name: &str| format!("{p}/{name}");

    // basalt writes an image: an import of a sparse file (s1), a diff that grows, overwrites and zeroes (s2), and
    // writes through NBD to the head.
    let mut model = vec![0u8; 12 * MIB as usize];
    put(&mut model, 0, &random_bytes(1536 << 10, 3));
    put(&mut model, 5 * MIB + 7, &random_bytes(3000, 4));
    put(&mut model, 12 * MIB - 100, &random_bytes(100, 5));
    std::fs::write(file("src.img"), &model).expect("write image file");
    cli(&server, &["import", path_str(&file("src.img")), &spec("src")]);
    cli(&server, &["snap", "create", &format!("{}@s1", spec("src"))]);
    let mut models = vec![model.clone()];
    let second = [
        DiffRecord::Size(16 * MIB),
        DiffRecord::Data { offset: MIB / 2, data: random_bytes(MIB as usize, 6) },
        DiffRecord::Zero { offset: 5 * MIB, length: 4096 },
        DiffRecord::Data { offset: 13 * MIB + 5, data: random_bytes(5000, 7) },
    ];
    apply(&mut model, &second);
    std::fs::write(file("second.diff"), encode(&second)).expect("write diff");
    cli(&server, &["import-diff", path_str(&file("second.diff")), &spec("src")]);
    cli(&server, &["snap", "create", &format!("{}@s2", spec("src"))]);
    models.push(model.clone());
    let head = random_bytes(8192, 8);
    put(&mut model, 100 << 10, &head);
    model[MIB as usize..(MIB + (64 << 10)) as usize].fill(0);
    std::fs::write(file("head.bin"), &head).expect("write");
    qemu_io(
        &server,
        &spec("src"),
        &[&format!("write -s {} {} 8k", path_str(&file("head.bin")), 100 << 10), "write -z 1M 64k"],
    );
    models.push(model);
    for (at, expected) in ["src@s1", "src@s2", "src"].iter().zip(&models) {
        assert!(cluster.export(&spec(at)) == *expected, "{at} is not what basalt wrote");
    }

    // basalt export-diff, rbd import-diff: the copy has the same snapshots and data.
    cli(&server, &["export-diff", &spec("src@s1"), path_str(&file("1.diff"))]);
    cli(&server, &["export-diff", "--from-snap", "s1", &spec("src@s2"), path_str(&file("2.diff"))]);
    cli(&server, &["export-diff", "--from-snap", "s2", &spec("src"), path_str(&file("3.diff"))]);
    cluster.rbd(&["create", "--size", "1M", &spec("dst")]);
    for diff in ["1.diff", "2.diff", "3.diff"] {
        cluster.rbd(&["import-diff", "--no-progress", path_str(&file(diff)), &spec("dst")]);
    }
    let snaps: Vec<String> = cluster
        .rbd_json(&["snap", "ls", &spec("dst")])
        .as_array()
        .expect("snapshots")
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(snaps, ["s1", "s2"]);
    for (at, expected) in ["dst@s1", "dst@s2", "dst"].iter().zip(&models) {
        assert!(cluster.export(&spec(at)) == *expected, "{at} differs after rbd import-diff of basalt's streams");
    }

    // The other way: an image written by rbd import and rbd bench, its rbd export-diff streams applied by basalt.
    let mut seedfile = vec![0u8; 20 * MIB as usize];
    put(&mut seedfile, 3 * MIB, &random_bytes(2 * MIB as usize, 9));
    put(&mut seedfile, 17 * MIB + 1, &random_bytes(4095, 10));
    std::fs::write(file("rb.img"), &seedfile).expect("write image file");
    cluster.rbd(&["import", "--no-progress", path_str(&file("rb.img")), &spec("rb")]);
    cluster.rbd(&["snap", "create", "--no-progress", &spec("rb@a")]);
    let bench = |total: &str, size: &str| {
        cluster.rbd(&[
            "bench",
            "--io-type",
            "write",
            "--io-pattern",
            "rand",
            "--io-size",
            size,
            "--io-total",
            total,
            &spec("rb"),
        ]);
    };
    bench("2M", "4K");
    cluster.rbd(&["resize", "--no-progress", "--size", "24M", &spec("rb")]);
    bench("4M", "64K");
    cluster.rbd(&["snap", "create", "--no-progress", &spec("rb@b")]);
    bench("1M", "16K");
    cluster.rbd(&["export-diff", "--no-progress", &spec("rb@a"), path_str(&file("a.diff"))]);
    cluster.rbd(&["export-diff", "--no-progress", "--from-snap", "a", &spec("rb@b"), path_str(&file("b.diff"))]);
    cluster.rbd(&["export-diff", "--no-progress", "--from-snap", "b", &spec("rb"), path_str(&file("head.diff"))]);
    cli(&server, &["create", "--size", "1M", &spec("rb-copy")]);
    for diff in ["a.diff", "b.diff", "head.diff"] {
        cli(&server, &["import-diff", path_str(&file(diff)), &spec("rb-copy")]);
    }
    let listed = serde_json::from_slice::<Value>(&cli(&server, &["snap", "ls", "--format", "json", &spec("rb-copy")]))
        .expect("snap ls JSON");
    let names: Vec<&str> = listed.as_array().expect("list").iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(cluster.export(&spec("rb@a")) == seedfile, "rbd import changed the data");
    for at in ["@a", "@b", ""] {
        let original = cluster.export(&format!("{}{at}", spec("rb")));
        let through_basalt = cli(&server, &["export", &format!("{}{at}", spec("rb-copy")), "-"]);
        assert!(original == through_basalt, "rb{at} and rb-copy{at} differ after basalt import-diff");
        assert!(cluster.export(&format!("{}{at}", spec("rb-copy"))) == original, "rbd reads rb-copy{at} differently");
    }
}

/// The NBD URI of an export on the server's Unix socket.
fn nbd_uri(server: &Server, export: &str) -> String {
    format!("nbd+unix:///{export}?socket={}", server.dir.path().join("nbd.sock").display())
}

fn run_tool(cmd: &mut Command, what: &str) -> Output {
    let out =
        cmd.output().unwrap_or_else(|e| panic!("cannot run {what} (apt-get install -y qemu-utils libnbd-bin): {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn qemu_io(server: &Server, export: &str, cmds: &[&str]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    let out = run_tool(cmd.arg(nbd_uri(server, export)), "qemu-io");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("fail"), "qemu-io {cmds:?}: {text}");
}

fn qemu_img_convert(server: &Server, from: &Path, export: &str) -> Command {
    let mut cmd = Command::new("qemu-img");
    // The export exists and is zero where nothing was written: qemu-img writes the file's data only.
    cmd.args(["convert", "-n", "--target-is-zero", "-f", "raw", "-O", "raw"]).arg(from).arg(nbd_uri(server, export));
    cmd
}

fn qemu_img_compare(server: &Server, file: &Path, export: &str) -> Output {
    Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(file)
        .arg(nbd_uri(server, export))
        .output()
        .expect("run qemu-img compare (apt-get install -y qemu-utils)")
}

/// `nbdinfo --map` of an export: (offset, length, is data) runs.
fn map(server: &Server, export: &str) -> Vec<(u64, u64, bool)> {
    let out = run_tool(Command::new("nbdinfo").args(["--map", &nbd_uri(server, export)]), "nbdinfo --map");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number =
                |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or_else(|| panic!("{line}"));
            // Type 0 is allocated data; bit 0 a hole, bit 1 reads as zeros.
            (number(0), number(1), number(2) == 0)
        })
        .collect()
}

/// Whether every byte of `range` is reported as data (`true`) or as a hole (`false`).
fn all(map: &[(u64, u64, bool)], range: std::ops::Range<u64>, data: bool) -> bool {
    map.iter().filter(|(o, l, _)| *o < range.end && o + l > range.start).all(|(_, _, d)| *d == data)
        && map.iter().any(|(o, l, _)| *o <= range.start && o + l > range.start)
}

#[test]
fn qemu_img_and_nbdinfo_over_the_unix_socket_on_ceph() {
    let Some(cluster) = cluster("qemu_img_and_nbdinfo_over_the_unix_socket_on_ceph") else { return };
    let pool = cluster.pool("nbd", true);
    let meta = cluster.pool("nbd-meta", false);
    let server = cluster.serve(&meta, Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let p = pool.name.as_str();
    let dir = tempfile::tempdir().expect("temp dir");
    let size = 32 * MIB;
    let body = json!({"name": "disk", "pool_name": p, "size": size,
        "features": ["layering", "exclusive-lock", "object-map", "fast-diff"]});
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(body)).0, 201);
    let export = format!("{p}/disk");

    // A random pattern with holes, written by qemu-img into the export, reads back equal.
    let mut old = vec![0u8; size as usize];
    put(&mut old, 0, &random_bytes(6 * MIB as usize, 11));
    put(&mut old, 12 * MIB, &random_bytes(MIB as usize, 12));
    put(&mut old, 20 * MIB + 4096, &random_bytes(8192, 13));
    let old_file = dir.path().join("old.img");
    std::fs::write(&old_file, &old).expect("write");
    run_tool(&mut qemu_img_convert(&server, &old_file, &export), "qemu-img convert");
    let out = qemu_img_compare(&server, &old_file, &export);
    assert!(out.status.success(), "qemu-img compare: {}", String::from_utf8_lossy(&out.stdout));
    assert!(cluster.export(&export) == old, "rbd export differs from what qemu-img wrote");

    // The allocation map shows data where it was written, and holes where no object was ever written.
    let extents = map(&server, &export);
    assert_eq!(extents.iter().map(|e| e.1).sum::<u64>(), size, "{extents:?}");
    assert!(all(&extents, 0..6 * MIB, true), "{extents:?}");
    assert!(all(&extents, 12 * MIB..13 * MIB, true), "{extents:?}");
    assert!(all(&extents, 20 * MIB + 4096..20 * MIB + 12288, true), "{extents:?}");
    assert!(all(&extents, 8 * MIB..12 * MIB, false), "{extents:?}");
    assert!(all(&extents, 24 * MIB..size, false), "{extents:?}");

    // A snapshot export reads the old data while the head is rewritten, and keeps it afterwards.
    let snap_path = format!("/api/block/image/{}/snap", enc(&export));
    let snap = call(&server, "POST", &snap_path, Some(&token), Some(json!({"snapshot_name": "before"})));
    assert_eq!(snap.0, 201, "{}", snap.1);
    let new: Vec<u8> = random_bytes(size as usize, 14);
    let new_file = dir.path().join("new.img");
    std::fs::write(&new_file, &new).expect("write");
    let mut writer = qemu_img_convert(&server, &new_file, &export)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-img");
    let snapshot = format!("{export}@before");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut reads_while_writing = 0;
    let status = loop {
        let out = qemu_img_compare(&server, &old_file, &snapshot);
        assert!(out.status.success(), "the snapshot changed under writes: {}", String::from_utf8_lossy(&out.stdout));
        if let Some(status) = writer.try_wait().expect("writer") {
            break status;
        }
        reads_while_writing += 1;
        assert!(Instant::now() < deadline, "qemu-img convert did not finish");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(writer.stderr.as_mut().expect("stderr"), &mut stderr).expect("stderr");
    assert!(status.success(), "qemu-img convert into the head: {stderr}");
    eprintln!("{reads_while_writing} whole reads of the snapshot finished while the head was being written");
    let out = qemu_img_compare(&server, &new_file, &export);
    assert!(out.status.success(), "head after rewrite: {}", String::from_utf8_lossy(&out.stdout));
    let out = qemu_img_compare(&server, &old_file, &snapshot);
    assert!(out.status.success(), "snapshot after rewrite: {}", String::from_utf8_lossy(&out.stdout));
    assert!(cluster.export(&snapshot) == old && cluster.export(&export) == new, "rbd sees other data");
    // The snapshot export is read-only.
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x77 0 4k"])
        .arg(nbd_uri(&server, &snapshot))
        .output()
        .expect("qemu-io");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success() || text.contains("fail") || text.contains("read-only"),
        "a snapshot took a write: {text}"
    );
    assert!(cluster.export(&snapshot) == old);
}

#[test]
fn two_servers_share_users_sessions_and_images_through_the_cluster() {
    let Some(cluster) = cluster("two_servers_share_users_sessions_and_images_through_the_cluster") else { return };
    let pool = cluster.pool("two", true);
    let meta = cluster.pool("two-meta", false);
    let a = cluster.serve(&meta, Some(ADMIN_PASSWORD));
    // The second server finds the administrator already there: no new password, no password file.
    let b = cluster.serve(&meta, None);
    assert!(!b.dir.path().join("initial-admin-password").exists(), "server B created another administrator");
    assert_ne!(a.addr, b.addr);
    let p = pool.name.as_str();

    let admin_a = login(&a, "admin", ADMIN_PASSWORD);
    let admin_b = login(&b, "admin", ADMIN_PASSWORD);

    // A user and a custom role made on A exist on B.
    let role = json!({"name": "image-viewer", "scopes_permissions": {"rbd-image": ["read"]}});
    assert_eq!(call(&a, "POST", "/api/role", Some(&admin_a), Some(role)).0, 201);
    let user = json!({"username": "alice", "password": "alice-secret-1", "roles": ["block-manager"]});
    assert_eq!(call(&a, "POST", "/api/user", Some(&admin_a), Some(user)).0, 201);
    let (status, alice) = call(&b, "GET", "/api/user/alice", Some(&admin_b), None);
    assert_eq!((status, alice["roles"].clone()), (200, json!(["block-manager"])), "{alice}");
    let (status, role) = call(&b, "GET", "/api/role/image-viewer", Some(&admin_b), None);
    assert_eq!(status, 200, "{role}");
    let alice_b = login(&b, "alice", "alice-secret-1");

    // A token issued by A works on B, for the same user and permissions.
    let alice_a = login(&a, "alice", "alice-secret-1");
    let (status, check) = call(&b, "GET", "/api/auth/check", Some(&alice_a), None);
    assert_eq!((status, check["username"].as_str()), (200, Some("alice")), "{check}");
    assert_eq!(call(&b, "GET", "/api/user", Some(&alice_a), None).0, 403, "block-manager may not list users");

    // An image created through A is listed by B, and B's changes show on A.
    let body = json!({"name": "shared", "pool_name": p, "size": 4 * MIB});
    assert_eq!(call(&a, "POST", "/api/block/image", Some(&alice_a), Some(body)).0, 201);
    let (status, list) = call(&b, "GET", &format!("/api/block/image?pool_name={p}"), Some(&alice_b), None);
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list.as_array().expect("list").iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(names, ["shared"]);
    let snap = json!({"snapshot_name": "from-b"});
    assert_eq!(call(&b, "POST", &format!("/api/block/image/{p}%2Fshared/snap"), Some(&alice_a), Some(snap)).0, 201);
    let (_, image) = call(&a, "GET", &format!("/api/block/image/{p}%2Fshared"), Some(&alice_b), None);
    assert_eq!(image["snapshots"][0]["name"], "from-b", "{image}");

    // Ending the session on B ends it on A; a password changed on A is the one B checks.
    assert_eq!(call(&b, "POST", "/api/auth/logout", Some(&alice_a), None).0, 201);
    assert_eq!(call(&a, "GET", "/api/auth/check", Some(&alice_a), None).0, 401, "the token outlived its logout");
    let change = json!({"old_password": "alice-secret-1", "new_password": "alice-secret-2"});
    assert_eq!(call(&a, "POST", "/api/user/alice/change_password", Some(&alice_b), Some(change)).0, 201);
    let (status, _) =
        call(&b, "POST", "/api/auth", None, Some(json!({"username": "alice", "password": "alice-secret-1"})));
    assert_eq!(status, 401, "B accepted the old password");
    login(&b, "alice", "alice-secret-2");

    // A user removed on B can no longer log in on A.
    assert_eq!(call(&b, "DELETE", "/api/user/alice", Some(&admin_b), None).0, 204);
    let (status, _) =
        call(&a, "POST", "/api/auth", None, Some(json!({"username": "alice", "password": "alice-secret-2"})));
    assert_eq!(status, 401);
}

/// On a cluster, trash purge schedules are the manager's own (`rbd_support`): what basalt adds, `rbd trash purge
/// schedule ls` shows, what an operator adds with `rbd`, basalt shows, and basalt's removal removes it from the
/// cluster. Nothing is scheduled by default.
#[test]
fn trash_purge_schedules_are_the_clusters_own() {
    let Some(cluster) = cluster("trash_purge_schedules_are_the_clusters_own") else { return };
    let pool = cluster.pool("sched", true);
    let meta = cluster.pool("sched-meta", false);
    let server = cluster.serve(&meta, Some(ADMIN_PASSWORD));
    let p = pool.name.as_str();
    let text = |out: Vec<u8>| String::from_utf8_lossy(&out).into_owned();
    assert_eq!(text(cli(&server, &["trash", "purge", "schedule", "ls", "-p", p])), "", "none by default");

    cli(&server, &["trash", "purge", "schedule", "add", "-p", p, "1d", "02:00"]);
    let seen = cluster.tool("rbd", &["trash", "purge", "schedule", "ls", "-p", p]);
    assert_eq!(text(seen.stdout), "every 1d starting at 02:00:00\n", "{}", String::from_utf8_lossy(&seen.stderr));

    cluster.rbd(&["trash", "purge", "schedule", "add", "-p", p, "12h"]);
    assert_eq!(
        text(cli(&server, &["trash", "purge", "schedule", "ls", "-p", p])),
        "every 12h, every 1d starting at 02:00:00\n"
    );
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let (status, listed) =
        call(&server, "GET", &format!("/api/block/image/trash/purge-schedule?pool_name={p}"), Some(&token), None);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed[0]["level"], p, "{listed}");
    assert_eq!(
        listed[0]["schedule"],
        json!([{"interval": "12h", "start_time": null}, {"interval": "1d", "start_time": "02:00:00"}])
    );

    cli(&server, &["trash", "purge", "schedule", "remove", "-p", p, "1d", "02:00"]);
    let seen = cluster.tool("rbd", &["trash", "purge", "schedule", "ls", "-p", p]);
    assert_eq!(text(seen.stdout), "every 12h\n");
    cli(&server, &["trash", "purge", "schedule", "remove", "-p", p]);
    let seen = cluster.tool("rbd", &["trash", "purge", "schedule", "ls", "-p", p]);
    assert_eq!(text(seen.stdout), "", "the cluster still has a schedule");
    let (status, gone) =
        call(&server, "DELETE", &format!("/api/block/image/trash/purge-schedule?pool_name={p}"), Some(&token), None);
    assert_eq!((status, gone["code"].as_str()), (400, Some("2")), "{gone}");
}
