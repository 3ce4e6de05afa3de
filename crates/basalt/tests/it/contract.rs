//! The Ceph Dashboard's contract, checked against a live `basalt serve`: every operation of the RBD, pool, auth,
//! task, user and role paths that Ceph's `openapi.yaml` declares is called as a Ceph client calls it (`Accept:
//! application/vnd.ceph.api.vX.Y+json`, Ceph's request bodies), and each answer must have a status the document
//! declares for the operation, the versioned `Content-Type` it declares, and a body that its schema accepts.
//!
//! The document is `data/ceph-openapi.json`: the responses of those operations in Ceph's own `openapi.yaml`.
//! Where Ceph's server answers otherwise than its document says, the document is corrected here, each correction
//! with its reason ([`corrections`]); the statuses Ceph answers without declaring them are in [`UNDECLARED`].
//! Every other difference fails the run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{ADMIN_PASSWORD, Server, start};

const SPEC: &str = include_str!("data/ceph-openapi.json");

/// Statuses Ceph's server answers that its document does not declare: a missing image read or deleted
/// (`RbdService.get_image` raises a 404), a missing pool, user or role read, changed or deleted.
const UNDECLARED: &[(&str, &str, u16)] = &[
    ("get", "/api/block/image/{image_spec}", 404),
    ("delete", "/api/block/image/{image_spec}", 404),
    ("get", "/api/pool/{pool_name}", 404),
    ("get", "/api/user/{username}", 404),
    ("delete", "/api/user/{username}", 404),
    ("get", "/api/role/{name}", 404),
    ("delete", "/api/role/{name}", 404),
];

/// The keys of an image in Ceph's answers (`RbdService._rbd_image`, Quincy to Squid); basalt's Ceph flavour must
/// not add any.
const CEPH_IMAGE_KEYS: &[&str] = &[
    "name",
    "id",
    "unique_id",
    "size",
    "obj_size",
    "num_objs",
    "order",
    "block_name_prefix",
    "features",
    "features_name",
    "pool_name",
    "namespace",
    "data_pool",
    "parent",
    "timestamp",
    "stripe_unit",
    "stripe_count",
    "snapshots",
    "total_disk_usage",
    "disk_usage",
    "configuration",
    "image_format",
    "mirror_mode",
    "primary",
];

/// The schema of one answer of the document.
fn schema_at<'a>(spec: &'a mut Value, path: &str, method: &str, status: &str, media: &str) -> &'a mut Value {
    &mut spec["paths"][path][method]["responses"][status]["content"][media]["schema"]
}

/// Where Ceph's document disagrees with Ceph's server, the document is brought to what the server answers.
fn corrections(spec: &mut Value) {
    let v1 = "application/vnd.ceph.api.v1.0+json";
    let v2 = "application/vnd.ceph.api.v2.0+json";
    let object = json!({"type": "object"});
    // The image list's `value` holds image objects (Ceph's `_rbd_list`), not strings.
    schema_at(spec, "/api/block/image", "get", "200", v2)["items"]["properties"]["value"]["items"] = object.clone();
    // An image is one object (`RbdService.get_image`); the document copies the list's schema.
    *schema_at(spec, "/api/block/image/{image_spec}", "get", "200", v1) = object.clone();
    // Trash entries are objects (`rbd.trash_list`), not strings.
    schema_at(spec, "/api/block/image/trash", "get", "200", v1)["items"]["properties"]["value"]["items"] =
        object.clone();
    // The task list: executing tasks are a list of tasks; a finished task's exception and return value are any
    // JSON (null when none); its metadata is the task's own (an image spec...), not always a pool number.
    let tasks = schema_at(spec, "/api/task", "get", "200", v1);
    tasks["properties"]["executing_tasks"] = json!({"type": "array", "items": object.clone()});
    let task = &mut tasks["properties"]["finished_tasks"]["items"]["properties"];
    task["exception"] = json!({});
    task["ret_value"] = json!({});
    task["metadata"] = object;
    // The user list is a list of users (`AccessControlDB.users` values); a password without expiry has null.
    let users = schema_at(spec, "/api/user", "get", "200", v1);
    let mut user = users.clone();
    user["properties"]["pwdExpirationDate"]["type"] = json!(["string", "null"]);
    *users = json!({"type": "array", "items": user});
    // Permissions are a map of scopes: a role or user without CephFS rights has no `cephfs` key.
    let roles = schema_at(spec, "/api/role", "get", "200", v1);
    roles["items"]["properties"]["scopes_permissions"].as_object_mut().map(|m| m.remove("required"));
    for path in ["/api/auth", "/api/auth/check"] {
        let login = schema_at(spec, path, "post", "201", v1);
        login["properties"]["permissions"].as_object_mut().map(|m| m.remove("required"));
        if login["properties"].get("pwdExpirationDate").is_some() {
            login["properties"]["pwdExpirationDate"]["type"] = json!(["string", "null"]);
        }
    }
}

