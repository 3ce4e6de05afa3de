//! The REST API end to end: the real `basalt serve` on a temp data dir, driven over TCP as a client would, covering
//! first start, authentication, the role matrix, the seed's workflow and refusals, and bad input.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) const ADMIN_PASSWORD: &str = "admin-secret-1";

/// A running server, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
    /// The NBD TCP address.
    pub(crate) nbd_addr: String,
    pub(crate) dir: std::sync::Arc<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub(crate) fn start(admin_password: Option<&str>) -> Server {
    start_at(std::sync::Arc::new(tempfile::tempdir().expect("temp dir")), admin_password)
}

/// Kills the server with SIGKILL (no shutdown at all) and returns its data directory.
pub(crate) fn kill9(server: Server) -> std::sync::Arc<tempfile::TempDir> {
    let dir = server.dir.clone();
    drop(server);
    dir
}

/// Starts a server on an existing data directory.
pub(crate) fn start_at(dir: std::sync::Arc<tempfile::TempDir>, admin_password: Option<&str>) -> Server {
    start_with(dir, admin_password, &[])
}

/// Starts a server on an existing data directory with extra `serve` arguments.
pub(crate) fn start_with(
    dir: std::sync::Arc<tempfile::TempDir>,
    admin_password: Option<&str>,
    extra_args: &[&str],
) -> Server {
    start_on(dir, admin_password, "127.0.0.1", extra_args)
}

