//! `GET /api/block/image/{image_spec}/connection`: how to attach an image or one of its snapshots, as NBD URIs, a
//! QEMU command line, a libvirt disk, `basalt device map` and `nbd-client` commands, and the credentials each needs.
//!
//! The image spec may end in `@snapshot` (percent-encoded, like the `/`), or the snapshot may come as `?snap=NAME`;
//! a snapshot is exported read-only.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use basalt_core::{Features, SnapName, SnapSpec, parse_spec};
use serde::Deserialize;
use serde_json::{Value, json};

use super::misc::{RBD_READ, RBD_UPDATE};
use super::{Params, parse};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, NbdEndpoint};

/// The query of the connection call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectionQuery {
    /// A snapshot of the image (instead of `@snap` in the spec).
    snap: Option<String>,
}

/// The warning of the seed's "Use Image After Create" step.
pub(crate) const SHARED_WRITE_WARNING: &str = "Attach an image read-write to one workload at a time: two VMs or \
     hosts writing the same image through an ordinary file system (ext4, xfs) corrupt it. Share an image only with a \
     cluster-aware file system, or attach the other users to a snapshot (read-only).";

/// The directory a client's certificate files go into, in the commands below (`basalt nbd cert issue USER --out`).
const CERT_DIR: &str = "CERT_DIR";

/// Answers the connection details of an image or snapshot.
pub(crate) async fn connection(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Params(query): Params<ConnectionQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let (image, in_spec) = parse(parse_spec(&spec))?;
    let snap = match (in_spec, query.snap) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give the snapshot either in the spec or as ?snap=")),
        (Some(s), None) => Some(s),
        (None, Some(s)) => Some(parse(SnapName::new(&s))?),
        (None, None) => None,
    };
    let Some(endpoint) = state.nbd_endpoint.clone() else {
        return Err(ApiError::internal("this server has no NBD data path"));
    };
    let lookup_image = image.clone();
    let lookup_snap = snap.clone();
    let (size, exclusive_lock) = state
        .call(move |b| {
            let info = match &lookup_snap {
                Some(snap) => b.image_info_at_snap(&SnapSpec { image: lookup_image.clone(), snap: snap.clone() })?,
                None => b.image_info(&lookup_image)?,
            };
            Ok((info.size_bytes, info.features.contains(Features::EXCLUSIVE_LOCK)))
        })
        .await?;
    let export = match &snap {
        Some(s) => format!("{image}@{s}"),
        None => image.to_string(),
    };
    let host = advertised_host(endpoint.tcp, &headers);
    let details = Details {
        export,
        read_only: snap.is_some(),
        host,
        port: endpoint.tcp.port(),
        endpoint: &endpoint,
        your_access: if snap.is_none() && who.can(RBD_UPDATE.scope, RBD_UPDATE.permission) {
            "read-write"
        } else {
            "read-only"
        },
        username: who.username.clone(),
    };
    let mut answer = details.to_json();
    answer["size"] = json!(size);
    answer["snapshot"] = json!(snap.as_ref().map(|s| s.as_str()));
    answer["image_spec"] = json!(image.to_string());
    answer["exclusive_lock"] = json!(exclusive_lock);
    Ok(Json(answer))
}

/// The host clients should dial: the listener's address, or, for a wildcard listener, the host the caller used to
/// reach the API.
fn advertised_host(listen: SocketAddr, headers: &HeaderMap) -> String {
    if !listen.ip().is_unspecified() {
        return listen.ip().to_string();
    }
    let from_header = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            // `[v6]:port`, `v6` never appears bare in a Host header; `name:port` or `name`.
            if let Some(rest) = h.strip_prefix('[') {
                rest.split(']').next().unwrap_or_default().to_owned()
            } else {
                h.rsplit_once(':').map_or(h, |(host, _)| host).to_owned()
            }
        })
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b)));
    from_header.unwrap_or_else(|| "localhost".to_owned())
}

