//! `/api/auth`, `/api/user`, `/api/role`: login, logout, users and roles.

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Body;
use crate::auth::{Caller, Need, Role, UserChange, UserRec};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const USER_READ: Need = Need { scope: "user", permission: "read" };
const USER_CREATE: Need = Need { scope: "user", permission: "create" };
const USER_UPDATE: Need = Need { scope: "user", permission: "update" };
const USER_DELETE: Need = Need { scope: "user", permission: "delete" };

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    username: String,
    password: String,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> basalt_core::Result<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(e.to_string()))?.map_err(access_error)
}

/// A refusal of the access-control store as Ceph's user and role controllers give theirs: a missing user or role
/// 404, others 400 in component `user` or `role` (Ceph names existing ones `username_already_exists` and
/// `role_already_exists`).
pub(super) fn access_error(e: basalt_core::Error) -> ApiError {
    use basalt_core::ErrorKind;
    let kind = e.kind();
    let role = e.message().starts_with("role");
    let err = ApiError::from(e);
    let err = ApiError { component: Some(if role { "role" } else { "user" }), ..err };
    match kind {
        ErrorKind::NotFound => err.missing_is_404(),
        ErrorKind::AlreadyExists if role => err.named("role_already_exists"),
        ErrorKind::AlreadyExists => err.named("username_already_exists"),
        _ => err,
    }
}

pub(crate) async fn login(
    State(state): State<AppState>,
    connect: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Body(body): Body<LoginBody>,
) -> ApiResult<Response> {
    let client = connect.map(|c| c.0.0.ip().to_string()).unwrap_or_else(|| "local".into());
    let auth = state.auth.clone();
    let result = tokio::task::spawn_blocking(move || auth.login(&body.username, &body.password, &client))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match result {
        Ok(login) => Ok((
            StatusCode::CREATED,
            Json(json!({
                "token": login.token,
                "username": login.principal.username,
                "permissions": login.principal.grants,
            })),
        )
            .into_response()),
        Err(e) => Err(auth_error(e)),
    }
}

/// The status of a refused password check: too many tries 429, over-long input 400, wrong credentials 401, and a
/// failure of the server (a full disk: 507) as itself, logged, never disguised as a wrong password.
fn auth_error(e: basalt_core::Error) -> ApiError {
    use basalt_core::ErrorKind;
    match e.kind() {
        ErrorKind::TryAgain => ApiError::too_many(e.message()),
        ErrorKind::InvalidArgument => ApiError::bad_request(e.message()),
        ErrorKind::NotPermitted => ApiError::unauthorized(e.message()),
        _ => {
            tracing::error!(error = %e, "checking a password failed");
            ApiError::from(e)
        }
    }
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let auth = state.auth.clone();
    blocking(move || auth.logout(&who)).await?;
    Ok((StatusCode::CREATED, Json(json!({"redirect_url": "/#/login"}))))
}

