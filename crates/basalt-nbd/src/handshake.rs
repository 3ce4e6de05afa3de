//! Option haggling: the fixed-newstyle handshake from the greeting to the chosen export.
//!
//! Every option gets a reply and negotiation goes on, except `NBD_OPT_EXPORT_NAME` (no error reply exists, so a
//! failure closes the connection) and framing violations (bad magic, oversized option), which close it too.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::access::Access;
use crate::conn::{ConnError, Shared, shutdown_requested};
use crate::export::{self, ExportInfo, ExportName, OpenExport, Refusal};
use crate::proto::{self, ClientFlags, Negotiated};

/// The most options one connection may send; a client that loops forever is cut off.
const MAX_OPTIONS: usize = 1024;

/// The metadata context id of `base:allocation` (any nonzero id the client echoes back would do).
pub(crate) const BASE_ALLOCATION_ID: u32 = 1;

/// Everything transmission needs from the handshake.
#[derive(Debug)]
pub(crate) struct Session {
    /// The export, open.
    pub export: OpenExport,
    /// Its canonical name, for logs.
    pub name: String,
    /// What the request decoder needs.
    pub negotiated: Negotiated,
}

/// How the handshake ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// An export was chosen: go on to transmission.
    Transmission(Session),
    /// The client asked for TLS and was told to go ahead: the TLS handshake comes next.
    StartTls,
    /// The client aborted, or the server refused `NBD_OPT_EXPORT_NAME` or is shutting down.
    Closed,
}

/// Where a connection stands with TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsPhase {
    /// The server offers no TLS: `NBD_OPT_STARTTLS` is unsupported.
    Off,
    /// The server insists on TLS and the client has not upgraded yet.
    Required,
    /// The connection runs over TLS.
    Active,
}

/// The transmission flags advertised for an export.
pub(crate) fn transmission_flags(info: &ExportInfo, structured: bool) -> u16 {
    let mut flags = proto::TFLAG_HAS_FLAGS | proto::TFLAG_SEND_FLUSH | proto::TFLAG_SEND_FUA | proto::TFLAG_SEND_CACHE;
    if info.read_only {
        flags |= proto::TFLAG_READ_ONLY;
    } else {
        // Zeroing that may unmap only touches metadata, so FAST_ZERO can be honoured; NO_HOLE with FAST_ZERO is
        // refused with ENOTSUP as the spec asks.
        flags |= proto::TFLAG_SEND_TRIM | proto::TFLAG_SEND_WRITE_ZEROES | proto::TFLAG_SEND_FAST_ZERO;
    }
    if structured {
        flags |= proto::TFLAG_SEND_DF;
    }
    if info.multi_conn {
        flags |= proto::TFLAG_CAN_MULTI_CONN;
    }
    flags
}

/// The meta contexts selected by the last `NBD_OPT_SET_META_CONTEXT`, and for which export.
#[derive(Debug)]
struct SelectedContexts {
    export: ExportName,
    base_allocation: bool,
}

/// Per-connection negotiation state.
struct Negotiation<'a> {
    shared: &'a Arc<Shared>,
    client: &'a str,
    /// The common name of the client's verified TLS certificate.
    identity: Option<&'a str>,
    tls: TlsPhase,
    structured: bool,
    no_zeroes: bool,
    contexts: Option<SelectedContexts>,
}

/// Sends the greeting and reads the client's flags.
pub(crate) async fn greet<R, W>(reader: &mut R, writer: &mut W) -> Result<ClientFlags, ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&proto::greeting()).await?;
    writer.flush().await?;
    let mut flag_bytes = [0u8; 4];
    reader.read_exact(&mut flag_bytes).await?;
    Ok(proto::parse_client_flags(flag_bytes)?)
}

