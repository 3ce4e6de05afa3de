//! Users, roles and API tokens: argon2id password hashes, opaque random tokens stored as SHA-256 hashes, login rate
//! limiting, and the `Caller` extractor that turns a request into the permissions of its user.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use basalt_core::{Error, ErrorKind, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{ROLES, ServerStore, TOKENS, USERS};

/// What a permission applies to, named as the reference dashboard names its scopes.
pub const SCOPES: &[&str] = &[
    "hosts",
    "config-opt",
    "pool",
    "osd",
    "monitor",
    "rbd-image",
    "iscsi",
    "rbd-mirroring",
    "rgw",
    "cephfs",
    "manager",
    "log",
    "grafana",
    "prometheus",
    "user",
    "dashboard-settings",
    "nfs-ganesha",
    "nvme-of",
    "smb",
];

/// The four permissions.
pub const PERMISSIONS: &[&str] = &["read", "create", "update", "delete"];

/// A scope and permission pair that a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The scope (`rbd-image`).
    pub scope: &'static str,
    /// The permission (`read`).
    pub permission: &'static str,
}

/// Permissions by scope.
pub type Grants = BTreeMap<String, BTreeSet<String>>;

/// How long a token stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(8 * 3600);
/// Failed logins allowed per user and client within [`LOGIN_WINDOW`].
pub const LOGIN_FAILURES_MAX: usize = 5;
/// The window of the login rate limit.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// A role: fixed system roles and stored custom ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Permissions by scope.
    pub scopes_permissions: Grants,
    /// True for the built-in roles, which cannot change.
    #[serde(default)]
    pub system: bool,
}

fn grants(pairs: &[(&str, &[&str])]) -> Grants {
    pairs.iter().map(|(s, ps)| ((*s).to_owned(), ps.iter().map(|p| (*p).to_owned()).collect())).collect()
}

/// The built-in roles.
pub fn system_roles() -> Vec<Role> {
    let all: Vec<(&str, &[&str])> = SCOPES.iter().map(|s| (*s, PERMISSIONS)).collect();
    let read_all: Vec<(&str, &[&str])> =
        SCOPES.iter().filter(|s| **s != "dashboard-settings").map(|s| (*s, &["read"][..])).collect();
    let crud: &[&str] = PERMISSIONS;
    vec![
        Role {
            name: "administrator".into(),
            description: "everything".into(),
            scopes_permissions: grants(&all),
            system: true,
        },
        Role {
            name: "read-only".into(),
            description: "sees everything, changes nothing".into(),
            scopes_permissions: grants(&read_all),
            system: true,
        },
        Role {
            name: "block-manager".into(),
            description: "manages block images, reads pools".into(),
            scopes_permissions: grants(&[
                ("rbd-image", crud),
                ("iscsi", crud),
                ("rbd-mirroring", crud),
                ("pool", &["read"]),
                ("grafana", &["read"]),
            ]),
            system: true,
        },
        Role {
            name: "pool-manager".into(),
            description: "manages pools".into(),
            scopes_permissions: grants(&[("pool", crud), ("grafana", &["read"])]),
            system: true,
        },
    ]
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRec {
    /// Login name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Full name.
    pub name: String,
    /// E-mail.
    pub email: String,
    /// Disabled users cannot log in.
    pub enabled: bool,
    /// Last change (seconds since the epoch).
    pub last_update: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRec {
    username: String,
    expires_at: u64,
}

/// Who is calling, with what permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name (`local-admin` for the Unix socket).
    pub username: String,
    /// Effective permissions.
    pub grants: Grants,
    /// The hash of the token used, for logout.
    token_hash: Option<String>,
}

impl Principal {
    /// The owner of the data directory, connected through the API socket.
    pub fn local_admin() -> Principal {
        let admin = system_roles().into_iter().find(|r| r.name == "administrator").map(|r| r.scopes_permissions);
        Principal { username: "local-admin".into(), grants: admin.unwrap_or_default(), token_hash: None }
    }

    /// True when the principal has `permission` on `scope`.
    pub fn can(&self, scope: &str, permission: &str) -> bool {
        self.grants.get(scope).is_some_and(|ps| ps.contains(permission))
    }

    /// Refuses with 403 unless the principal has the permission.
    pub fn require(&self, need: Need) -> std::result::Result<(), ApiError> {
        if self.can(need.scope, need.permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user '{}' lacks the {} permission on {}: ask an administrator for a role that grants it",
                self.username, need.permission, need.scope
            )))
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// TCP: needs a token.
    Network,
    /// The API socket, reachable only by the data directory's owner: acts as administrator.
    LocalSocket,
}

