//! The API's description: one table of operations, rendered as an OpenAPI 3.1 document at `/api/openapi.json` and
//! as a self-contained page at `/api/docs` (no CDN, works offline). A test checks every documented route exists.

use axum::Json;
use axum::response::Html;
use serde_json::{Map, Value, json};

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// HTTP method.
    pub method: &'static str,
    /// Path with `{parameters}`.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// The scope and permission it needs; `None` for public routes, `Some(("", ""))` for any logged-in user.
    pub need: Option<(&'static str, &'static str)>,
    /// An example request body.
    pub body: Option<&'static str>,
    /// The success status.
    pub ok: u16,
    /// The task name when the operation runs as a background task (may answer 202).
    pub task: Option<&'static str>,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    scope: &'static str,
    perm: &'static str,
    ok: u16,
) -> Op {
    Op { method, path, summary, need: Some((scope, perm)), body: None, ok, task: None }
}

const fn with_body(mut o: Op, body: &'static str) -> Op {
    o.body = Some(body);
    o
}

const fn as_task(mut o: Op, task: &'static str) -> Op {
    o.task = Some(task);
    o
}

const IMG: &str = "rbd-image";

/// Every operation of the API.
pub const OPS: &[Op] = &[
    Op {
        method: "GET",
        path: "/api/health",
        summary: "Health of the server",
        need: None,
        body: None,
        ok: 200,
        task: None,
    },
    Op {
        method: "POST",
        path: "/api/auth",
        summary: "Log in; returns a bearer token",
        need: None,
        body: Some(r#"{"username":"admin","password":"..."}"#),
        ok: 201,
        task: None,
    },
    op("POST", "/api/auth/logout", "Invalidate the caller's token", "", "", 201),
    op("GET", "/api/auth/check", "Who the token belongs to and what it may do", "", "", 200),
    Op {
        method: "POST",
        path: "/api/auth/check",
        summary: "Check a token given as ?token= or {\"token\"} (Ceph's form): who it belongs to",
        need: None,
        body: None,
        ok: 201,
        task: None,
    },
    op("GET", "/api/user", "List users", "user", "read", 200),
    with_body(
        op("POST", "/api/user", "Create a user", "user", "create", 201),
        r#"{"username":"alice","password":"long-password","roles":["block-manager"]}"#,
    ),
    op("GET", "/api/user/{username}", "Get a user", "user", "read", 200),
    with_body(
        op("PUT", "/api/user/{username}", "Change a user", "user", "update", 200),
        r#"{"roles":["read-only"],"enabled":true}"#,
    ),
    op("DELETE", "/api/user/{username}", "Remove a user", "user", "delete", 204),
    with_body(
        op("POST", "/api/user/{username}/change_password", "Change one's own password", "", "", 201),
        r#"{"old_password":"...","new_password":"..."}"#,
    ),
    op(
        "POST",
        "/api/user/{username}/nbd-certificate",
        "Issue an NBD TLS client certificate for the user (the user themself, or user update): PEM ca_cert, \
         client_cert, client_key",
        "user",
        "update",
        201,
    ),
    op("GET", "/api/role", "List roles (system and custom)", "user", "read", 200),
    with_body(
        op("POST", "/api/role", "Create a custom role", "user", "create", 201),
        r#"{"name":"viewer","scopes_permissions":{"rbd-image":["read"]}}"#,
    ),
    op("GET", "/api/role/{name}", "Get a role", "user", "read", 200),
    with_body(
        op("PUT", "/api/role/{name}", "Change a custom role", "user", "update", 200),
        r#"{"name":"viewer","scopes_permissions":{"rbd-image":["read"],"pool":["read"]}}"#,
    ),
    op("DELETE", "/api/role/{name}", "Remove a custom role", "user", "delete", 204),
    op("GET", "/api/task", "Running and finished background tasks", "", "", 200),
    op(
        "GET",
        "/api/alerts",
        "What needs attention: full pools or disk, degraded images, failed tasks, a stopped store, expiring certificates",
        "",
        "",
        200,
    ),
    op(
        "GET",
        "/api/audit",
        "The audit log of mutating calls, newest first (?username=&since=&until=&search=&result=&offset=&limit=)",
        "user",
        "update",
        200,
    ),
    op(
        "GET",
        "/api/perf/image/{image_spec}",
        "IOPS, throughput and latency of one image over ?range= seconds",
        IMG,
        "read",
        200,
    ),
    op("GET", "/api/perf/overall", "IOPS, throughput and latency of all images over ?range= seconds", IMG, "read", 200),
    op("GET", "/api/perf/top", "Busiest images by ?by=iops|throughput|latency over ?window= seconds", IMG, "read", 200),
    op("GET", "/api/pool", "List pools with health, application tags and usage", "pool", "read", 200),
    with_body(
        op("POST", "/api/pool", "Create a pool", "pool", "create", 201),
        r#"{"pool":"fast","application_metadata":["rbd"]}"#,
    ),
    with_body(
        op("PUT", "/api/pool/{pool}", "Set a pool's application tags and quotas", "pool", "update", 200),
        r#"{"application_metadata":["rbd"],"quota_max_bytes":10737418240,"quota_max_objects":0}"#,
    ),
    op("GET", "/api/pool/{pool}", "One pool", "pool", "read", 200),
    op("DELETE", "/api/pool/{pool}", "Remove an empty pool", "pool", "delete", 204),
    op("GET", "/api/block/pool/{pool}/namespace", "List namespaces with image counts", IMG, "read", 200),
    with_body(
        op("POST", "/api/block/pool/{pool}/namespace", "Create a namespace", IMG, "create", 201),
        r#"{"namespace":"tenant-a"}"#,
    ),
    op("DELETE", "/api/block/pool/{pool}/namespace/{namespace}", "Remove an empty namespace", IMG, "delete", 204),
    op("GET", "/api/block/config/global", "Global configuration with sources", "config-opt", "read", 200),
    with_body(
        op("PUT", "/api/block/config/global", "Set (or with null reset) a global option", "config-opt", "update", 200),
        r#"{"name":"rbd_qos_iops_limit","value":1000}"#,
    ),
    op("GET", "/api/block/config/pool/{pool}", "Pool configuration with sources", "config-opt", "read", 200),
    with_body(
        op("PUT", "/api/block/config/pool/{pool}", "Set (or reset) a pool option", "config-opt", "update", 200),
        r#"{"name":"rbd_qos_bps_limit","value":null}"#,
    ),
    op("GET", "/api/block/config/image/{image_spec}", "Image configuration with sources", IMG, "read", 200),
    with_body(
        op("PUT", "/api/block/config/image/{image_spec}", "Set (or reset) an image option", IMG, "update", 200),
        r#"{"name":"rbd_qos_iops_limit","value":500}"#,
    ),
    op("GET", "/api/block/image", "List images (paging, search, sort; X-Total-Count)", IMG, "read", 200),
    op("GET", "/api/block/image/default_features", "Features of a new image by default", IMG, "read", 200),
    op("GET", "/api/block/image/clone_format_version", "The clone format (1: parents are protected)", IMG, "read", 200),
    with_body(
        op("POST", "/api/block/image", "Create an image", IMG, "create", 201),
        r#"{"name":"vm1","pool_name":"rbd","size":10737418240,"features":["layering","exclusive-lock","object-map","fast-diff"]}"#,
    ),
    op("GET", "/api/block/image/{image_spec}", "Everything about an image", IMG, "read", 200),
    with_body(
        op(
            "PUT",
            "/api/block/image/{image_spec}",
            "Rename, resize, change features and configuration",
            IMG,
            "update",
            200,
        ),
        r#"{"size":21474836480}"#,
    ),
    as_task(
        op(
            "DELETE",
            "/api/block/image/{image_spec}",
            "Remove an image (refused with snapshots, clones or watchers)",
            IMG,
            "delete",
            204,
        ),
        "rbd/delete",
    ),
    as_task(
        with_body(
            op("POST", "/api/block/image/{image_spec}/copy", "Full copy into a new image", IMG, "create", 201),
            r#"{"dest_pool_name":"rbd","dest_image_name":"vm1-copy"}"#,
        ),
        "rbd/copy",
    ),
    as_task(
        with_body(
            op("POST", "/api/block/image/{image_spec}/deep_copy", "Copy with snapshots", IMG, "create", 201),
            r#"{"dest_pool_name":"rbd","dest_image_name":"vm1-deep"}"#,
        ),
        "rbd/deep_copy",
    ),
    as_task(
        op(
            "POST",
            "/api/block/image/{image_spec}/scrub",
            "Check every data block of the image (head and snapshots) against its checksum",
            IMG,
            "read",
            200,
        ),
        "rbd/scrub",
    ),
    as_task(
        op("POST", "/api/block/scrub", "Check every data block of every image against its checksum", IMG, "read", 200),
        "rbd/scrub",
    ),
    as_task(
        op(
            "POST",
            "/api/block/image/{image_spec}/flatten",
            "Copy the parent's data into a clone and detach it",
            IMG,
            "update",
            201,
        ),
        "rbd/flatten",
    ),
    with_body(
        op(
            "POST",
            "/api/block/image/{image_spec}/move_trash",
            "Move to the trash with a deferment",
            IMG,
            "create",
            201,
        ),
        r#"{"delay":86400}"#,
    ),
    op("GET", "/api/block/image/{image_spec}/du", "Provisioned and used bytes per snapshot and head", IMG, "read", 200),
    op("GET", "/api/block/image/{image_spec}/diff", "Changed extents between snapshots", IMG, "read", 200),
    op(
        "GET",
        "/api/block/image/{image_spec}/connection",
        "How to attach the image or a snapshot: NBD URIs, QEMU, libvirt, device map, nbd-client, credentials",
        IMG,
        "read",
        200,
    ),
    op(
        "GET",
        "/api/block/image/{image_spec}/export",
        "Stream the changes from_snap..snap (or all data) as an rbd diff v1 stream",
        IMG,
        "read",
        200,
    ),
    op(
        "POST",
        "/api/block/image/{image_spec}/import_diff",
        "Apply an rbd diff stream (v1 or v2) to the image",
        IMG,
        "update",
        200,
    ),
    with_body(
        op("POST", "/api/block/image/{image_spec}/snap", "Create a snapshot", IMG, "create", 201),
        r#"{"snapshot_name":"before-upgrade"}"#,
    ),
    as_task(
        op("POST", "/api/block/image/{image_spec}/snap_purge", "Remove every unprotected snapshot", IMG, "delete", 204),
        "rbd/snap/purge",
    ),
    with_body(
        op("PUT", "/api/block/image/{image_spec}/snap_limit", "Set or clear the snapshot limit", IMG, "update", 200),
        r#"{"limit":10}"#,
    ),
    with_body(
        op(
            "PUT",
            "/api/block/image/{image_spec}/snap/{snap}",
            "Rename, protect or unprotect a snapshot",
            IMG,
            "update",
            200,
        ),
        r#"{"is_protected":true}"#,
    ),
    op(
        "DELETE",
        "/api/block/image/{image_spec}/snap/{snap}",
        "Remove a snapshot (refused while protected)",
        IMG,
        "delete",
        204,
    ),
    as_task(
        op(
            "POST",
            "/api/block/image/{image_spec}/snap/{snap}/rollback",
            "Restore the image to the snapshot",
            IMG,
            "update",
            201,
        ),
        "rbd/snap/rollback",
    ),
    with_body(
        op("POST", "/api/block/image/{image_spec}/snap/{snap}/clone", "Clone a protected snapshot", IMG, "create", 201),
        r#"{"child_pool_name":"rbd","child_image_name":"vm2"}"#,
    ),
    op("GET", "/api/block/image/{image_spec}/snap/{snap}/children", "Clones of a snapshot", IMG, "read", 200),
    op("GET", "/api/block/image/trash", "Trash entries per pool", IMG, "read", 200),
    as_task(
        op(
            "POST",
            "/api/block/image/trash/purge",
            "Remove expired trash entries (those clones keep are reported)",
            IMG,
            "delete",
            201,
        ),
        "rbd/trash/purge",
    ),
    with_body(
        op("POST", "/api/block/image/trash/{image_id_spec}/restore", "Restore a trash entry", IMG, "create", 201),
        r#"{"new_image_name":"vm1"}"#,
    ),
    as_task(
        op(
            "DELETE",
            "/api/block/image/trash/{image_id_spec}",
            "Remove a trash entry (force before its deferment ends)",
            IMG,
            "delete",
            204,
        ),
        "rbd/trash/remove",
    ),
    op(
        "GET",
        "/api/block/image/trash/purge-schedule",
        "Trash purge schedules of a level (?pool_name=&namespace=&recursive=)",
        IMG,
        "read",
        200,
    ),
    with_body(
        op("POST", "/api/block/image/trash/purge-schedule", "Add a trash purge schedule", IMG, "delete", 201),
        r#"{"pool_name":"rbd","interval":"1d","start_time":"02:00"}"#,
    ),
    op(
        "DELETE",
        "/api/block/image/trash/purge-schedule",
        "Remove a trash purge schedule (?pool_name=&namespace=&interval=&start_time=)",
        IMG,
        "delete",
        204,
    ),
    op("GET", "/api/block/image/trash/purge-schedule/status", "Next scheduled trash purges", IMG, "read", 200),
];

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPS {
        let mut operation = Map::new();
        operation.insert("summary".into(), json!(o.summary));
        operation.insert("operationId".into(), json!(format!("{} {}", o.method, o.path)));
        let params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let description = match name {
                    "image_spec" => "URL-encoded pool[/namespace]/image",
                    "image_id_spec" => "URL-encoded pool[/namespace]/image_id",
                    _ => "",
                };
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "description": description})
            })
            .collect();
        operation.insert("parameters".into(), json!(params));
        if let Some(body) = o.body {
            let example: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}, "example": example}}}),
            );
        }
        let mut responses = Map::new();
        responses.insert(o.ok.to_string(), json!({"description": "success"}));
        if let Some(task) = o.task {
            responses
                .insert("202".into(), json!({"description": format!("still running as task {task}: poll /api/task")}));
        }
        for (code, what) in
            [("400", "refused: bad input, or the object's state (code: the errno)"), ("404", "not found")]
        {
            responses.insert(code.into(), json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
        }
        match o.need {
            Some((scope, perm)) => {
                responses.insert("401".into(), json!({"description": "no or invalid token"}));
                if !scope.is_empty() {
                    responses.insert("403".into(), json!({"description": format!("the role lacks {perm} on {scope}")}));
                    operation.insert("x-permission".into(), json!({"scope": scope, "permission": perm}));
                }
                operation.insert("security".into(), json!([{"bearer": []}]));
            }
            None => {
                operation.insert("security".into(), json!([]));
            }
        }
        if o.path == "/api/auth" && o.method == "POST" {
            let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
            for (code, what) in [
                ("400", "a user name over 64 bytes or a password over 1024 bytes"),
                ("401", "wrong user name or password, or a disabled user"),
                ("429", "too many password checks for this user or address: wait a minute"),
                ("507", "the server cannot store the session: its disk is full"),
            ] {
                responses.insert(code.into(), json!({"description": what, "content": error}));
            }
        }
        operation.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(o.path.to_owned()).or_insert_with(|| json!({}));
        if let Some(map) = entry.as_object_mut() {
            map.insert(o.method.to_ascii_lowercase(), Value::Object(operation));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "basalt", "version": env!("CARGO_PKG_VERSION"), "description": "Block images with Ceph RBD workflows"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["detail", "code"], "properties": {
                "detail": {"type": "string"},
                "code": {"type": ["string", "integer"], "description": "the errno as a decimal string, e.g. \"17\""},
                "component": {"type": ["string", "null"]},
                "status": {"type": ["integer", "string"]},
                "task": {"type": "object", "properties": {"name": {"type": "string"}, "metadata": {"type": "object"}}}
            }}}
        }
    })
}