/// Runs option haggling after the greeting (or after a TLS upgrade, with the same client flags).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn negotiate<R, W>(
    reader: &mut R,
    writer: &mut W,
    shared: &Arc<Shared>,
    client: &str,
    identity: Option<&str>,
    shutdown: &mut watch::Receiver<bool>,
    client_flags: ClientFlags,
    tls: TlsPhase,
) -> Result<Outcome, ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut state = Negotiation {
        shared,
        client,
        identity,
        tls,
        structured: false,
        no_zeroes: client_flags.no_zeroes,
        contexts: None,
    };

    for _ in 0..MAX_OPTIONS {
        let mut header_bytes = [0u8; proto::OPTION_HEADER_LEN];
        tokio::select! {
            biased;
            () = shutdown_requested(shutdown) => return Ok(Outcome::Closed),
            read = reader.read_exact(&mut header_bytes) => { read?; }
        }
        let header = proto::parse_option_header(&header_bytes)?;
        let mut data = vec![0u8; header.length as usize];
        reader.read_exact(&mut data).await?;
        if !client_flags.fixed_newstyle && header.option != proto::OPT_EXPORT_NAME {
            // Without fixed newstyle the client cannot parse option replies; the only way out is to hang up.
            return Err(ConnError::Refused(format!(
                "option {} from a client that did not ask for fixed newstyle",
                header.option
            )));
        }
        let shutting_down = *shutdown.borrow();
        if shutting_down && header.option == proto::OPT_EXPORT_NAME {
            // This option has no error reply: hanging up is the only answer.
            return Ok(Outcome::Closed);
        }
        let mut out = Vec::new();
        let outcome = if shutting_down && header.option != proto::OPT_ABORT {
            proto::option_error(&mut out, header.option, proto::REP_ERR_SHUTDOWN, "the server is shutting down");
            Some(Outcome::Closed)
        } else {
            // A failure of the server's own (a panic here or in a backend call) answers the option with an error
            // that says so, rather than closing the connection unanswered.
            match CatchPanic(Box::pin(state.handle_option(header.option, data, &mut out))).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(ConnError::Failed(why))) | Err(why) => {
                    out.clear();
                    if header.option == proto::OPT_EXPORT_NAME {
                        // This option has no error reply: hanging up is the only answer.
                        return Err(ConnError::Failed(why));
                    }
                    tracing::warn!(client, option = header.option, error = %why, "option failed in the server");
                    let message = format!("the server failed on this option: {why}");
                    proto::option_error(&mut out, header.option, proto::REP_ERR_PLATFORM, &message);
                    None
                }
                Ok(Err(err)) => return Err(err),
            }
        };
        writer.write_all(&out).await?;
        writer.flush().await?;
        if let Some(outcome) = outcome {
            return Ok(outcome);
        }
    }
    Err(ConnError::Refused(format!("more than {MAX_OPTIONS} options")))
}