/// The authenticated caller of a request (401 without a valid token).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> std::result::Result<Caller, ApiError> {
        if parts.extensions.get::<Origin>() == Some(&Origin::LocalSocket) {
            return Ok(Caller(Principal::local_admin()));
        }
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
            return Err(ApiError::unauthorized(
                "log in first: send 'Authorization: Bearer <token>' from POST /api/auth",
            ));
        };
        let auth = state.auth.clone();
        let token = token.to_owned();
        let principal = tokio::task::spawn_blocking(move || auth.authenticate(&token))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        principal.map(Caller).map_err(|e| ApiError::unauthorized(e.message().to_owned()))
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_password(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::io(format!("hashing the password failed: {e}")))
}

fn check_password_rules(password: &str) -> Result<()> {
    if password.chars().count() < 8 {
        bail!(InvalidArgument, "the password must have at least 8 characters");
    }
    if password.len() > 1024 {
        bail!(InvalidArgument, "the password is longer than 1024 bytes");
    }
    Ok(())
}

fn check_user_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)) {
        bail!(InvalidArgument, "user name '{name}' must be 1 to 64 letters, digits, '.', '_', '-' or '@'");
    }
    Ok(())
}

/// Users, roles and tokens.
#[derive(Debug)]
pub struct Auth {
    store: ServerStore,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

/// What a login returns.
#[derive(Debug, Clone)]
pub struct Login {
    /// The token to send as a bearer token.
    pub token: String,
    /// Who logged in.
    pub principal: Principal,
}

/// The fields of a user that can be set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// Login name (create only).
    pub username: Option<String>,
    /// New password.
    pub password: Option<String>,
    /// Roles.
    pub roles: Option<Vec<String>>,
    /// Full name.
    pub name: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// Enabled.
    pub enabled: Option<bool>,
}

impl Auth {
    /// Users, roles and tokens kept in `store`.
    pub fn new(store: ServerStore) -> Auth {
        Auth { store, failures: Mutex::new(HashMap::new()) }
    }