struct Details<'a> {
    export: String,
    read_only: bool,
    host: String,
    port: u16,
    endpoint: &'a NbdEndpoint,
    your_access: &'static str,
    username: String,
}

impl Details<'_> {
    fn to_json(&self) -> Value {
        let ep = self.endpoint;
        let uri_host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let path = uri_path(&self.export);
        let socket = ep.unix_socket.to_string_lossy().into_owned();
        let tls_query = format!("?tls-certificates={CERT_DIR}");
        let tcp_uri = (!ep.tls).then(|| format!("nbd://{uri_host}:{}/{path}", self.port));
        let tls_uri = ep.tls.then(|| {
            let query = if ep.client_certificates { tls_query.as_str() } else { "" };
            format!("nbds://{uri_host}:{}/{path}{query}", self.port)
        });
        let unix_uri = format!("nbd+unix:///{path}?socket={}", uri_query_value(&socket));
        let ro = self.read_only;
        let address = format!("{uri_host}:{}", self.port);

        // QEMU: a -drive with the URI when it is plain; TLS needs the nbd driver's options and a tls-creds object.
        let qemu_export = qemu_value(&self.export);
        let readonly_drive = if ro { ",readonly=on" } else { "" };
        let readonly_blockdev = if ro { ",read-only=on" } else { "" };
        let tls_object = format!("-object tls-creds-x509,id=tls0,endpoint=client,dir={CERT_DIR}");
        let inet = format!("server.type=inet,server.host={},server.port={}", self.host, self.port);
        let drive = match &tcp_uri {
            Some(uri) => format!("-drive file={},format=raw,if=virtio,cache=none{readonly_drive}", qemu_value(uri)),
            None => format!(
                "{tls_object} -drive driver=nbd,{inet},export={qemu_export},tls-creds=tls0,if=virtio,cache=none\
                 {readonly_drive}"
            ),
        };
        let drive_unix =
            format!("-drive file={},format=raw,if=virtio,cache=none{readonly_drive}", qemu_value(&unix_uri));
        let blockdev = format!(
            "{}-blockdev driver=nbd,node-name=basalt0,{inet},export={qemu_export}{}{readonly_blockdev} \
             -device virtio-blk-pci,drive=basalt0",
            if ep.tls { format!("{tls_object} ") } else { String::new() },
            if ep.tls { ",tls-creds=tls0" } else { "" },
        );

        // libvirt: the same files, from qemu.conf's nbd_tls_x509_cert_dir, when the listener is TLS.
        let libvirt = format!(
            "<disk type='network' device='disk'>\n  <driver name='qemu' type='raw' cache='none'/>\n  \
             <source protocol='nbd' name='{}'{}>\n    <host name='{}' port='{}'/>\n  </source>\n  \
             <target dev='vdb' bus='virtio'/>\n{}</disk>",
            xml(&self.export),
            if ep.tls { " tls='yes'" } else { "" },
            xml(&self.host),
            self.port,
            if ro { "  <readonly/>\n" } else { "" },
        );
        let libvirt_unix = format!(
            "<disk type='network' device='disk'>\n  <driver name='qemu' type='raw' cache='none'/>\n  \
             <source protocol='nbd' name='{}'>\n    <host transport='unix' socket='{}'/>\n  </source>\n  \
             <target dev='vdb' bus='virtio'/>\n{}</disk>",
            xml(&self.export),
            xml(&socket),
            if ro { "  <readonly/>\n" } else { "" },
        );

        let export_arg = shell(&self.export);
        let tls_dir = if ep.client_certificates || ep.tls { format!(" --tls-dir {CERT_DIR}") } else { String::new() };
        let ro_flag = if ro { " --read-only" } else { "" };
        let device_map = format!("basalt device map --nbd-address {address}{tls_dir}{ro_flag} {export_arg}");
        let device_map_unix = format!("basalt device map --nbd-address unix:{}{ro_flag} {export_arg}", shell(&socket));
        let nbd_tls = if ep.tls {
            format!(
                " -cacertfile {CERT_DIR}/ca-cert.pem -certfile {CERT_DIR}/client-cert.pem \
                 -keyfile {CERT_DIR}/client-key.pem -tlshostname {}",
                self.host
            )
        } else {
            String::new()
        };
        let nbd_ro = if ro { " -readonly" } else { "" };
        let nbd_client =
            format!("nbd-client {} {} /dev/nbd0 -name {export_arg}{nbd_tls}{nbd_ro}", self.host, self.port);
        let nbd_client_unix = format!("nbd-client -unix {} /dev/nbd0 -name {export_arg}{nbd_ro}", shell(&socket));

        let tcp_credentials = if ep.client_certificates {
            format!(
                "a TLS client certificate naming a basalt user, in {CERT_DIR} (ca-cert.pem, client-cert.pem, \
                 client-key.pem): `basalt nbd cert issue {} --out {CERT_DIR}` or POST /api/user/{}/nbd-certificate. \
                 The user's roles decide: rbd-image update gets read-write exports, rbd-image read read-only ones.",
                shell(&self.username),
                self.username
            )
        } else if ep.tls {
            format!(
                "none beyond trusting the listener's certificate (its CA in {CERT_DIR}/ca-cert.pem): the NBD \
                 listener does not ask for client certificates"
            )
        } else {
            "none: the NBD listener has no client authentication, so every process that reaches it can read and \
             write every image"
                .to_owned()
        };
        json!({
            "export_name": self.export,
            "read_only": ro,
            "nbd": {
                "address": address,
                "host": self.host,
                "port": self.port,
                "tls": ep.tls,
                "client_certificates": ep.client_certificates,
                "unix_socket": socket,
            },
            "uris": { "tcp": tcp_uri, "tls": tls_uri, "unix": unix_uri },
            "qemu": { "drive": drive, "drive_unix": drive_unix, "blockdev": blockdev },
            "libvirt": { "tcp": libvirt, "unix": libvirt_unix },
            "device_map": { "tcp": device_map, "unix": device_map_unix },
            "nbd_client": { "tcp": nbd_client, "unix": nbd_client_unix },
            "credentials": {
                "tcp": tcp_credentials,
                "unix": "access to the server's data directory: the Unix socket is the local administrator's \
                         (mode 0600, the user running basalt serve, or root); no certificate",
                "cert_dir": CERT_DIR,
                "user": self.username,
                "your_access": self.your_access,
            },
            "warning": SHARED_WRITE_WARNING,
        })
    }
}