/// Checks `value` against the JSON Schema subset Ceph's document uses (type, properties, items, required).
fn validate(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let fits = names.iter().any(|t| match *t {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            "null" => value.is_null(),
            _ => false,
        });
        if !fits {
            errors.push(format!("{at}: {value} is not of type {types}"));
            return;
        }
    }
    if let (Some(object), Some(required)) = (value.as_object(), schema.get("required").and_then(Value::as_array)) {
        for key in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(key) {
                errors.push(format!("{at}: the required key '{key}' is missing"));
            }
        }
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema.get("properties").and_then(Value::as_object)) {
        for (key, sub) in properties {
            if let Some(v) = object.get(key) {
                validate(sub, v, &format!("{at}.{key}"), errors);
            }
        }
    }
    if let (Some(items), Some(item_schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(item_schema, item, &format!("{at}[{i}]"), errors);
        }
    }
}

/// An answer: status, headers (names in lower case) and JSON body (Null when empty).
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// One request as Ceph's clients send it: versioned `Accept`, bearer token, JSON body.
fn exchange(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    accept: &str,
    body: Option<&Value>,
) -> Answer {
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: {accept}\r\n", server.addr);
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let payload = if headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let body = if payload.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&payload).unwrap_or(Value::String(payload))
    };
    Answer { status, headers, body }
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

/// The document's path template matching a concrete path (`{x}` is one segment).
fn template<'a>(spec: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap_or_default().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    spec["paths"].as_object()?.keys().map(String::as_str).find(|t| {
        let parts: Vec<&str> = t.split('/').collect();
        parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
    })
}

/// Drives the API as a Ceph client and checks each answer against the document.
struct Contract<'a> {
    server: &'a Server,
    spec: Value,
    covered: BTreeSet<(String, String)>,
    failures: Vec<String>,
}

impl Contract<'_> {
    /// Calls `path` with Ceph's media type at `version`, checks the answer, and returns it.
    fn call(&mut self, version: &str, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let accept = format!("application/vnd.ceph.api.v{version}+json");
        let answer = exchange(self.server, method, path, token, &accept, body.as_ref());
        let what = format!("{method} {path} (v{version})");
        let Some(tpl) = template(&self.spec, path).map(str::to_owned) else {
            self.failures.push(format!("{what}: not in Ceph's document"));
            return answer;
        };
        let m = method.to_ascii_lowercase();
        let Some(responses) = self.spec["paths"][&tpl][&m]["responses"].as_object().cloned() else {
            self.failures.push(format!("{what}: Ceph's document has no {method} on {tpl}"));
            return answer;
        };
        self.covered.insert((tpl.clone(), m.clone()));
        let status = answer.status.to_string();
        let undeclared = UNDECLARED.iter().any(|(um, ut, us)| *um == m && *ut == tpl && *us == answer.status);
        let Some(declared) = responses.get(&status) else {
            if !undeclared {
                self.failures.push(format!(
                    "{what}: status {status} is not declared ({:?}): {}",
                    responses.keys().collect::<Vec<_>>(),
                    answer.body
                ));
            }
            return answer;
        };
        if answer.status >= 300 {
            return answer;
        }
        let Some((media, content)) = declared["content"].as_object().and_then(|c| c.iter().next()) else {
            return answer;
        };
        if !answer.body.is_null() {
            let got = answer.headers.get("content-type").cloned().unwrap_or_default();
            if got != *media {
                self.failures.push(format!("{what}: Content-Type {got}, the document declares {media}"));
            }
        }
        if let Some(schema) = content.get("schema") {
            let mut errors = Vec::new();
            validate(schema, &answer.body, "body", &mut errors);
            self.failures.extend(errors.into_iter().map(|e| format!("{what}: {e}")));
        }
        answer
    }

    /// Like [`Contract::call`], and the status must be one of `expected`.
    fn expect(&mut self, expected: &[u16], method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        let answer = self.call("1.0", method, path, Some(token), body);
        if !expected.contains(&answer.status) {
            self.failures
                .push(format!("{method} {path}: status {} (expected {expected:?}): {}", answer.status, answer.body));
        }
        answer
    }
}

