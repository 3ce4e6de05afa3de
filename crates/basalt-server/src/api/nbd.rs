//! `/api/user/{username}/nbd-certificate`: TLS client certificates for NBD, issued by basalt's own CA, whose common
//! name is the user. The NBD listener (with `--nbd-tls auto` or a client CA) maps them to the user's roles.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::auth::{Caller, Need};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const USER_UPDATE: Need = Need { scope: "user", permission: "update" };

/// Issues a certificate and key for `username`: for that user, or for a caller who may update users. The key is
/// made here and returned once; basalt keeps no copy.
pub(crate) async fn issue_certificate(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(username): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if who.username != username {
        who.require(USER_UPDATE)?;
    }
    let Some(ca) = state.nbd_ca.clone() else {
        return Err(ApiError::internal("this server has no NBD certificate authority"));
    };
    let auth = state.auth.clone();
    let issued = tokio::task::spawn_blocking(move || {
        // Only an existing user gets one: a certificate for a name nobody has would be a dormant credential.
        let user = auth.user(&username)?;
        let issued = ca.issue_client(&user.username)?;
        Ok::<_, basalt_core::Error>((user.username, issued, ca.ca_cert_pem().to_owned()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let (username, issued, ca_cert) = issued.map_err(super::access::access_error)?;
    tracing::info!(user = %username, by = %who.username, "issued an NBD client certificate");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "username": username,
            "ca_cert": ca_cert,
            "client_cert": issued.cert_pem,
            "client_key": issued.key_pem,
            "valid_days": crate::nbd_access::CLIENT_CERT_DAYS,
        })),
    ))
}