/// Percent-encodes an export name for a URI path (`/` and `@` stay).
fn uri_path(text: &str) -> String {
    encode(text, b"-._~/@")
}

/// Percent-encodes a query value (`/` stays).
fn uri_query_value(text: &str) -> String {
    encode(text, b"-._~/")
}

fn encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A value inside QEMU's comma-separated options: commas doubled.
fn qemu_value(text: &str) -> String {
    text.replace(',', ",,")
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._/@:=+,".contains(&b)) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Escapes text for an XML attribute in single quotes.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(tcp: &str, tls: bool, certs: bool) -> NbdEndpoint {
        NbdEndpoint {
            tcp: tcp.parse().expect("address"),
            tls,
            client_certificates: certs,
            unix_socket: "/var/lib/basalt/nbd.sock".into(),
        }
    }

    fn details(ep: &NbdEndpoint, export: &str, read_only: bool) -> Value {
        Details {
            export: export.into(),
            read_only,
            host: ep.tcp.ip().to_string(),
            port: ep.tcp.port(),
            endpoint: ep,
            your_access: if read_only { "read-only" } else { "read-write" },
            username: "admin".into(),
        }
        .to_json()
    }

    #[test]
    fn plain_listener_gets_nbd_uris_and_a_drive_line() {
        let ep = endpoint("127.0.0.1:10809", false, false);
        let d = details(&ep, "rbd/vm1", false);
        assert_eq!(d["uris"]["tcp"], "nbd://127.0.0.1:10809/rbd/vm1");
        assert_eq!(d["uris"]["tls"], Value::Null);
        assert_eq!(d["uris"]["unix"], "nbd+unix:///rbd/vm1?socket=/var/lib/basalt/nbd.sock");
        assert_eq!(d["qemu"]["drive"], "-drive file=nbd://127.0.0.1:10809/rbd/vm1,format=raw,if=virtio,cache=none");
        assert!(d["libvirt"]["tcp"].as_str().expect("xml").contains("<source protocol='nbd' name='rbd/vm1'>"));
        assert_eq!(d["device_map"]["tcp"], "basalt device map --nbd-address 127.0.0.1:10809 rbd/vm1");
        assert_eq!(d["nbd_client"]["tcp"], "nbd-client 127.0.0.1 10809 /dev/nbd0 -name rbd/vm1");
        assert!(d["credentials"]["tcp"].as_str().expect("text").starts_with("none"));
    }

    #[test]
    fn tls_listener_gets_certificates_everywhere_and_snapshots_are_read_only() {
        let ep = endpoint("10.0.0.5:10809", true, true);
        let d = details(&ep, "rbd/ns/vm1@s1", true);
        assert_eq!(d["uris"]["tcp"], Value::Null);
        assert_eq!(d["uris"]["tls"], "nbds://10.0.0.5:10809/rbd/ns/vm1@s1?tls-certificates=CERT_DIR");
        let drive = d["qemu"]["drive"].as_str().expect("drive");
        assert!(drive.starts_with("-object tls-creds-x509,id=tls0,endpoint=client,dir=CERT_DIR -drive driver=nbd,"));
        assert!(drive.contains("tls-creds=tls0") && drive.ends_with(",readonly=on"), "{drive}");
        assert!(d["qemu"]["blockdev"].as_str().expect("blockdev").contains(",tls-creds=tls0,read-only=on"));
        let xml = d["libvirt"]["tcp"].as_str().expect("xml");
        assert!(xml.contains("tls='yes'") && xml.contains("<readonly/>"), "{xml}");
        assert_eq!(
            d["device_map"]["tcp"],
            "basalt device map --nbd-address 10.0.0.5:10809 --tls-dir CERT_DIR --read-only rbd/ns/vm1@s1"
        );
        let nbd_client = d["nbd_client"]["tcp"].as_str().expect("nbd-client");
        assert!(nbd_client.contains("-certfile CERT_DIR/client-cert.pem") && nbd_client.ends_with(" -readonly"));
        assert!(d["credentials"]["tcp"].as_str().expect("text").contains("basalt nbd cert issue admin"));
    }

    #[test]
    fn odd_names_are_quoted_for_each_syntax() {
        let ep = endpoint("[::1]:10809", false, false);
        let d = details(&ep, "rbd/it's a,b", false);
        assert_eq!(d["uris"]["tcp"], "nbd://[::1]:10809/rbd/it%27s%20a%2Cb");
        assert_eq!(d["device_map"]["tcp"], "basalt device map --nbd-address [::1]:10809 'rbd/it'\\''s a,b'");
        assert!(d["libvirt"]["tcp"].as_str().expect("xml").contains("name='rbd/it&apos;s a,b'"));
        assert!(d["qemu"]["blockdev"].as_str().expect("blockdev").contains("export=rbd/it's a,,b"));
    }

    #[test]
    fn wildcard_listeners_advertise_the_host_the_caller_used() {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::HOST, "storage.example:8080".parse().expect("header"));
        assert_eq!(advertised_host("0.0.0.0:10809".parse().expect("addr"), &headers), "storage.example");
        headers.insert(axum::http::header::HOST, "[fd00::1]:8080".parse().expect("header"));
        assert_eq!(advertised_host("[::]:10809".parse().expect("addr"), &headers), "fd00::1");
        headers.insert(axum::http::header::HOST, "evil'host".parse().expect("header"));
        assert_eq!(advertised_host("0.0.0.0:10809".parse().expect("addr"), &headers), "localhost");
        assert_eq!(advertised_host("192.0.2.1:10809".parse().expect("addr"), &headers), "192.0.2.1");
    }
}