fn image_keys_are_cephs(image: &Value, failures: &mut Vec<String>) {
    for key in image.as_object().into_iter().flat_map(|o| o.keys()) {
        if !CEPH_IMAGE_KEYS.contains(&key.as_str()) {
            failures.push(format!("an image has the key '{key}', which Ceph's images lack"));
        }
    }
}

#[test]
fn every_shared_operation_answers_as_cephs_openapi_declares() {
    let server = start(Some(ADMIN_PASSWORD));
    let mut spec: Value = serde_json::from_str(SPEC).expect("the vendored document is JSON");
    corrections(&mut spec);
    let mut c = Contract { server: &server, spec, covered: BTreeSet::new(), failures: Vec::new() };

    // Auth.
    let login =
        c.call("1.0", "POST", "/api/auth", None, Some(json!({"username": "admin", "password": ADMIN_PASSWORD})));
    assert_eq!(login.status, 201, "{}", login.body);
    let t = login.body["token"].as_str().expect("token").to_owned();
    let t = t.as_str();
    c.expect(&[201], "POST", &format!("/api/auth/check?token={t}"), t, None);

    // Pools, with the fields Ceph's pool form sends.
    c.expect(&[200], "GET", "/api/pool", t, None);
    let pool = json!({
        "pool": "ct", "pool_type": "replicated", "pg_num": 16, "pg_autoscale_mode": "on", "rule_name": "replicated_rule",
        "application_metadata": ["rbd"], "compression_mode": "none", "quota_max_bytes": 0, "quota_max_objects": 0,
    });
    let created = c.expect(&[201, 202], "POST", "/api/pool", t, Some(pool));
    let warning = created.headers.get("warning").cloned().unwrap_or_default();
    assert!(warning.contains("pg_num ignored"), "{warning}");
    c.expect(&[200], "GET", "/api/pool/ct", t, None);
    c.expect(&[200, 202], "PUT", "/api/pool/ct", t, Some(json!({"application_metadata": ["rbd"]})));

    // Namespaces.
    c.expect(&[201, 202], "POST", "/api/block/pool/ct/namespace", t, Some(json!({"namespace": "tenant"})));
    c.expect(&[200], "GET", "/api/block/pool/ct/namespace", t, None);
    c.expect(&[204, 202], "DELETE", "/api/block/pool/ct/namespace/tenant", t, None);

    // Images.
    let features = c.expect(&[200], "GET", "/api/block/image/default_features", t, None);
    assert!(features.body.as_array().is_some_and(|f| f.iter().any(|n| n == "layering")), "{}", features.body);
    let version = c.expect(&[200], "GET", "/api/block/image/clone_format_version", t, None);
    assert_eq!(version.body, json!(1));
    let image = json!({
        "name": "a", "pool_name": "ct", "namespace": null, "size": 4 << 20, "obj_size": 4 << 20,
        "features": ["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"],
        "stripe_unit": "4194304", "stripe_count": 1, "data_pool": null, "configuration": {}, "metadata": {"owner": "ct"},
        "mirror_mode": null, "schedule_interval": "",
    });
    c.expect(&[201, 202], "POST", "/api/block/image", t, Some(image.clone()));
    let again = c.expect(&[400], "POST", "/api/block/image", t, Some(image));
    assert_eq!(
        (again.body["code"].as_str(), again.body["component"].as_str()),
        (Some("17"), Some("rbd")),
        "{}",
        again.body
    );
    let list =
        c.call("2.0", "GET", "/api/block/image?pool_name=ct&offset=0&limit=5&search=&sort=%2Bname", Some(t), None);
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.headers.get("x-total-count").map(String::as_str), Some("1"));
    for image in list.body[0]["value"].as_array().into_iter().flatten() {
        image_keys_are_cephs(image, &mut c.failures);
    }
    // Pacific's unpaged list (1.0) is not in this (Squid's) document; basalt serves it too.
    let old = exchange(&server, "GET", "/api/block/image", Some(t), "application/vnd.ceph.api.v1.0+json", None);
    assert_eq!(old.status, 200, "{}", old.body);
    assert_eq!(old.headers.get("content-type").map(String::as_str), Some("application/vnd.ceph.api.v1.0+json"));
    let one = c.expect(&[200], "GET", "/api/block/image/ct%2Fa", t, None);
    image_keys_are_cephs(&one.body, &mut c.failures);
    c.expect(&[200, 202], "PUT", "/api/block/image/ct%2Fa", t, Some(json!({"size": 8 << 20, "enable_mirror": null})));

    // Snapshots and clones.
    let snap = json!({"snapshot_name": "s", "mirrorImageSnapshot": false});
    c.expect(&[201, 202], "POST", "/api/block/image/ct%2Fa/snap", t, Some(snap));
    c.expect(&[200, 202], "PUT", "/api/block/image/ct%2Fa/snap/s", t, Some(json!({"is_protected": true})));
    let clone =
        json!({"child_pool_name": "ct", "child_namespace": null, "child_image_name": "c", "features": ["layering"]});
    c.expect(&[201, 202], "POST", "/api/block/image/ct%2Fa/snap/s/clone", t, Some(clone));
    c.expect(&[201, 202], "POST", "/api/block/image/ct%2Fc/flatten", t, None);
    c.expect(&[201, 202], "POST", "/api/block/image/ct%2Fa/snap/s/rollback", t, None);
    let copy = json!({"dest_pool_name": "ct", "dest_namespace": "", "dest_image_name": "b"});
    c.expect(&[201, 202], "POST", "/api/block/image/ct%2Fa/copy", t, Some(copy));
    c.expect(&[200, 202], "PUT", "/api/block/image/ct%2Fa/snap/s", t, Some(json!({"is_protected": false})));
    c.expect(&[204, 202], "DELETE", "/api/block/image/ct%2Fa/snap/s", t, None);

    // Trash.
    c.expect(&[201, 202], "POST", "/api/block/image/ct%2Fb/move_trash", t, Some(json!({"delay": 0})));
    let trash = c.expect(&[200], "GET", "/api/block/image/trash?pool_name=ct", t, None);
    let id = trash.body[0]["value"][0]["id"].as_str().unwrap_or_default().to_owned();
    c.expect(
        &[201, 202],
        "POST",
        &format!("/api/block/image/trash/ct%2F{id}/restore"),
        t,
        Some(json!({"new_image_name": "b2"})),
    );
    c.expect(&[201, 202], "POST", "/api/block/image/ct%2Fb2/move_trash", t, Some(json!({"delay": 3600})));
    let trash = c.expect(&[200], "GET", "/api/block/image/trash/?pool_name=ct", t, None);
    let id = trash.body[0]["value"][0]["id"].as_str().unwrap_or_default().to_owned();
    c.expect(&[204, 202], "DELETE", &format!("/api/block/image/trash/ct%2F{id}?force=True"), t, None);
    c.expect(&[201, 202], "POST", "/api/block/image/trash/purge?pool_name=ct", t, None);

    // Deletion; a second delete is Ceph's 404 with the task.
    c.expect(&[204, 202], "DELETE", "/api/block/image/ct%2Fc", t, None);
    c.expect(&[204, 202], "DELETE", "/api/block/image/ct%2Fa", t, None);
    let gone = c.expect(&[404], "DELETE", "/api/block/image/ct%2Fa", t, None);
    assert_eq!(gone.body["code"], json!(404), "{}", gone.body);
    assert_eq!(gone.body["task"]["name"], "rbd/delete", "{}", gone.body);
    c.expect(&[404], "GET", "/api/block/image/ct%2Fa", t, None);
    c.expect(&[200], "GET", "/api/task", t, None);

    // Roles and users, with the fields Ceph's user form sends.
    let role = json!({"name": "viewer", "description": "reads images", "scopes_permissions": {"rbd-image": ["read"]}});
    c.expect(&[201, 202], "POST", "/api/role", t, Some(role.clone()));
    c.expect(&[200], "GET", "/api/role", t, None);
    c.expect(&[200], "GET", "/api/role/viewer", t, None);
    c.expect(&[200, 202], "PUT", "/api/role/viewer", t, Some(role));
    let user = json!({
        "username": "bob", "password": "bob-password-1", "roles": ["viewer"], "name": "Bob", "email": "bob@example.com",
        "enabled": true, "pwdExpirationDate": null, "pwdUpdateRequired": false,
    });
    c.expect(&[201, 202], "POST", "/api/user", t, Some(user));
    c.expect(&[200], "GET", "/api/user", t, None);
    c.expect(&[200], "GET", "/api/user/bob", t, None);
    c.expect(&[200, 202], "PUT", "/api/user/bob", t, Some(json!({"name": "Robert", "pwdUpdateRequired": false})));
    let bob = c.call("1.0", "POST", "/api/auth", None, Some(json!({"username": "bob", "password": "bob-password-1"})));
    let bob = bob.body["token"].as_str().unwrap_or_default().to_owned();
    let change = json!({"old_password": "bob-password-1", "new_password": "bob-password-2"});
    c.expect(&[201, 202], "POST", "/api/user/bob/change_password", &bob, Some(change));
    c.expect(&[204, 202], "DELETE", "/api/user/bob", t, None);
    c.expect(&[404], "GET", "/api/user/bob", t, None);
    c.expect(&[204, 202], "DELETE", "/api/role/viewer", t, None);

    // The pool goes last, once empty.
    c.expect(&[204, 202], "DELETE", "/api/pool/ct", t, None);
    c.expect(&[201, 202], "POST", "/api/auth/logout", t, None);

    let all: BTreeSet<(String, String)> = c.spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(p, ops)| ops.as_object().into_iter().flat_map(|o| o.keys()).map(move |m| (p.clone(), m.clone())))
        .collect();
    let missed: Vec<_> = all.difference(&c.covered).collect();
    assert!(missed.is_empty(), "operations of Ceph's document never called: {missed:?}");
    assert!(
        c.failures.is_empty(),
        "{} answers differ from Ceph's document:\n{}",
        c.failures.len(),
        c.failures.join("\n")
    );
}