impl Negotiation<'_> {
    /// Answers one option into `out`; returns the outcome when negotiation ends.
    async fn handle_option(
        &mut self,
        option: u32,
        data: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Outcome>, ConnError> {
        if self.tls == TlsPhase::Required && !matches!(option, proto::OPT_STARTTLS | proto::OPT_ABORT) {
            if option == proto::OPT_EXPORT_NAME {
                // No error reply exists for this option; hanging up is the only refusal.
                return Err(ConnError::Refused("NBD_OPT_EXPORT_NAME before the required TLS upgrade".into()));
            }
            proto::option_error(
                out,
                option,
                proto::REP_ERR_TLS_REQD,
                "this server requires TLS: send NBD_OPT_STARTTLS",
            );
            return Ok(None);
        }
        match option {
            proto::OPT_EXPORT_NAME => self.export_name(data, out).await,
            proto::OPT_ABORT => {
                proto::option_reply(out, option, proto::REP_ACK, &[]);
                Ok(Some(Outcome::Closed))
            }
            proto::OPT_LIST => {
                self.list(data, out).await?;
                Ok(None)
            }
            proto::OPT_INFO | proto::OPT_GO => self.info_or_go(option, data, out).await,
            proto::OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    self.structured = true;
                    proto::option_reply(out, option, proto::REP_ACK, &[]);
                } else {
                    proto::option_error(out, option, proto::REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
                }
                Ok(None)
            }
            proto::OPT_LIST_META_CONTEXT | proto::OPT_SET_META_CONTEXT => {
                self.meta_context(option, data, out).await?;
                Ok(None)
            }
            proto::OPT_STARTTLS => Ok(self.start_tls(&data, out)),
            other => {
                proto::option_error(out, other, proto::REP_ERR_UNSUP, &format!("option {other} is not supported"));
                Ok(None)
            }
        }
    }

    /// `NBD_OPT_STARTTLS`: acknowledged only when the server has TLS and the connection is not yet upgraded.
    fn start_tls(&self, data: &[u8], out: &mut Vec<u8>) -> Option<Outcome> {
        let option = proto::OPT_STARTTLS;
        match self.tls {
            TlsPhase::Off => {
                proto::option_error(out, option, proto::REP_ERR_UNSUP, "TLS is not configured on this listener");
                None
            }
            TlsPhase::Active => {
                proto::option_error(out, option, proto::REP_ERR_INVALID, "the connection already uses TLS");
                None
            }
            TlsPhase::Required if !data.is_empty() => {
                proto::option_error(out, option, proto::REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
                None
            }
            TlsPhase::Required => {
                proto::option_reply(out, option, proto::REP_ACK, &[]);
                Some(Outcome::StartTls)
            }
        }
    }

    /// Legacy `NBD_OPT_EXPORT_NAME`: open or hang up, since no error reply exists.
    async fn export_name(&mut self, data: Vec<u8>, out: &mut Vec<u8>) -> Result<Option<Outcome>, ConnError> {
        let name = String::from_utf8(data).map_err(|_| ConnError::Refused("export name is not UTF-8".into()))?;
        let export = ExportName::parse(&name).map_err(|r| ConnError::Refused(r.message))?;
        let read_only = self.permitted(&export).await?.map_err(|r| ConnError::Refused(r.message))?;
        let opened = self.open(&export, read_only).await.map_err(|r| ConnError::Refused(r.message))?;
        let flags = transmission_flags(&opened.info, self.structured);
        out.extend_from_slice(&proto::export_name_reply(opened.info.size_bytes, flags, self.no_zeroes));
        Ok(Some(Outcome::Transmission(self.session(export, opened))))
    }

    /// `NBD_OPT_LIST`: every image as `pool[/namespace]/image`.
    async fn list(&mut self, data: Vec<u8>, out: &mut Vec<u8>) -> Result<(), ConnError> {
        let option = proto::OPT_LIST;
        if !data.is_empty() {
            proto::option_error(out, option, proto::REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
            return Ok(());
        }
        let backend = self.shared.backend.clone();
        let authorizer = self.shared.authorizer.clone();
        let identity = self.identity.map(str::to_owned);
        let visible = move |image: &basalt_core::ImageSpec| {
            authorizer.as_ref().is_none_or(|a| a.access(identity.as_deref(), image) != Access::None)
        };
        match blocking(move || export::list(&*backend, visible)).await? {
            Ok(names) => {
                for name in names {
                    proto::option_reply(out, option, proto::REP_SERVER, &proto::rep_server_data(&name));
                }
                proto::option_reply(out, option, proto::REP_ACK, &[]);
            }
            Err(err) => {
                tracing::warn!(client = self.client, error = %err, "listing exports failed");
                let message = format!("cannot list exports: {} ({})", err.message(), err.kind().name());
                proto::option_error(out, option, proto::REP_ERR_PLATFORM, &message);
            }
        }
        Ok(())
    }

    /// `NBD_OPT_INFO` describes an export; `NBD_OPT_GO` also opens it and ends negotiation.
    async fn info_or_go(
        &mut self,
        option: u32,
        data: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Outcome>, ConnError> {
        let request = match proto::parse_info_request(&data) {
            Ok(request) => request,
            Err(invalid) => {
                proto::option_error(out, option, proto::REP_ERR_INVALID, &invalid.0);
                return Ok(None);
            }
        };
        let export = match ExportName::parse(&request.name) {
            Ok(export) => export,
            Err(refusal) => {
                self.refuse(option, &refusal, out);
                return Ok(None);
            }
        };
        let read_only = match self.permitted(&export).await? {
            Ok(read_only) => read_only,
            Err(refusal) => {
                self.refuse(option, &refusal, out);
                return Ok(None);
            }
        };
        let (info, opened) = if option == proto::OPT_GO {
            match self.open(&export, read_only).await {
                Ok(opened) => (opened.info.clone(), Some(opened)),
                Err(refusal) => {
                    self.refuse(option, &refusal, out);
                    return Ok(None);
                }
            }
        } else {
            let backend = self.shared.backend.clone();
            let described = export.clone();
            match blocking(move || export::describe(&*backend, &described, read_only)).await? {
                Ok(info) => (info, None),
                Err(refusal) => {
                    self.refuse(option, &refusal, out);
                    return Ok(None);
                }
            }
        };
        let flags = transmission_flags(&info, self.structured);
        proto::option_reply(out, option, proto::REP_INFO, &proto::info_export_data(info.size_bytes, flags));
        // Sent even unasked: with a minimum of 1 it constrains nothing, and clients learn the maximum.
        proto::option_reply(out, option, proto::REP_INFO, &proto::info_block_size_data());
        if request.requests.contains(&proto::INFO_NAME) {
            let name = proto::info_string_data(proto::INFO_NAME, &export.to_string());
            proto::option_reply(out, option, proto::REP_INFO, &name);
        }
        if request.requests.contains(&proto::INFO_DESCRIPTION) {
            let description = proto::info_string_data(proto::INFO_DESCRIPTION, &info.description);
            proto::option_reply(out, option, proto::REP_INFO, &description);
        }
        proto::option_reply(out, option, proto::REP_ACK, &[]);
        Ok(opened.map(|opened| Outcome::Transmission(self.session(export, opened))))
    }

    /// `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`: only `base:allocation` exists.
    async fn meta_context(&mut self, option: u32, data: Vec<u8>, out: &mut Vec<u8>) -> Result<(), ConnError> {
        if !self.structured {
            let message = "negotiate NBD_OPT_STRUCTURED_REPLY before meta contexts";
            proto::option_error(out, option, proto::REP_ERR_INVALID, message);
            return Ok(());
        }
        let request = match proto::parse_meta_context_request(&data) {
            Ok(request) => request,
            Err(invalid) => {
                proto::option_error(out, option, proto::REP_ERR_INVALID, &invalid.0);
                return Ok(());
            }
        };
        let export = match ExportName::parse(&request.name) {
            Ok(export) => export,
            Err(refusal) => {
                self.refuse(option, &refusal, out);
                return Ok(());
            }
        };
        let read_only = match self.permitted(&export).await? {
            Ok(read_only) => read_only,
            Err(refusal) => {
                self.refuse(option, &refusal, out);
                return Ok(());
            }
        };
        let backend = self.shared.backend.clone();
        let described = export.clone();
        if let Err(refusal) = blocking(move || export::describe(&*backend, &described, read_only)).await? {
            self.refuse(option, &refusal, out);
            return Ok(());
        }
        if option == proto::OPT_LIST_META_CONTEXT {
            let listed = request.queries.is_empty()
                || request.queries.iter().any(|q| proto::list_query_matches_base_allocation(q));
            if listed {
                // The spec reserves the id in list replies; zero is the recommended value.
                proto::option_reply(
                    out,
                    option,
                    proto::REP_META_CONTEXT,
                    &proto::meta_context_data(0, proto::BASE_ALLOCATION),
                );
            }
        } else {
            let selected = request.queries.iter().any(|q| q == proto::BASE_ALLOCATION);
            if selected {
                let data = proto::meta_context_data(BASE_ALLOCATION_ID, proto::BASE_ALLOCATION);
                proto::option_reply(out, option, proto::REP_META_CONTEXT, &data);
            }
            // Each SET replaces the previous selection, for the export it names.
            self.contexts = Some(SelectedContexts { export, base_allocation: selected });
        }
        proto::option_reply(out, option, proto::REP_ACK, &[]);
        Ok(())
    }

    /// Whether the client may use `export`: `Ok(read_only)`, or the refusal to send. Checked before the image is
    /// looked up, so a client without access cannot tell which images exist.
    async fn permitted(&self, export: &ExportName) -> Result<Result<bool, Refusal>, ConnError> {
        let Some(authorizer) = self.shared.authorizer.clone() else {
            return Ok(Ok(false));
        };
        let identity = self.identity.map(str::to_owned);
        let image = export.image.clone();
        let access = blocking(move || authorizer.access(identity.as_deref(), &image)).await?;
        Ok(match access {
            Access::ReadWrite => Ok(false),
            Access::ReadOnly => Ok(true),
            Access::None => {
                let who = match self.identity {
                    Some(name) => format!("user '{name}'"),
                    None => "a client without a certificate".to_owned(),
                };
                Err(Refusal {
                    reply: proto::REP_ERR_UNKNOWN,
                    message: format!("export '{export}' is not available to {who}"),
                })
            }
        })
    }

    async fn open(&self, export: &ExportName, read_only: bool) -> Result<OpenExport, Refusal> {
        let backend = self.shared.backend.clone();
        let export = export.clone();
        // The watcher's name says who, as well as from where, when the client has proved it.
        let client = match self.identity {
            Some(user) => format!("{} (user {user})", self.client),
            None => self.client.to_owned(),
        };
        let lock_wait = self.shared.limits.lock_wait;
        match blocking(move || export::open(&*backend, &export, &client, lock_wait, read_only)).await {
            Ok(result) => result,
            Err(err) => Err(Refusal { reply: proto::REP_ERR_UNKNOWN, message: err.to_string() }),
        }
    }

    fn refuse(&self, option: u32, refusal: &Refusal, out: &mut Vec<u8>) {
        tracing::info!(client = self.client, option, message = %refusal.message, "option refused");
        proto::option_error(out, option, refusal.reply, &refusal.message);
    }

    fn session(&self, export: ExportName, opened: OpenExport) -> Session {
        // Block status is allowed only when the last SET_META_CONTEXT named the export finally chosen.
        let base_allocation = match &self.contexts {
            Some(selected) if selected.export == export && selected.base_allocation => Some(BASE_ALLOCATION_ID),
            _ => None,
        };
        let negotiated = Negotiated { structured: self.structured, base_allocation, read_only: opened.info.read_only };
        tracing::info!(client = self.client, identity = self.identity, export = %export, read_only = negotiated.read_only,
            structured = negotiated.structured, "export opened");
        Session { export: opened, name: export.to_string(), negotiated }
    }
}

/// Runs a backend call on the blocking pool.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Result<T, ConnError> {
    tokio::task::spawn_blocking(call).await.map_err(|err| ConnError::Failed(format!("a backend call failed: {err}")))
}

/// Polls a future, turning a panic into `Err` with the panic's message (the future is not polled again).
struct CatchPanic<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                std::task::Poll::Ready(Err(format!("internal error: {what}")))
            }
        }
    }
}