/// Starts a server listening on `host` (a free port) with extra `serve` arguments; with `--tls-cert` among them it
/// is ready once its port accepts connections (the health probe here speaks plain HTTP).
pub(crate) fn start_on(
    dir: std::sync::Arc<tempfile::TempDir>,
    admin_password: Option<&str>,
    host: &str,
    extra_args: &[&str],
) -> Server {
    let tls = extra_args.contains(&"--tls-cert");
    let addr = format!("{host}:{}", free_port());
    let nbd_addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_basalt"));
    cmd.args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &addr, "--nbd-listen", &nbd_addr])
        .args(extra_args)
        .env_remove("BASALT_ADMIN_PASSWORD")
        // `serve` reads these too; the Ceph tests export them, and only their servers (which get the cluster in
        // `extra_args`) are meant to serve a cluster.
        .env_remove("BASALT_CEPH_CONF")
        .env_remove("BASALT_CEPH_ID")
        .stdout(Stdio::null());
    // The server's log goes beside its data, so a failure to start can say why.
    let log_path = dir.path().join("serve.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("server log");
    cmd.stderr(log);
    if let Some(p) = admin_password {
        cmd.env("BASALT_ADMIN_PASSWORD", p);
    }
    let child = cmd.spawn().expect("start basalt serve");
    let mut server = Server { child, addr, nbd_addr, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ready = if tls {
            TcpStream::connect(&server.addr).is_ok() && server.dir.path().join("api.sock").exists()
        } else {
            matches!(try_call(&server, "GET", "/api/health", None, None), Ok((200, _)))
        };
        if ready {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("basalt serve exited with {status} before answering:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    panic!("basalt serve did not answer on {} within 30 s:\n{log}", server.addr);
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the JSON body (Null when empty).
pub(crate) fn try_call(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(&server.addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", server.addr);
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let payload = if chunked { dechunk(rest) } else { rest.to_owned() };
    let json = if payload.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&payload).unwrap_or(Value::String(payload))
    };
    Ok((status, json))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

pub(crate) fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    try_call(server, method, path, token, body.as_deref()).expect("http call")
}

pub(crate) fn login(server: &Server, user: &str, password: &str) -> String {
    let (status, body) = call(server, "POST", "/api/auth", None, Some(json!({"username": user, "password": password})));
    assert_eq!(status, 201, "login of {user}: {body}");
    body["token"].as_str().expect("token").to_owned()
}

/// Waits for a 202 task to finish and returns its record.
pub(crate) fn wait_task(server: &Server, token: &str, started: &Value) -> Value {
    let id = started["id"].as_str().expect("task id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, tasks) = call(server, "GET", "/api/task", Some(token), None);
        if let Some(t) = tasks["finished_tasks"].as_array().and_then(|f| f.iter().find(|t| t["id"] == id.as_str())) {
            return t.clone();
        }
        assert!(Instant::now() < deadline, "task {id} did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn first_start_creates_the_rbd_pool_and_an_admin_with_a_private_password_file() {
    let server = start(None);
    let file = server.dir.path().join("initial-admin-password");
    let password = std::fs::read_to_string(&file).expect("initial password file").trim().to_owned();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let socket_mode =
        std::fs::metadata(server.dir.path().join("api.sock")).expect("socket").permissions().mode() & 0o777;
    assert_eq!(socket_mode, 0o600);
    let token = login(&server, "admin", &password);
    let (status, pools) = call(&server, "GET", "/api/pool", Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(pools[0]["pool_name"], "rbd");
    assert_eq!(pools[0]["application_metadata"], json!(["rbd"]));
}

#[test]
fn authentication_401_and_logout() {
    let server = start(Some(ADMIN_PASSWORD));
    assert_eq!(call(&server, "GET", "/api/block/image", None, None).0, 401);
    assert_eq!(call(&server, "GET", "/api/block/image", Some("forged"), None).0, 401);
    let (status, body) =
        call(&server, "POST", "/api/auth", None, Some(json!({"username": "admin", "password": "nope"})));
    assert_eq!(status, 401, "{body}");
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let (status, body) = call(&server, "GET", "/api/auth/check", Some(&token), None);
    assert_eq!((status, body["username"].as_str()), (200, Some("admin")));
    assert_eq!(call(&server, "POST", "/api/auth/logout", Some(&token), None).0, 201);
    assert_eq!(call(&server, "GET", "/api/auth/check", Some(&token), None).0, 401);
    // Repeated failures are rate limited.
    for _ in 0..5 {
        call(&server, "POST", "/api/auth", None, Some(json!({"username": "admin", "password": "wrong"})));
    }
    let (status, _) =
        call(&server, "POST", "/api/auth", None, Some(json!({"username": "admin", "password": ADMIN_PASSWORD})));
    assert_eq!(status, 429);
}

#[test]
fn role_matrix_gives_401_403_or_access() {
    let server = start(Some(ADMIN_PASSWORD));
    let admin = login(&server, "admin", ADMIN_PASSWORD);
    let custom = json!({"name": "image-viewer", "scopes_permissions": {"rbd-image": ["read"]}});
    assert_eq!(call(&server, "POST", "/api/role", Some(&admin), Some(custom)).0, 201);
    for (user, role) in [("bm", "block-manager"), ("ro", "read-only"), ("iv", "image-viewer")] {
        let body = json!({"username": user, "password": "password-of-user", "roles": [role]});
        assert_eq!(call(&server, "POST", "/api/user", Some(&admin), Some(body)).0, 201);
    }
    let tokens: Vec<(&str, String)> =
        ["bm", "ro", "iv"].iter().map(|u| (*u, login(&server, u, "password-of-user"))).collect();
    let create = call(
        &server,
        "POST",
        "/api/block/image",
        Some(&admin),
        Some(json!({"name": "base", "pool_name": "rbd", "size": 1 << 20})),
    );
    assert_eq!(create.0, 201, "{}", create.1);

    // (method, path, body, allowed for block-manager, read-only, image-viewer)
    type Row = (&'static str, &'static str, Option<Value>, [bool; 3]);
    let rows: Vec<Row> = vec![
        ("GET", "/api/block/image", None, [true, true, true]),
        ("GET", "/api/block/image/rbd%2Fbase", None, [true, true, true]),
        (
            "POST",
            "/api/block/image",
            Some(json!({"name": "n", "pool_name": "rbd", "size": 4096})),
            [true, false, false],
        ),
        ("PUT", "/api/block/image/rbd%2Fbase", Some(json!({"size": 2 << 20})), [true, false, false]),
        ("POST", "/api/block/image/rbd%2Fbase/snap", Some(json!({"snapshot_name": "s"})), [true, false, false]),
        ("GET", "/api/block/image/trash", None, [true, true, true]),
        ("POST", "/api/block/image/trash/purge", None, [true, false, false]),
        ("GET", "/api/block/image/trash/purge-schedule?pool_name=rbd", None, [true, true, true]),
        ("GET", "/api/block/image/trash/purge-schedule/status", None, [true, true, true]),
        (
            "POST",
            "/api/block/image/trash/purge-schedule",
            Some(json!({"pool_name": "rbd", "interval": "1d"})),
            [true, false, false],
        ),
        ("DELETE", "/api/block/image/trash/purge-schedule?pool_name=rbd", None, [true, false, false]),
        ("GET", "/api/block/pool/rbd/namespace", None, [true, true, true]),
        ("POST", "/api/block/pool/rbd/namespace", Some(json!({"namespace": "x"})), [true, false, false]),
        ("GET", "/api/pool", None, [true, true, false]),
        ("POST", "/api/pool", Some(json!({"pool": "p2"})), [false, false, false]),
        ("GET", "/api/block/config/global", None, [false, true, false]),
        (
            "PUT",
            "/api/block/config/global",
            Some(json!({"name": "rbd_qos_iops_limit", "value": 10})),
            [false, false, false],
        ),
        ("GET", "/api/user", None, [false, true, false]),
        ("POST", "/api/user", Some(json!({"username": "z", "password": "password-z"})), [false, false, false]),
        ("GET", "/api/role", None, [false, true, false]),
        ("DELETE", "/api/block/image/rbd%2Fnothing", None, [true, false, false]),
    ];
    for (method, path, body, allowed) in &rows {
        assert_eq!(call(&server, method, path, None, body.clone()).0, 401, "{method} {path} without a token");
        for ((user, token), allow) in tokens.iter().zip(allowed) {
            let (status, answer) = call(&server, method, path, Some(token), body.clone());
            if *allow {
                assert!(status != 401 && status != 403, "{user} {method} {path}: {status} {answer}");
            } else {
                assert_eq!(status, 403, "{user} {method} {path}: {answer}");
                assert_eq!(answer["status"], "403 Forbidden", "CherryPy's body, as Ceph's: {answer}");
            }
        }
    }
    // The administrator may do what the others may not.
    assert_eq!(call(&server, "POST", "/api/pool", Some(&admin), Some(json!({"pool": "p3"}))).0, 201);
}

#[test]
fn the_seed_quick_flow_and_its_refusals() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let t = Some(token.as_str());
    let body = json!({"name": "golden", "pool_name": "rbd", "size": 8u64 << 20, "features": ["layering", "exclusive-lock", "object-map", "fast-diff"], "configuration": {"rbd_qos_iops_limit": 500}});
    assert_eq!(call(&server, "POST", "/api/block/image", t, Some(body)).0, 201);
    let (status, list) = call(&server, "GET", "/api/block/image?pool_name=rbd&search=gol&sort=-name", t, None);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let image = &list[0];
    assert_eq!((image["name"].as_str(), image["size"].as_u64()), (Some("golden"), Some(8 << 20)));
    assert_eq!(image["features_name"], json!(["exclusive-lock", "fast-diff", "layering", "object-map"]));
    assert_eq!(image["parent"], Value::Null);
    assert_eq!(image["disk_usage"], json!(0));
    let qos =
        image["configuration"].as_array().expect("config").iter().find(|c| c["name"] == "rbd_qos_iops_limit").cloned();
    assert_eq!(qos, Some(json!({"name": "rbd_qos_iops_limit", "value": "500", "source": 2})));

    assert_eq!(
        call(&server, "POST", "/api/block/image/rbd%2Fgolden/snap", t, Some(json!({"snapshot_name": "base"}))).0,
        201
    );
    let clone_body = json!({"child_pool_name": "rbd", "child_image_name": "vm1"});
    let (status, err) =
        call(&server, "POST", "/api/block/image/rbd%2Fgolden/snap/base/clone", t, Some(clone_body.clone()));
    assert_eq!((status, err["code"].as_str(), err["component"].as_str()), (400, Some("22"), Some("rbd")), "{err}");
    assert!(err["detail"].as_str().unwrap_or("").contains("not protected"), "{err}");
    assert_eq!(err["task"]["name"], "rbd/clone", "Ceph runs a clone as a task and names it in the refusal: {err}");
    assert_eq!(
        call(&server, "PUT", "/api/block/image/rbd%2Fgolden/snap/base", t, Some(json!({"is_protected": true}))).0,
        200
    );
    assert_eq!(call(&server, "POST", "/api/block/image/rbd%2Fgolden/snap/base/clone", t, Some(clone_body)).0, 201);
    let (_, vm1) = call(&server, "GET", "/api/block/image/rbd%2Fvm1", t, None);
    assert_eq!(vm1["parent"]["image_name"], "golden");
    assert_eq!(vm1["parent"]["snap_name"], "base");

    // A refused operation is 400 with the errno as a number in a string; one that ran as a task names it.
    let (status, err) = call(&server, "DELETE", "/api/block/image/rbd%2Fgolden", t, None);
    assert_eq!((status, err["code"].as_str(), err["component"].as_str()), (400, Some("39"), Some("rbd")), "{err}");
    assert_eq!(err["status"], 400, "{err}");
    assert_eq!(err["task"], json!({"name": "rbd/delete", "metadata": {"image_spec": "rbd/golden"}}), "{err}");
    let (status, err) =
        call(&server, "PUT", "/api/block/image/rbd%2Fgolden/snap/base", t, Some(json!({"is_protected": false})));
    assert_eq!((status, err["code"].as_str()), (400, Some("16")), "{err}");
    assert!(err.get("task").is_none(), "a snapshot edit is not a task here: {err}");

    let (status, answer) = call(&server, "POST", "/api/block/image/rbd%2Fvm1/flatten", t, None);
    match status {
        201 => {}
        202 => assert_eq!(wait_task(&server, &token, &answer)["success"], true),
        other => panic!("flatten answered {other}: {answer}"),
    }
    let (_, vm1) = call(&server, "GET", "/api/block/image/rbd%2Fvm1", t, None);
    assert_eq!(vm1["parent"], Value::Null);

    let (status, moved) =
        call(&server, "POST", "/api/block/image/rbd%2Fvm1/move_trash", t, Some(json!({"delay": 3600})));
    assert_eq!(status, 201, "{moved}");
    let id = moved["id"].as_str().expect("trash id").to_owned();
    let (_, trash) = call(&server, "GET", "/api/block/image/trash?pool_name=rbd", t, None);
    assert_eq!(trash[0]["value"][0]["name"], "vm1");
    let (status, err) = call(&server, "DELETE", &format!("/api/block/image/trash/rbd%2F{id}"), t, None);
    assert_eq!((status, err["code"].as_str()), (400, Some("1")), "{err}");
    assert_eq!(err["task"]["name"], "rbd/trash/remove", "{err}");
    assert!(err["detail"].as_str().unwrap_or("").contains("deferment time has not expired"));
    let restore = call(
        &server,
        "POST",
        &format!("/api/block/image/trash/rbd%2F{id}/restore"),
        t,
        Some(json!({"new_image_name": "vm1-back"})),
    );
    assert_eq!(restore.0, 201, "{}", restore.1);
    assert_eq!(call(&server, "GET", "/api/block/image/rbd%2Fvm1-back", t, None).0, 200);
    let (status, moved) = call(&server, "POST", "/api/block/image/rbd%2Fvm1-back/move_trash", t, None);
    assert_eq!(status, 201);
    let id = moved["id"].as_str().expect("trash id").to_owned();
    let (status, purged) = call(&server, "POST", "/api/block/image/trash/purge?pool_name=rbd", t, None);
    assert_eq!(status, 201, "{purged}");
    assert_eq!(purged["removed"], json!([id]));

    // Namespaces: create, list with counts, refuse removal while images remain.
    assert_eq!(call(&server, "POST", "/api/block/pool/rbd/namespace", t, Some(json!({"namespace": "tenant"}))).0, 201);
    let body = json!({"name": "a", "pool_name": "rbd", "namespace": "tenant", "size": 4096});
    assert_eq!(call(&server, "POST", "/api/block/image", t, Some(body)).0, 201);
    let (_, namespaces) = call(&server, "GET", "/api/block/pool/rbd/namespace", t, None);
    assert_eq!(namespaces, json!([{"namespace": "tenant", "num_images": 1}]));
    let (status, err) = call(&server, "DELETE", "/api/block/pool/rbd/namespace/tenant", t, None);
    assert_eq!((status, err["code"].as_str()), (400, Some("16")));
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let t = Some(token.as_str());
    let cases: Vec<(&str, &str, &str)> = vec![
        ("POST", "/api/block/image", "{not json"),
        ("POST", "/api/block/image", r#"{"name":"a","pool_name":"rbd","size":1,"colour":"red"}"#),
        ("POST", "/api/block/image", r#"{"name":"a@b","pool_name":"rbd","size":4096}"#),
        ("POST", "/api/block/image", r#"{"name":"","pool_name":"rbd","size":4096}"#),
        ("POST", "/api/block/image", r#"{"name":"a/b","pool_name":"rbd","size":4096}"#),
        ("POST", "/api/block/image", r#"{"name":"a","pool_name":"rbd","size":-1}"#),
        ("POST", "/api/block/image", r#"{"name":"a","pool_name":"rbd","size":18446744073709551616}"#),
        ("POST", "/api/block/image", r#"{"name":"a","pool_name":"rbd","size":4096,"obj_size":1000}"#),
        ("POST", "/api/block/image", r#"{"name":"a","pool_name":"rbd","size":4096,"obj_size":67108864}"#),
        // object-map needs exclusive-lock (fast-diff without object-map is dropped, as librbd does, not refused).
        ("POST", "/api/block/image", r#"{"name":"a","pool_name":"rbd","size":4096,"features":["object-map"]}"#),
        ("POST", "/api/block/image", r#"{"name":"a","pool_name":"rbd","size":4096,"features":["warp-drive"]}"#),
        (
            "POST",
            "/api/block/image",
            r#"{"name":"a","pool_name":"rbd","size":4096,"configuration":{"rbd_qos_iops_limit":-3}}"#,
        ),
        ("GET", "/api/block/image?sort=colour", ""),
        ("GET", "/api/block/image?limit=-7", ""),
    ];
    let long = format!(r#"{{"name":"{}","pool_name":"rbd","size":4096}}"#, "x".repeat(300));
    let mut all: Vec<(&str, &str, String)> = cases.into_iter().map(|(m, p, b)| (m, p, b.to_owned())).collect();
    all.push(("POST", "/api/block/image", long));
    for (method, path, body) in &all {
        let (status, err) = try_call(&server, method, path, t, Some(body)).expect("call");
        assert!((400..500).contains(&status), "{method} {path} {body}: {status} {err}");
        assert!(err["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}: {err}");
        assert!(err["code"].is_string(), "{err}");
    }
    let (_, list) = call(&server, "GET", "/api/block/image", t, None);
    assert_eq!(list, json!([]), "refused requests created nothing");
    // A missing image is 404 with CherryPy's body, as Ceph gives it.
    let (status, err) = call(&server, "GET", "/api/block/image/rbd%2Fghost", t, None);
    assert_eq!((status, err["code"].as_str(), err["status"].as_str()), (404, Some("2"), Some("404 Not Found")));
    let (status, _) = call(&server, "GET", "/api/no/such/route", t, None);
    assert_eq!(status, 404);
}

/// A request with an `Accept` header; returns the status, the raw head and the JSON body.
fn call_accepting(server: &Server, method: &str, path: &str, token: &str, accept: &str) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nAccept: {accept}\r\nContent-Length: 0\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_owned() };
    (status, head.to_ascii_lowercase(), serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn ceph_clients_conventions_are_understood() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let t = Some(token.as_str());

    // Ceph's pool form: placement groups, type, rule, compression and quotas are taken; those without meaning here
    // are named in a Warning header; an unknown field is still refused and creates nothing.
    let pool = json!({"pool": "p1", "pool_type": "replicated", "pg_num": 32, "rule_name": "replicated_rule",
        "compression_mode": "aggressive", "application_metadata": "rbd", "quota_max_objects": 10});
    let (status, head, body) = {
        let body = pool.to_string();
        let mut stream = TcpStream::connect(&server.addr).expect("connect");
        let request = format!(
            "POST /api/pool HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read");
        let status: u16 = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, raw.to_ascii_lowercase(), raw)
    };
    assert_eq!(status, 201, "{body}");
    for field in ["pg_num ignored", "pool_type ignored", "rule_name ignored", "compression_mode ignored"] {
        assert!(head.contains("warning: 299 basalt") && head.contains(field), "{field}: {head}");
    }
    let (_, pools) = call(&server, "GET", "/api/pool", t, None);
    let p1 = pools.as_array().expect("pools").iter().find(|p| p["pool_name"] == "p1").cloned().expect("p1");
    assert_eq!(p1["application_metadata"], json!(["rbd"]), "the application, given as Ceph's string, is honoured");
    let (status, err) = call(&server, "POST", "/api/pool", t, Some(json!({"pool": "p2", "colour": "red"})));
    assert_eq!((status, err["code"].as_str()), (400, Some("22")), "{err}");
    assert_eq!(call(&server, "GET", "/api/pool/p2", t, None).0, 404);

    for name in ["b", "a", "c"] {
        let body = json!({"name": name, "pool_name": "p1", "size": 4096});
        assert_eq!(call(&server, "POST", "/api/block/image", t, Some(body)).0, 201);
    }
    assert_eq!(
        call(&server, "POST", "/api/block/image", t, Some(json!({"name": "r", "pool_name": "rbd", "size": 4096}))).0,
        201
    );

    // The image list per pool: Ceph's paged form (2.0) groups one page by pool with the total in X-Total-Count;
    // Pacific's (1.0) lists every pool with a status; basalt's own flavour stays a flat list.
    let v2 = "application/vnd.ceph.api.v2.0+json";
    let (status, head, page) =
        call_accepting(&server, "GET", "/api/block/image?offset=1&limit=2&sort=%2Bname", &token, v2);
    assert_eq!(status, 200, "{page}");
    assert!(
        head.contains("x-total-count: 4") && head.contains("content-type: application/vnd.ceph.api.v2.0+json"),
        "{head}"
    );
    let names: Vec<(String, Vec<String>)> = page
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let images =
                g["value"].as_array().expect("value").iter().map(|i| i["name"].as_str().unwrap_or("").to_owned());
            (g["pool_name"].as_str().unwrap_or("").to_owned(), images.collect())
        })
        .collect();
    assert_eq!(names, vec![("p1".to_owned(), vec!["b".to_owned(), "c".to_owned()])], "{page}");
    assert!(page[0].get("status").is_none() && page[0]["value"][0].get("watchers").is_none(), "{page}");
    let (_, _, first) = call_accepting(&server, "GET", "/api/block/image", &token, v2);
    assert_eq!(
        first.as_array().map(|g| g.iter().map(|g| g["value"].as_array().map_or(0, Vec::len)).sum::<usize>()),
        Some(4)
    );
    let (_, _, pacific) =
        call_accepting(&server, "GET", "/api/block/image?pool_name=p1", &token, "application/vnd.ceph.api.v1.0+json");
    assert_eq!(pacific.as_array().map(Vec::len), Some(1), "{pacific}");
    assert_eq!((pacific[0]["status"].as_i64(), pacific[0]["value"].as_array().map(Vec::len)), (Some(0), Some(3)));
    let (_, flat) = call(&server, "GET", "/api/block/image?pool_name=p1", t, None);
    assert_eq!(flat.as_array().map(Vec::len), Some(3));
    assert!(flat[0]["watchers"].is_array(), "basalt's flavour keeps its extra keys: {flat}");

    // default_features and clone_format_version are answers, not image names.
    let (status, features) = call(&server, "GET", "/api/block/image/default_features", t, None);
    assert_eq!(
        (status, features),
        (200, json!(["deep-flatten", "exclusive-lock", "fast-diff", "layering", "object-map"]))
    );
    assert_eq!(call(&server, "GET", "/api/block/image/clone_format_version", t, None), (200, json!(1)));

    // Trailing slashes route as without; Python's booleans are flags.
    let (status, trash) = call(&server, "GET", "/api/block/image/trash/?pool_name=p1", t, None);
    assert_eq!((status, trash[0]["pool_name"].as_str()), (200, Some("p1")), "{trash}");
    assert_eq!(call(&server, "GET", "/api/block/image/p1%2Fa/", t, None).0, 200);
    let (status, moved) = call(&server, "POST", "/api/block/image/p1%2Fa/move_trash/", t, Some(json!({"delay": 3600})));
    assert_eq!(status, 201, "{moved}");
    let id = moved["id"].as_str().expect("id").to_owned();
    let (status, err) = call(&server, "DELETE", &format!("/api/block/image/trash/p1%2F{id}?force=False"), t, None);
    assert_eq!((status, err["code"].as_str()), (400, Some("1")), "not forced: the deferment holds: {err}");
    let (status, err) = call(&server, "DELETE", &format!("/api/block/image/trash/p1%2F{id}?force=maybe"), t, None);
    assert_eq!(status, 400, "{err}");
    let (status, _) = call(&server, "DELETE", &format!("/api/block/image/trash/p1%2F{id}?force=True"), t, None);
    assert!(status == 204 || status == 202, "{status}");
    let (_, trash) = call(&server, "GET", "/api/block/image/trash?pool_name=p1", t, None);
    assert_eq!(trash[0]["value"], json!([]));

    // Newer snapshot creation sends mirrorImageSnapshot: taken; true is noted as ignored (no mirroring here).
    let snap = json!({"snapshot_name": "s1", "mirrorImageSnapshot": false});
    assert_eq!(call(&server, "POST", "/api/block/image/p1%2Fb/snap", t, Some(snap)).0, 201);
    let snap = json!({"snapshot_name": "s2", "mirrorImageSnapshot": true});
    assert_eq!(call(&server, "POST", "/api/block/image/p1%2Fb/snap", t, Some(snap)).0, 201);
    let (_, b) = call(&server, "GET", "/api/block/image/p1%2Fb", t, None);
    assert_eq!(b["snapshots"].as_array().map(Vec::len), Some(2), "{b}");
}

#[test]
fn every_documented_route_exists_and_the_docs_work_offline() {
    let server = start(Some(ADMIN_PASSWORD));
    assert_eq!(call(&server, "GET", "/api/openapi.json", None, None).0, 401, "like every route but login and health");
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let (status, doc) = call(&server, "GET", "/api/openapi.json", Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() > 30, "{} paths", paths.len());
    for (path, item) in paths {
        let concrete = path
            .replace("{image_spec}", "rbd%2Fnothing")
            .replace("{image_id_spec}", "rbd%2Fnothing")
            .replace("{snap}", "s")
            .replace("{pool}", "nopool")
            .replace("{namespace}", "nons")
            .replace("{username}", "nobody")
            .replace("{name}", "norole");
        for method in item.as_object().expect("operations").keys() {
            let method = method.to_ascii_uppercase();
            if method == "POST" && path == "/api/auth/logout" {
                continue;
            }
            let (status, body) = call(&server, &method, &concrete, Some(&token), Some(json!({})));
            let unrouted = status == 404 && body["detail"].as_str().is_some_and(|d| d.contains("no such API route"));
            assert!(!unrouted && status != 405, "{method} {path} is documented but not routed ({status})");
        }
    }
    let (status, page) = try_call(&server, "GET", "/api/docs", None, None).expect("docs");
    assert_eq!(status, 200);
    let html = page.as_str().unwrap_or_default();
    assert!(
        html.contains("/api/openapi.json") && !html.contains("https://"),
        "the docs page loads nothing from outside"
    );
}

/// A request with a binary body; returns the status and the raw (de-chunked) body.
pub(crate) fn call_bytes(server: &Server, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rest = &raw[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, rest.to_vec());
    }
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
    (status, out)
}

fn diff_records(stream: &[u8]) -> Vec<basalt_core::rbd_diff::DiffRecord> {
    let mut reader = basalt_core::rbd_diff::DiffReader::new(stream).expect("a diff stream");
    let mut records = Vec::new();
    while let Some(r) = reader.next_record().expect("valid record") {
        records.push(r);
    }
    records
}

#[test]
fn export_and_import_diff_round_trip_through_the_api() {
    use basalt_core::rbd_diff::{DiffRecord, DiffVersion, DiffWriter};
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let t = Some(token.as_str());
    for name in ["a", "b"] {
        let body = json!({"name": name, "pool_name": "rbd", "size": 1u64 << 20});
        assert_eq!(call(&server, "POST", "/api/block/image", t, Some(body)).0, 201);
    }
    // A stream as `rbd export-diff` writes it: grow to 2 MiB, two data extents, end at snapshot s1.
    let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("writer");
    for record in [
        DiffRecord::ToSnap("s1".into()),
        DiffRecord::Size(2 << 20),
        DiffRecord::Data { offset: 4096, data: vec![7u8; 8192] },
        DiffRecord::Data { offset: (1 << 20) + 100, data: b"hello".to_vec() },
    ] {
        writer.write_record(&record).expect("record");
    }
    let stream = writer.finish().expect("finish");
    let (status, answer) = call_bytes(&server, "POST", "/api/block/image/rbd%2Fa/import_diff", &token, &stream);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let (_, image) = call(&server, "GET", "/api/block/image/rbd%2Fa", t, None);
    assert_eq!(image["size"], 2u64 << 20);
    assert_eq!(image["snapshots"][0]["name"], "s1");
    // Importing the same stream again is refused: the snapshot exists.
    let (status, answer) = call_bytes(&server, "POST", "/api/block/image/rbd%2Fa/import_diff", &token, &stream);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    let refusal: Value = serde_json::from_slice(&answer).expect("a JSON refusal");
    assert_eq!(refusal["code"], "17", "{refusal}");

    // A full export from s1 carries exactly the written data; importing it into b makes b equal.
    let (status, full) = call_bytes(&server, "GET", "/api/block/image/rbd%2Fa/export?snap=s1", &token, b"");
    assert_eq!(status, 200);
    let records = diff_records(&full);
    assert!(records.contains(&DiffRecord::Size(2 << 20)), "{records:?}");
    let data: Vec<(u64, usize)> = records
        .iter()
        .filter_map(|r| match r {
            DiffRecord::Data { offset, data } => Some((*offset, data.len())),
            _ => None,
        })
        .collect();
    assert_eq!(data, vec![(4096, 8192), ((1 << 20), 4096)], "block-granular extents");
    let (status, _) = call_bytes(&server, "POST", "/api/block/image/rbd%2Fb/import_diff", &token, &full);
    assert_eq!(status, 200);
    let (_, again) = call_bytes(&server, "GET", "/api/block/image/rbd%2Fb/export?snap=s1", &token, b"");
    assert_eq!(diff_records(&again), records, "the copy exports the same stream");

    // A diff from s1 to the head after another import is only the change.
    let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("writer");
    writer.write_record(&DiffRecord::FromSnap("s1".into())).expect("from");
    writer.write_record(&DiffRecord::Size(2 << 20)).expect("size");
    writer.write_record(&DiffRecord::Zero { offset: 4096, length: 4096 }).expect("zero");
    let stream = writer.finish().expect("finish");
    assert_eq!(call_bytes(&server, "POST", "/api/block/image/rbd%2Fa/import_diff", &token, &stream).0, 200);
    let (_, delta) = call_bytes(&server, "GET", "/api/block/image/rbd%2Fa/export?from_snap=s1", &token, b"");
    let delta = diff_records(&delta);
    assert!(delta.contains(&DiffRecord::Zero { offset: 4096, length: 4096 }), "{delta:?}");
    assert!(!delta.iter().any(|r| matches!(r, DiffRecord::Data { .. })), "{delta:?}");
    // A stream that does not parse is refused.
    let (status, _) = call_bytes(&server, "POST", "/api/block/image/rbd%2Fb/import_diff", &token, b"rbd diff v9\n");
    assert_eq!(status, 400);
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_with_a_clear_message() {
    let server = start(Some(ADMIN_PASSWORD));
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--data-dir"])
        .arg(server.dir.path())
        .env_remove("BASALT_CEPH_CONF")
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--nbd-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .expect("run a second server");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another basalt process"), "{stderr}");
    // The first server still serves.
    assert_eq!(call(&server, "GET", "/api/health", None, None).0, 200);
}

#[test]
fn data_path_figures_reach_the_perf_api_and_metrics() {
    use basalt_core::rbd_diff::{DiffRecord, DiffVersion, DiffWriter};
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let body = json!({"name": "busy", "pool_name": "rbd", "size": 1u64 << 20});
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(body)).0, 201);
    let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("writer");
    writer.write_record(&DiffRecord::Size(1 << 20)).expect("size");
    for i in 0..8u64 {
        writer.write_record(&DiffRecord::Data { offset: i * 65536, data: vec![1u8; 4096] }).expect("data");
    }
    let stream = writer.finish().expect("finish");
    assert_eq!(call_bytes(&server, "POST", "/api/block/image/rbd%2Fbusy/import_diff", &token, &stream).0, 200);
    let (_, metrics) = call_bytes(&server, "GET", "/metrics", &token, b"");
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(metrics.contains("# TYPE ceph_rbd_write_ops counter\n"), "{metrics}");
    assert!(metrics.contains(r#"ceph_rbd_write_ops{pool="rbd",namespace="",image="busy"} 8.0"#), "{metrics}");
    assert!(metrics.contains(r#"ceph_rbd_write_bytes{pool="rbd",namespace="",image="busy"} 32768.0"#), "{metrics}");
    assert!(metrics.contains(r#"ceph_rbd_write_latency_count{pool="rbd",namespace="",image="busy"} 8.0"#), "{metrics}");
    // The latency sum is in nanoseconds, as Ceph's: eight writes to a file take more than 8 µs.
    let sum: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"ceph_rbd_write_latency_sum{pool="rbd",namespace="",image="busy"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no latency sum: {metrics}"));
    assert!(sum > 8_000.0, "{sum} ns for 8 writes");
    // The sampler folds the counters into the history once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, perf) = call(&server, "GET", "/api/perf/image/rbd%2Fbusy?range=60", Some(&token), None);
        assert_eq!(status, 200);
        let (_, overall) = call(&server, "GET", "/api/perf/overall?range=60", Some(&token), None);
        let written: f64 =
            perf["points"].as_array().map_or(0.0, |p| p.iter().filter_map(|x| x["write_iops"].as_f64()).sum());
        let total: f64 =
            overall["points"].as_array().map_or(0.0, |p| p.iter().filter_map(|x| x["write_iops"].as_f64()).sum());
        if written >= 8.0 {
            assert!(total >= 8.0, "{overall}");
            break;
        }
        assert!(Instant::now() < deadline, "the writes never showed up: {perf}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, top) = call(&server, "GET", "/api/perf/top?by=iops", Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(top[0]["image"], "rbd/busy");
    assert_eq!(call(&server, "GET", "/api/perf/top?by=colour", Some(&token), None).0, 400);
}

#[test]
fn copy_and_flatten_count_background_io_in_the_image_counters() {
    use basalt_core::rbd_diff::{DiffRecord, DiffVersion, DiffWriter};
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let body = json!({"name": "src", "pool_name": "rbd", "size": 4u64 << 20});
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(body)).0, 201);
    let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("writer");
    writer.write_record(&DiffRecord::Size(4 << 20)).expect("size");
    writer.write_record(&DiffRecord::Data { offset: 0, data: vec![7u8; 1 << 20] }).expect("data");
    let stream = writer.finish().expect("finish");
    assert_eq!(call_bytes(&server, "POST", "/api/block/image/rbd%2Fsrc/import_diff", &token, &stream).0, 200);
    let copy = json!({"dest_pool_name": "rbd", "dest_image_name": "dst"});
    assert_eq!(call(&server, "POST", "/api/block/image/rbd%2Fsrc/copy", Some(&token), Some(copy)).0, 201);
    // A snapshot, a clone of it, and a flatten that copies the parent's 1 MiB up into the clone.
    let snap = json!({"snapshot_name": "s"});
    assert_eq!(call(&server, "POST", "/api/block/image/rbd%2Fsrc/snap", Some(&token), Some(snap)).0, 201);
    let protect = json!({"is_protected": true});
    assert_eq!(call(&server, "PUT", "/api/block/image/rbd%2Fsrc/snap/s", Some(&token), Some(protect)).0 / 100, 2);
    let clone = json!({"child_pool_name": "rbd", "child_image_name": "c"});
    let (status, answer) = call(&server, "POST", "/api/block/image/rbd%2Fsrc/snap/s/clone", Some(&token), Some(clone));
    assert_eq!(status / 100, 2, "{answer}");
    assert_eq!(call(&server, "POST", "/api/block/image/rbd%2Fc/flatten", Some(&token), None).0, 201);

    let (_, metrics) = call_bytes(&server, "GET", "/metrics", &token, b"");
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let value = |name: &str, image: &str| -> u64 {
        let prefix = format!(r#"{name}{{pool="rbd",namespace="",image="{image}"}} "#);
        let value = metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse::<f64>().ok());
        value.map_or(0, |v| v as u64)
    };
    // The copy read the source's 1 MiB and wrote it to the destination; the flatten read and wrote it in the clone.
    assert_eq!(value("basalt_rbd_background_read_bytes", "src"), 1 << 20, "{metrics}");
    assert_eq!(value("basalt_rbd_background_write_bytes", "dst"), 1 << 20, "{metrics}");
    assert_eq!(value("basalt_rbd_background_read_bytes", "c"), 1 << 20, "{metrics}");
    assert_eq!(value("basalt_rbd_background_write_bytes", "c"), 1 << 20, "{metrics}");
    // Client counters are untouched by the tasks.
    assert_eq!(value("ceph_rbd_read_ops", "dst"), 0, "{metrics}");
    // The history's background series carries the same bytes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, perf) = call(&server, "GET", "/api/perf/image/rbd%2Fc?range=60", Some(&token), None);
        let moved: f64 = perf["points"]
            .as_array()
            .map_or(0.0, |p| p.iter().filter_map(|x| x["background_write_bps"].as_f64()).sum());
        if moved >= f64::from(1u32 << 20) {
            break;
        }
        assert!(Instant::now() < deadline, "the flatten never showed up: {perf}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn mutating_calls_are_audited_and_only_user_managers_read_the_log() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let body = json!({"name": "audited", "pool_name": "rbd", "size": 1u64 << 20});
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(body.clone())).0, 201);
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(body)).0 / 100, 4, "exists");
    let viewer = json!({"username": "viewer", "password": "a-long-viewer-password-1", "roles": ["read-only"]});
    assert_eq!(call(&server, "POST", "/api/user", Some(&token), Some(viewer)).0, 201);
    let viewer_token = login(&server, "viewer", "a-long-viewer-password-1");
    assert_eq!(call(&server, "DELETE", "/api/block/image/rbd%2Faudited", Some(&viewer_token), None).0, 403);
    // Reading is not audited; the records arrive just after the answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let (status, log) = call(&server, "GET", "/api/audit?search=audited", Some(&token), None);
        assert_eq!(status, 200, "{log}");
        if log["total"] == 3 {
            break log;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let items = log["items"].as_array().expect("items");
    assert_eq!(items[0]["username"], "viewer");
    assert_eq!(items[0]["method"], "DELETE");
    assert_eq!(items[0]["path"], "/api/block/image/rbd/audited");
    assert_eq!((items[0]["status"].as_u64(), items[0]["result"].as_str()), (Some(403), Some("failure")));
    assert_eq!((items[2]["username"].as_str(), items[2]["status"].as_u64()), (Some("admin"), Some(201)));
    let (_, mine) = call(&server, "GET", "/api/audit?username=viewer", Some(&token), None);
    assert!(mine["items"].as_array().expect("items").iter().all(|r| r["username"] == "viewer"), "{mine}");
    // No password is ever recorded, and the read-only user cannot read the log.
    let (_, all) = call(&server, "GET", "/api/audit?limit=1000", Some(&token), None);
    assert!(!all.to_string().contains("a-long-viewer-password-1"));
    assert_eq!(call(&server, "GET", "/api/audit", Some(&viewer_token), None).0, 403);
    assert_eq!(call(&server, "GET", "/api/audit?result=maybe", Some(&token), None).0, 400);
}

/// Writes `count` 4 KiB blocks of ones from `first_block` on through an import-diff; answers the status and body.
fn write_blocks(server: &Server, token: &str, spec: &str, first_block: u64, count: u64) -> (u16, Value) {
    use basalt_core::rbd_diff::{DiffRecord, DiffVersion, DiffWriter};
    let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("writer");
    writer.write_record(&DiffRecord::Size(4 << 20)).expect("size");
    for i in first_block..first_block + count {
        writer.write_record(&DiffRecord::Data { offset: i * 4096, data: vec![1u8; 4096] }).expect("data");
    }
    let stream = writer.finish().expect("finish");
    let (status, body) = call_bytes(server, "POST", &format!("/api/block/image/{spec}/import_diff"), token, &stream);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn a_pool_quota_stops_writes_with_edquot_and_shows_in_the_pool_series() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let body = json!({"pool": "small", "application_metadata": ["rbd"], "quota_max_bytes": 65536});
    assert_eq!(call(&server, "POST", "/api/pool", Some(&token), Some(body)).0, 201);
    let body = json!({"name": "fill", "pool_name": "small", "size": 4u64 << 20});
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(body)).0, 201);
    // Bad input changes nothing.
    let bad = json!({"quota_max_bytes": -1});
    assert_eq!(call(&server, "PUT", "/api/pool/small", Some(&token), Some(bad)).0, 400);

    // 128 KiB go in while the pool is under its 64 KiB quota (Ceph, too, lets the write that crosses it land).
    assert_eq!(write_blocks(&server, &token, "small%2Ffill", 0, 32).0, 200);
    let (_, pools) = call(&server, "GET", "/api/pool", Some(&token), None);
    let small = pools.as_array().and_then(|p| p.iter().find(|p| p["pool_name"] == "small")).cloned().expect("pool");
    assert_eq!(small["quota_max_bytes"], 65536, "{small}");
    assert_eq!(small["stats"]["used_bytes"], 131072, "{small}");
    assert_eq!(small["stats"]["quota_reached"], true, "{small}");
    // Now the pool is full: new writes answer EDQUOT.
    let (status, refusal) = write_blocks(&server, &token, "small%2Ffill", 64, 1);
    assert_eq!((status, refusal["code"].as_str()), (400, Some("122")), "EDQUOT: {refusal}");

    // The pool series show it full, and Ceph's POOL_FULL check is raised.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (_, metrics) = call_bytes(&server, "GET", "/metrics", &token, b"");
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        if metrics.contains("ceph_health_detail{name=\"POOL_FULL\",severity=\"HEALTH_WARN\"} 1.0") {
            break metrics;
        }
        assert!(Instant::now() < deadline, "POOL_FULL never raised: {metrics}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let id = small["pool"].as_u64().expect("pool id");
    assert!(metrics.contains(&format!("ceph_pool_metadata{{pool_id=\"{id}\",name=\"small\",")), "{metrics}");
    assert!(metrics.contains(&format!("ceph_pool_quota_bytes{{pool_id=\"{id}\"}} 65536.0")), "{metrics}");
    assert!(metrics.contains(&format!("ceph_pool_stored{{pool_id=\"{id}\"}} 131072.0")), "{metrics}");
    assert!(metrics.contains(&format!("ceph_pool_percent_used{{pool_id=\"{id}\"}} 1.0")), "{metrics}");
    assert!(metrics.contains("\nceph_health_status 1.0"), "{metrics}");

    // Removing the quota (0, as ceph osd pool set-quota takes it) lets writes in again.
    let lift = json!({"quota_max_bytes": 0});
    assert_eq!(call(&server, "PUT", "/api/pool/small", Some(&token), Some(lift)).0, 200);
    assert_eq!(write_blocks(&server, &token, "small%2Ffill", 64, 1).0, 200);
}

#[test]
fn an_image_whose_files_are_gone_is_degraded_with_the_reason_in_the_api_and_metrics() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let body = json!({"name": "broken", "pool_name": "rbd", "size": 4u64 << 20});
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(body)).0, 201);
    assert_eq!(write_blocks(&server, &token, "rbd%2Fbroken", 0, 4).0, 200);
    let layers = server.dir.path().join(basalt_engine::LAYERS_DIR);
    let files_of = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&layers).expect("layers dir").map(|e| e.expect("entry").path()).collect()
    };
    let broken_files = files_of();
    assert!(!broken_files.is_empty(), "the image has a layer file");
    let body = json!({"name": "healthy", "pool_name": "rbd", "size": 4u64 << 20});
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(body)).0, 201);
    let (_, image) = call(&server, "GET", "/api/block/image/rbd%2Fbroken", Some(&token), None);
    assert_eq!((image["status"].as_str(), &image["status_detail"]), (Some("OK"), &Value::Null), "{image}");
    let id = image["id"].clone();

    // The disk loses the image's files while the server is down.
    let dir = kill9(server);
    for file in &broken_files {
        std::fs::remove_file(file).expect("remove layer file");
    }
    let server = start_at(dir, Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let (status, err) = write_blocks(&server, &token, "rbd%2Fbroken", 0, 1);
    assert!(status >= 500, "writing to an image without its files fails: {status} {err}");

    let (_, image) = call(&server, "GET", "/api/block/image/rbd%2Fbroken", Some(&token), None);
    assert_eq!(image["status"], "degraded", "{image}");
    let detail = image["status_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("cannot be read") && detail.contains("layer file") && detail.contains("run fsck"),
        "{image}"
    );
    assert_eq!(image["id"], id, "the listed facts are kept: {image}");
    let (_, list) = call(&server, "GET", "/api/block/image?pool_name=rbd", Some(&token), None);
    let statuses: Vec<(&str, &str)> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|i| (i["name"].as_str().unwrap_or_default(), i["status"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(statuses, [("broken", "degraded"), ("healthy", "OK")], "{list}");
    // Ceph's flavour keeps its own shape: no status keys.
    let (_, _, ceph) =
        call_accepting(&server, "GET", "/api/block/image/rbd%2Fbroken", &token, "application/vnd.ceph.api.v1.0+json");
    assert!(ceph.get("status").is_none() && ceph.get("status_detail").is_none(), "{ceph}");

    let (_, metrics) = call_bytes(&server, "GET", "/metrics", &token, b"");
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(metrics.contains("# TYPE basalt_image_status gauge\n"), "{metrics}");
    for (state, value) in [("OK", "0.0"), ("degraded", "1.0"), ("migrating", "0.0")] {
        let line =
            format!("basalt_image_status{{pool=\"rbd\",namespace=\"\",image=\"broken\",status=\"{state}\"}} {value}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[test]
fn alerts_name_a_full_pool_a_failed_task_and_an_expiring_certificate() {
    // An NBD certificate valid for 10 more days.
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let (cert, key) = (dir.path().join("nbd-cert.pem"), dir.path().join("nbd-key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "10"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let server = start_with(dir, Some(ADMIN_PASSWORD), &["--nbd-tls-cert", cert, "--nbd-tls-key", key]);
    assert_eq!(call(&server, "GET", "/api/alerts", None, None).0, 401, "only logged-in users read alerts");
    let token = login(&server, "admin", ADMIN_PASSWORD);

    // A pool over its quota, and a task that failed (flattening an image that is no clone).
    let body = json!({"pool": "small", "application_metadata": ["rbd"], "quota_max_bytes": 65536});
    assert_eq!(call(&server, "POST", "/api/pool", Some(&token), Some(body)).0, 201);
    let body = json!({"name": "fill", "pool_name": "small", "size": 4u64 << 20});
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(body)).0, 201);
    assert_eq!(write_blocks(&server, &token, "small%2Ffill", 0, 32).0, 200);
    let (status, _) = call(&server, "POST", "/api/block/image/small%2Ffill/flatten", Some(&token), None);
    assert_eq!(status, 400, "a flatten of an image without parent fails");

    // A read-only user sees the same alerts; pool figures arrive with the next capacity refresh.
    let body = json!({"username": "viewer", "password": "viewer-secret-1", "roles": ["read-only"]});
    assert_eq!(call(&server, "POST", "/api/user", Some(&token), Some(body)).0, 201);
    let viewer = login(&server, "viewer", "viewer-secret-1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let alerts = loop {
        let (status, alerts) = call(&server, "GET", "/api/alerts", Some(&viewer), None);
        assert_eq!(status, 200, "{alerts}");
        if alerts.as_array().is_some_and(|a| a.iter().any(|x| x["id"] == "pool_full:small")) {
            break alerts;
        }
        assert!(Instant::now() < deadline, "no pool alert: {alerts}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let find = |prefix: &str| -> Value {
        alerts
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"].as_str().is_some_and(|id| id.starts_with(prefix))).cloned())
            .unwrap_or_else(|| panic!("no {prefix} alert in {alerts}"))
    };
    let pool = find("pool_full:small");
    assert_eq!(pool["severity"], "critical", "{pool}");
    assert!(pool["summary"].as_str().is_some_and(|s| s.starts_with("pool small is full")), "{pool}");
    assert!(pool["since"].as_u64().is_some_and(|s| s > 0), "{pool}");
    let task = find("task_failed:");
    assert_eq!(
        (task["severity"].as_str(), task["summary"].as_str()),
        (Some("warning"), Some("task rbd/flatten failed"))
    );
    assert!(task["detail"].as_str().is_some_and(|d| d.contains("small/fill")), "{task}");
    let cert = find("certificate_expiring:NBD server");
    assert_eq!(cert["severity"], "warning", "{cert}");
    let summary = cert["summary"].as_str().unwrap_or_default();
    assert!(summary == "the NBD server certificate expires in 9 day(s)" || summary.ends_with("in 10 day(s)"), "{cert}");
    assert!(alerts.as_array().is_some_and(|a| !a.iter().any(|x| x["id"] == "certificate_expiring:NBD CA")), "{alerts}");
    assert_eq!(alerts[0]["severity"], "critical", "critical first: {alerts}");

    // The same conditions feed the Prometheus families behind monitoring/basalt-alerts.yml.
    let (_, metrics) = call_bytes(&server, "GET", "/metrics", &token, b"");
    let metrics = String::from_utf8_lossy(&metrics);
    let expiry = metrics
        .lines()
        .find_map(|l| l.strip_prefix("basalt_certificate_expiry_timestamp_seconds{certificate=\"NBD server\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no NBD certificate expiry in {metrics}"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!((9.0 * 86400.0..=10.0 * 86400.0 + 60.0).contains(&(expiry - now)), "expiry {expiry}, now {now}");
    assert!(metrics.contains("\nbasalt_tasks_failed_recent 1.0\n"), "{metrics}");
    assert!(metrics.contains("\nbasalt_store_stopped 0.0\n"), "{metrics}");

    // Lifting the quota clears the pool's alert.
    let lift = json!({"quota_max_bytes": 0});
    assert_eq!(call(&server, "PUT", "/api/pool/small", Some(&token), Some(lift)).0, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, alerts) = call(&server, "GET", "/api/alerts", Some(&token), None);
        if alerts.as_array().is_some_and(|a| !a.iter().any(|x| x["id"] == "pool_full:small")) {
            break;
        }
        assert!(Instant::now() < deadline, "the pool alert stayed: {alerts}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