#[test]
fn versions_an_endpoint_lacks_are_415_and_answers_name_their_version() {
    let server = start(Some(ADMIN_PASSWORD));
    let t = crate::api::login(&server, "admin", ADMIN_PASSWORD);
    let ask = |accept: &str| exchange(&server, "GET", "/api/block/image", Some(&t), accept, None);
    let v2 = ask("application/vnd.ceph.api.v2.0+json");
    assert_eq!(v2.status, 200);
    assert_eq!(v2.headers.get("content-type").map(String::as_str), Some("application/vnd.ceph.api.v2.0+json"));
    let v1 = ask("application/vnd.ceph.api.v1.0+json");
    assert_eq!(v1.headers.get("content-type").map(String::as_str), Some("application/vnd.ceph.api.v1.0+json"));
    for unknown in
        ["application/vnd.ceph.api.v3.0+json", "application/vnd.ceph.api.v2.1+json", "application/vnd.ceph.api.vx+json"]
    {
        let refused = ask(unknown);
        assert_eq!(refused.status, 415, "{unknown}: {}", refused.body);
        assert_eq!(refused.body["status"], "415 Unsupported Media Type", "{}", refused.body);
    }
    // One version up on a 1.0 endpoint is refused too; basalt's own media type has one version.
    let task = exchange(&server, "GET", "/api/task", Some(&t), "application/vnd.ceph.api.v1.1+json", None);
    assert_eq!(task.status, 415, "{}", task.body);
    let own = exchange(&server, "GET", "/api/task", Some(&t), "application/vnd.basalt.api.v1+json", None);
    assert_eq!(own.headers.get("content-type").map(String::as_str), Some("application/vnd.basalt.api.v1+json"));
    assert_eq!(exchange(&server, "GET", "/api/task", Some(&t), "application/vnd.basalt.api.v2+json", None).status, 415);
    // Without a versioned Accept, basalt's flavour: plain JSON and the flat image list.
    let plain = exchange(&server, "GET", "/api/block/image", Some(&t), "application/json", None);
    assert_eq!(plain.headers.get("content-type").map(String::as_str), Some("application/json"));
    assert!(plain.body.is_array());
}