pub(crate) async fn openapi_json(_caller: crate::auth::Caller) -> Json<Value> {
    Json(document())
}

pub(crate) async fn docs_page() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_SECURITY_POLICY, docs_policy())], Html(DOCS_HTML))
}

/// The docs page's content policy: its own inline script (by hash) and style, requests to this server only.
fn docs_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        let script = DOCS_HTML.split_once("<script>").and_then(|(_, rest)| rest.split_once("</script>"));
        use sha2::Digest as _;
        let hash = script.map(|(body, _)| base64(&sha2::Sha256::digest(body.as_bytes()))).unwrap_or_default();
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; \
             form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
        )
    })
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>basalt API</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
h1{font-size:1.4rem} .op{border:1px solid #ddd;border-radius:6px;margin:.5rem 0;padding:.5rem .8rem}
.m{display:inline-block;min-width:4.5rem;font-weight:700} .GET{color:#0a6} .POST{color:#06c} .PUT{color:#a60} .DELETE{color:#c22}
code{background:#f4f4f4;padding:0 .2rem} pre{background:#f7f7f7;padding:.4rem;overflow:auto} .perm{color:#666;font-size:.9em}
</style></head><body>
<h1>basalt REST API</h1>
<p>The machine-readable description is <code>GET /api/openapi.json</code> (with a token). Log in with
<code>POST /api/auth</code> and send <code>Authorization: Bearer &lt;token&gt;</code>; log in below to read it here.</p>
<form id="login"><label>User <input name="u" autocomplete="username" value="admin"></label>
<label>Password <input name="p" type="password" autocomplete="current-password"></label>
<button>Show the API</button></form>
<div id="ops"></div>
<script>
document.getElementById('login').addEventListener('submit', async ev => {
  ev.preventDefault();
  const f = ev.target;
  const r = await fetch('/api/auth', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({username: f.u.value, password: f.p.value})});
  const auth = await r.json();
  if (!r.ok) { document.getElementById('ops').textContent = auth.detail; return; }
  show(auth.token);
});
function show(token) {
fetch('/api/openapi.json', {headers: {Authorization: 'Bearer ' + token}}).then(r => r.json()).then(doc => {
  const root = document.getElementById('ops'); root.textContent = '';
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const div = document.createElement('div'); div.className = 'op';
      const m = document.createElement('span'); m.className = 'm ' + method.toUpperCase(); m.textContent = method.toUpperCase();
      const p = document.createElement('code'); p.textContent = path;
      const s = document.createElement('div'); s.textContent = op.summary;
      div.append(m, p, s);
      if (op['x-permission']) { const e = document.createElement('div'); e.className = 'perm';
        e.textContent = 'needs ' + op['x-permission'].permission + ' on ' + op['x-permission'].scope; div.append(e); }
      const body = op.requestBody && op.requestBody.content['application/json'].example;
      if (body) { const pre = document.createElement('pre'); pre.textContent = JSON.stringify(body, null, 2); div.append(pre); }
      const codes = document.createElement('div'); codes.className = 'perm';
      codes.textContent = 'answers: ' + Object.keys(op.responses).join(', '); div.append(codes);
      root.append(div);
    }
  }
}).catch(e => { document.getElementById('ops').textContent = 'cannot load the API description: ' + e; });
}
</script></body></html>"#;

#[cfg(test)]
mod csp_tests {
    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn the_login_refusals_are_documented() {
        let doc = super::document();
        let responses = &doc["paths"]["/api/auth"]["post"]["responses"];
        for code in ["201", "400", "401", "429", "507"] {
            assert!(responses[code].is_object(), "POST /api/auth does not document {code}: {responses}");
        }
    }
}