    /// Creates `admin` if no user exists: with `password` if given, else a generated one that is returned.
    pub fn ensure_admin(&self, password: Option<String>) -> Result<Option<String>> {
        if !self.store.list::<UserRec>(USERS)?.is_empty() {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) => (p, false),
            None => (random_hex(12), true),
        };
        check_password_rules(&password)?;
        let rec = UserRec {
            username: "admin".into(),
            password_hash: hash_password(&password)?,
            roles: vec!["administrator".into()],
            name: "administrator".into(),
            email: String::new(),
            enabled: true,
            last_update: now_secs(),
        };
        self.store.put(USERS, "admin", &rec)?;
        Ok(generated.then_some(password))
    }

    fn limiter_key(username: &str, client: &str) -> String {
        format!("{username}\u{0}{client}")
    }

    /// Checks a password and returns a new token; refuses with EAGAIN after too many failures.
    pub fn login(&self, username: &str, password: &str, client: &str) -> Result<Login> {
        let key = Self::limiter_key(username, client);
        {
            let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let recent = failures.entry(key.clone()).or_default();
            recent.retain(|t| t.elapsed() < LOGIN_WINDOW);
            if recent.len() >= LOGIN_FAILURES_MAX {
                bail!(TryAgain, "too many failed logins for '{username}': wait a minute and try again");
            }
        }
        let user = self.store.get::<UserRec>(USERS, username)?;
        let verified = user.as_ref().is_some_and(|u| {
            u.enabled && Argon2::default().verify_password(password.as_bytes(), u.password_hash.as_str()).is_ok()
        });
        let Some(user) = user.filter(|_| verified) else {
            let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            failures.entry(key).or_default().push(Instant::now());
            bail!(NotPermitted, "invalid user name or password");
        };
        let token = random_hex(32);
        let hash = hash_token(&token);
        let rec = TokenRec { username: user.username.clone(), expires_at: now_secs() + TOKEN_TTL.as_secs() };
        self.store.put(TOKENS, &hash, &rec)?;
        let mut principal = self.principal_of(&user)?;
        principal.token_hash = Some(hash);
        Ok(Login { token, principal })
    }

    /// Turns a token into its principal.
    pub fn authenticate(&self, token: &str) -> Result<Principal> {
        let hash = hash_token(token);
        let rec = self
            .store
            .get::<TokenRec>(TOKENS, &hash)?
            .filter(|t| t.expires_at > now_secs())
            .ok_or_else(|| Error::new(ErrorKind::NotPermitted, "the token is invalid or expired: log in again"))?;
        let user =
            self.store.get::<UserRec>(USERS, &rec.username)?.filter(|u| u.enabled).ok_or_else(|| {
                Error::new(ErrorKind::NotPermitted, "the token's user no longer exists or is disabled")
            })?;
        let mut principal = self.principal_of(&user)?;
        principal.token_hash = Some(hash);
        Ok(principal)
    }

    /// Invalidates the principal's token.
    pub fn logout(&self, principal: &Principal) -> Result<()> {
        if let Some(hash) = &principal.token_hash {
            self.store.remove(TOKENS, hash)?;
        }
        Ok(())
    }

    fn principal_of(&self, user: &UserRec) -> Result<Principal> {
        let mut grants = Grants::new();
        for role_name in &user.roles {
            if let Some(role) = self.role(role_name)? {
                for (scope, perms) in role.scopes_permissions {
                    grants.entry(scope).or_default().extend(perms);
                }
            }
        }
        Ok(Principal { username: user.username.clone(), grants, token_hash: None })
    }

    /// Every role, system roles first.
    pub fn roles(&self) -> Result<Vec<Role>> {
        let mut roles = system_roles();
        roles.extend(self.store.list::<Role>(ROLES)?.into_iter().map(|(_, r)| r));
        Ok(roles)
    }

    /// One role by name.
    pub fn role(&self, name: &str) -> Result<Option<Role>> {
        if let Some(role) = system_roles().into_iter().find(|r| r.name == name) {
            return Ok(Some(role));
        }
        self.store.get::<Role>(ROLES, name)
    }

    fn check_grants(grants: &Grants) -> Result<()> {
        for (scope, perms) in grants {
            if !SCOPES.contains(&scope.as_str()) {
                bail!(InvalidArgument, "unknown scope '{scope}'");
            }
            if let Some(p) = perms.iter().find(|p| !PERMISSIONS.contains(&p.as_str())) {
                bail!(InvalidArgument, "unknown permission '{p}': use read, create, update or delete");
            }
        }
        Ok(())
    }

    /// Creates or replaces a custom role.
    pub fn put_role(&self, role: Role, create: bool) -> Result<()> {
        check_user_name(&role.name).map_err(|_| Error::invalid(format!("invalid role name '{}'", role.name)))?;
        if system_roles().iter().any(|r| r.name == role.name) {
            bail!(NotPermitted, "'{}' is a system role and cannot be changed", role.name);
        }
        let exists = self.store.get::<Role>(ROLES, &role.name)?.is_some();
        if create && exists {
            bail!(AlreadyExists, "role '{}' already exists", role.name);
        }
        if !create && !exists {
            bail!(NotFound, "role '{}' does not exist", role.name);
        }
        Self::check_grants(&role.scopes_permissions)?;
        self.store.put(ROLES, &role.name.clone(), &Role { system: false, ..role })
    }

    /// Removes a custom role; refused while users have it.
    pub fn remove_role(&self, name: &str) -> Result<()> {
        if system_roles().iter().any(|r| r.name == name) {
            bail!(NotPermitted, "'{name}' is a system role and cannot be removed");
        }
        let users: Vec<String> = self
            .store
            .list::<UserRec>(USERS)?
            .into_iter()
            .filter(|(_, u)| u.roles.iter().any(|r| r == name))
            .map(|(n, _)| n)
            .collect();
        if !users.is_empty() {
            bail!(Busy, "role '{name}' is still given to {}: take it away first", users.join(", "));
        }
        if !self.store.remove(ROLES, name)? {
            bail!(NotFound, "role '{name}' does not exist");
        }
        Ok(())
    }

    /// Every user.
    pub fn users(&self) -> Result<Vec<UserRec>> {
        Ok(self.store.list::<UserRec>(USERS)?.into_iter().map(|(_, u)| u).collect())
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<UserRec> {
        self.store.get::<UserRec>(USERS, name)?.ok_or_else(|| Error::not_found(format!("user '{name}' does not exist")))
    }

    fn check_roles(&self, roles: &[String]) -> Result<()> {
        for role in roles {
            if self.role(role)?.is_none() {
                bail!(NotFound, "role '{role}' does not exist");
            }
        }
        Ok(())
    }

    /// Creates a user.
    pub fn create_user(&self, change: UserChange) -> Result<UserRec> {
        let username = change.username.ok_or_else(|| Error::invalid("username is required"))?;
        check_user_name(&username)?;
        let password = change.password.ok_or_else(|| Error::invalid("password is required"))?;
        check_password_rules(&password)?;
        let roles = change.roles.unwrap_or_default();
        self.check_roles(&roles)?;
        if self.store.get::<UserRec>(USERS, &username)?.is_some() {
            bail!(AlreadyExists, "user '{username}' already exists");
        }
        let rec = UserRec {
            username: username.clone(),
            password_hash: hash_password(&password)?,
            roles,
            name: change.name.unwrap_or_default(),
            email: change.email.unwrap_or_default(),
            enabled: change.enabled.unwrap_or(true),
            last_update: now_secs(),
        };
        self.store.put(USERS, &username, &rec)?;
        Ok(rec)
    }

    /// Changes a user; a new password or fewer rights take effect on the next request.
    pub fn update_user(&self, name: &str, change: UserChange) -> Result<UserRec> {
        let mut rec = self.user(name)?;
        if change.username.as_deref().is_some_and(|u| u != name) {
            bail!(InvalidArgument, "a user cannot be renamed");
        }
        if let Some(password) = change.password {
            check_password_rules(&password)?;
            rec.password_hash = hash_password(&password)?;
        }
        if let Some(roles) = change.roles {
            self.check_roles(&roles)?;
            rec.roles = roles;
        }
        if let Some(n) = change.name {
            rec.name = n;
        }
        if let Some(e) = change.email {
            rec.email = e;
        }
        if let Some(enabled) = change.enabled {
            rec.enabled = enabled;
        }
        rec.last_update = now_secs();
        self.store.put(USERS, name, &rec)?;
        Ok(rec)
    }

    /// Removes a user and their tokens; a user cannot remove themself.
    pub fn remove_user(&self, name: &str, caller: &Principal) -> Result<()> {
        if name == caller.username {
            bail!(InvalidArgument, "you cannot remove your own user");
        }
        if !self.store.remove(USERS, name)? {
            bail!(NotFound, "user '{name}' does not exist");
        }
        self.store.remove_where::<TokenRec>(TOKENS, |_, t| t.username == name)
    }

    /// Changes the caller's own password after checking the old one.
    pub fn change_password(&self, name: &str, old: &str, new: &str) -> Result<()> {
        let rec = self.user(name)?;
        if Argon2::default().verify_password(old.as_bytes(), rec.password_hash.as_str()).is_err() {
            bail!(NotPermitted, "the old password is wrong");
        }
        if old == new {
            bail!(InvalidArgument, "the new password must differ from the old one");
        }
        check_password_rules(new)?;
        self.update_user(name, UserChange { password: Some(new.to_owned()), ..UserChange::default() })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ServerStore::open(dir.path()).expect("store");
        (dir, Auth::new(store))
    }

    #[test]
    fn login_gives_a_token_with_the_roles_permissions() {
        let (_dir, auth) = auth();
        assert_eq!(auth.ensure_admin(Some("correct horse".into())).expect("admin"), None);
        auth.create_user(UserChange {
            username: Some("viewer".into()),
            password: Some("viewer-pass".into()),
            roles: Some(vec!["read-only".into()]),
            ..UserChange::default()
        })
        .expect("create viewer");
        let login = auth.login("viewer", "viewer-pass", "127.0.0.1").expect("login");
        let principal = auth.authenticate(&login.token).expect("token works");
        assert!(principal.can("rbd-image", "read"));
        assert!(!principal.can("rbd-image", "create"));
        auth.logout(&principal).expect("logout");
        assert!(auth.authenticate(&login.token).is_err());
    }

    #[test]
    fn failed_logins_are_rate_limited() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        for _ in 0..LOGIN_FAILURES_MAX {
            assert_eq!(auth.login("admin", "wrong", "c").expect_err("wrong").kind(), ErrorKind::NotPermitted);
        }
        let err = auth.login("admin", "correct horse", "c").expect_err("limited");
        assert_eq!(err.kind(), ErrorKind::TryAgain);
        // Another client is not affected.
        auth.login("admin", "correct horse", "d").expect("other client");
    }

    #[test]
    fn passwords_are_stored_as_argon2id() {
        let (_dir, auth) = auth();
        let generated = auth.ensure_admin(None).expect("admin").expect("a generated password");
        let rec = auth.user("admin").expect("admin exists");
        assert!(rec.password_hash.starts_with("$argon2id$"), "{}", rec.password_hash);
        assert!(!rec.password_hash.contains(&generated));
        auth.login("admin", &generated, "c").expect("the generated password works");
    }

    #[test]
    fn roles_and_users_are_validated() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        let bad = Role {
            name: "x".into(),
            description: String::new(),
            scopes_permissions: grants(&[("rbd-image", &["fly"])]),
            system: false,
        };
        assert_eq!(auth.put_role(bad, true).expect_err("bad permission").kind(), ErrorKind::InvalidArgument);
        let admin = system_roles().remove(0);
        assert_eq!(auth.put_role(admin, false).expect_err("system role").kind(), ErrorKind::NotPermitted);
        let short = UserChange { username: Some("u".into()), password: Some("short".into()), ..UserChange::default() };
        assert_eq!(auth.create_user(short).expect_err("short password").kind(), ErrorKind::InvalidArgument);
    }
}