pub(crate) async fn check(Caller(who): Caller) -> Json<serde_json::Value> {
    Json(json!({"username": who.username, "permissions": who.grants}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenField {
    token: Option<String>,
}

/// `POST /api/auth/check?token=...` (or `{"token"}` in the body), as Ceph's clients check a token: 201 with who it
/// belongs to, 401 for a token that is invalid or expired.
pub(crate) async fn check_token(
    State(state): State<AppState>,
    super::Params(query): super::Params<TokenField>,
    super::OptionalBody(body): super::OptionalBody<TokenField>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let token = query
        .token
        .or(body.and_then(|b| b.token))
        .ok_or_else(|| ApiError::bad_request("give the token to check as ?token= or {\"token\": ...}"))?;
    let auth = state.auth.clone();
    let who = tokio::task::spawn_blocking(move || auth.authenticate(&token))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::unauthorized(e.message()))?;
    let answer = json!({"username": who.username, "permissions": who.grants, "sso": false, "pwdUpdateRequired": false});
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Debug, Serialize)]
pub(crate) struct UserView {
    username: String,
    roles: Vec<String>,
    name: String,
    email: String,
    enabled: bool,
    last_update: String,
}

impl From<UserRec> for UserView {
    fn from(u: UserRec) -> UserView {
        UserView {
            username: u.username,
            roles: u.roles,
            name: u.name,
            email: u.email,
            enabled: u.enabled,
            last_update: super::rfc3339(u.last_update),
        }
    }
}

pub(crate) async fn list_users(State(state): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Vec<UserView>>> {
    who.require(USER_READ)?;
    let auth = state.auth.clone();
    let users = blocking(move || auth.users()).await?;
    Ok(Json(users.into_iter().map(UserView::from).collect()))
}

pub(crate) async fn get_user(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserView>> {
    if who.username != name {
        who.require(USER_READ)?;
    }
    let auth = state.auth.clone();
    Ok(Json(blocking(move || auth.user(&name)).await?.into()))
}

/// A user body as Ceph's clients send it: basalt's fields, plus Ceph's password expiry and must-change flag, which
/// basalt has no use for (noted in the answer's `Warning` header when set).
fn user_change(mut body: serde_json::Map<String, serde_json::Value>) -> ApiResult<(UserChange, super::Ignored)> {
    let mut ignored = super::Ignored::default();
    let expiry = body.remove("pwdExpirationDate");
    ignored.note("pwdExpirationDate", expiry.as_ref(), "basalt's passwords do not expire");
    let must_change = body.remove("pwdUpdateRequired");
    ignored.note("pwdUpdateRequired", must_change.as_ref(), "basalt does not force password changes");
    let change = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    Ok((change, ignored))
}

pub(crate) async fn create_user(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(body): Body<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<(StatusCode, axum::http::HeaderMap, Json<UserView>)> {
    who.require(USER_CREATE)?;
    let (change, ignored) = user_change(body)?;
    let auth = state.auth.clone();
    let user = blocking(move || auth.create_user(change)).await?;
    Ok((StatusCode::CREATED, ignored.headers(), Json(user.into())))
}

pub(crate) async fn update_user(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Body(body): Body<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<(axum::http::HeaderMap, Json<UserView>)> {
    who.require(USER_UPDATE)?;
    let (change, ignored) = user_change(body)?;
    let auth = state.auth.clone();
    Ok((ignored.headers(), Json(blocking(move || auth.update_user(&name, change)).await?.into())))
}

pub(crate) async fn delete_user(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(USER_DELETE)?;
    let auth = state.auth.clone();
    blocking(move || auth.remove_user(&name, &who)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordBody {
    old_password: String,
    new_password: String,
}

pub(crate) async fn change_password(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Body(body): Body<PasswordBody>,
) -> ApiResult<StatusCode> {
    if who.username != name {
        return Err(ApiError::forbidden("users change only their own password; administrators edit the user"));
    }
    let auth = state.auth.clone();
    let result =
        tokio::task::spawn_blocking(move || auth.change_password(&who, &body.old_password, &body.new_password))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    match result {
        Ok(()) => Ok(StatusCode::CREATED),
        Err(e) if e.kind() == basalt_core::ErrorKind::TryAgain => Err(ApiError::too_many(e.message())),
        Err(e) if e.kind() == basalt_core::ErrorKind::NoSpace || e.kind() == basalt_core::ErrorKind::Io => {
            tracing::error!(error = %e, "changing a password failed");
            Err(ApiError::from(e))
        }
        Err(e) => Err(ApiError::from(e)),
    }
}

pub(crate) async fn list_roles(State(state): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Vec<Role>>> {
    who.require(USER_READ)?;
    let auth = state.auth.clone();
    Ok(Json(blocking(move || auth.roles()).await?))
}

pub(crate) async fn get_role(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Role>> {
    who.require(USER_READ)?;
    let auth = state.auth.clone();
    let role = blocking(move || auth.role(&name)).await?;
    role.map(Json).ok_or_else(|| ApiError::not_found("role does not exist"))
}

pub(crate) async fn create_role(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(role): Body<Role>,
) -> ApiResult<StatusCode> {
    who.require(USER_CREATE)?;
    let auth = state.auth.clone();
    blocking(move || auth.put_role(role, true)).await?;
    Ok(StatusCode::CREATED)
}

pub(crate) async fn update_role(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Body(role): Body<Role>,
) -> ApiResult<StatusCode> {
    who.require(USER_UPDATE)?;
    if role.name != name {
        return Err(ApiError::bad_request("the role name in the body must match the path"));
    }
    let auth = state.auth.clone();
    blocking(move || auth.put_role(role, false)).await?;
    Ok(StatusCode::OK)
}

pub(crate) async fn delete_role(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(USER_DELETE)?;
    let auth = state.auth.clone();
    blocking(move || auth.remove_role(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use basalt_core::{Error, ErrorKind};

    use super::auth_error;
    use crate::auth::Auth;
    use crate::store::{KvStore, ServerStore, TOKENS, Table};

    /// A store whose disk fills up when sessions are written.
    #[derive(Debug)]
    struct FullForTokens(Arc<dyn KvStore>);

    impl KvStore for FullForTokens {
        fn get(&self, table: Table, key: &str) -> basalt_core::Result<Option<Vec<u8>>> {
            self.0.get(table, key)
        }
        fn list(&self, table: Table) -> basalt_core::Result<Vec<(String, Vec<u8>)>> {
            self.0.list(table)
        }
        fn put(&self, table: Table, key: &str, value: &[u8]) -> basalt_core::Result<()> {
            if table == TOKENS {
                return Err(Error::new(ErrorKind::NoSpace, "server store: the disk is full"));
            }
            self.0.put(table, key, value)
        }
        fn remove(&self, table: Table, keys: &[String]) -> basalt_core::Result<usize> {
            self.0.remove(table, keys)
        }
    }

    #[test]
    fn a_full_disk_at_login_is_507_not_401() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inner = Arc::new(crate::store::RedbStore::open(dir.path()).expect("store"));
        let auth = Auth::new(ServerStore::over(Arc::new(FullForTokens(inner))));
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        let err = auth.login("admin", "correct horse", "c").expect_err("no room for the session");
        assert_eq!(err.kind(), ErrorKind::NoSpace);
        assert_eq!(auth_error(err).status.as_u16(), 507);
        let wrong = auth.login("admin", "wrong", "c").expect_err("wrong");
        assert_eq!(auth_error(wrong).status.as_u16(), 401);
    }
}
