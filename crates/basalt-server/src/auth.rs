//! Users, roles and API tokens: argon2id password hashes, opaque random tokens stored as SHA-256 hashes, login rate
//! limiting, and the `Caller` extractor that turns a request into the permissions of its user.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};
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
/// Password checks allowed per user and client within [`LOGIN_WINDOW`] (a successful login gives its try back).
pub const LOGIN_FAILURES_MAX: u32 = 5;
/// Password checks allowed per client address within [`LOGIN_WINDOW`], whatever the user names it tries.
pub const CLIENT_FAILURES_MAX: u32 = 20;
/// The window of the login rate limit.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// How many keys each rate limit remembers; past that, expired windows and then the oldest are forgotten.
pub const THROTTLE_CAPACITY: usize = 4096;
/// How many password hashes are computed at once (argon2id takes about 19 MiB each); others wait their turn.
pub const HASHING_PERMITS: usize = 2;
/// The longest user or role name, in bytes.
pub const NAME_MAX_BYTES: usize = 64;
/// The longest password, in bytes; longer ones are refused before any hashing.
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// The default shortest password, in characters.
pub const PASSWORD_MIN_CHARS: usize = 8;

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

fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), hash).is_ok()
}

/// A hash no password matches in practice, checked against when the user does not exist, so an unknown user costs
/// the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_hex(16)).unwrap_or_default())
}

/// What a password must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// The fewest characters.
    pub min_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> PasswordPolicy {
        PasswordPolicy { min_chars: PASSWORD_MIN_CHARS }
    }
}

impl PasswordPolicy {
    /// Refuses a password that is too short or too long, only white space, or the user's name.
    pub fn check(&self, username: &str, password: &str) -> Result<()> {
        if password.len() > PASSWORD_MAX_BYTES {
            bail!(InvalidArgument, "the password is longer than {PASSWORD_MAX_BYTES} bytes");
        }
        if password.chars().count() < self.min_chars {
            bail!(InvalidArgument, "the password must have at least {} characters", self.min_chars);
        }
        if password.chars().all(char::is_whitespace) {
            bail!(InvalidArgument, "the password must not be only white space");
        }
        if password.trim().eq_ignore_ascii_case(username) {
            bail!(InvalidArgument, "the password must not be the user name");
        }
        Ok(())
    }
}

/// User and role names: display-safe (no control, zero-width or bidirectional characters, no surrounding spaces,
/// not `.` or `..`), then a plain character set without `..`.
fn check_user_name(what: &str, name: &str) -> Result<()> {
    basalt_core::check_display_safe(what, name)?;
    if name.is_empty()
        || name.len() > NAME_MAX_BYTES
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        || name.starts_with('.')
        || name.contains("..")
    {
        bail!(
            InvalidArgument,
            "{what} name '{}' must be 1 to {NAME_MAX_BYTES} letters, digits, '.', '_', '-' or '@', not starting with '.' \
             nor containing '..'",
            name.escape_debug()
        );
    }
    Ok(())
}

/// Refuses credentials too long to be real before anything is looked up or hashed.
fn check_credential_sizes(username: &str, password: &str) -> Result<()> {
    if username.len() > NAME_MAX_BYTES {
        bail!(InvalidArgument, "the user name is longer than {NAME_MAX_BYTES} bytes");
    }
    if password.len() > PASSWORD_MAX_BYTES {
        bail!(InvalidArgument, "the password is longer than {PASSWORD_MAX_BYTES} bytes");
    }
    Ok(())
}

/// Attempt counters per key in fixed windows, held in a map of bounded size: when it is full, expired windows are
/// dropped, then the oldest window. Keys are kept as digests, so their length costs nothing.
#[derive(Debug)]
pub struct Throttle {
    windows: Mutex<HashMap<[u8; 16], Window>>,
    capacity: usize,
    max: u32,
    window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

impl Throttle {
    /// At most `max` attempts per key in each `window`, remembering at most `capacity` keys.
    pub fn new(capacity: usize, max: u32, window: Duration) -> Throttle {
        Throttle { windows: Mutex::new(HashMap::new()), capacity: capacity.max(1), max, window }
    }

    fn key(key: &str) -> [u8; 16] {
        let digest = Sha256::digest(key.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    /// Counts one attempt for `key` and returns true, or returns false (counting nothing) when the key has used
    /// up its attempts in the current window. Check and count are one step, so parallel callers cannot overrun.
    pub fn try_acquire(&self, key: &str) -> bool {
        let key = Self::key(key);
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = windows.get_mut(&key) {
            if now.duration_since(w.start) >= self.window {
                *w = Window { start: now, count: 0 };
            }
            if w.count >= self.max {
                return false;
            }
            w.count += 1;
            return true;
        }
        if windows.len() >= self.capacity {
            let window = self.window;
            windows.retain(|_, w| now.duration_since(w.start) < window);
        }
        if windows.len() >= self.capacity
            && let Some(oldest) = windows.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k)
        {
            windows.remove(&oldest);
        }
        windows.insert(key, Window { start: now, count: 1 });
        true
    }

    /// Gives back one attempt of `key` (a success is not held against it).
    pub fn release(&self, key: &str) {
        let key = Self::key(key);
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = windows.get_mut(&key) {
            w.count = w.count.saturating_sub(1);
            if w.count == 0 {
                windows.remove(&key);
            }
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that compute every password hash, so at most that many run at once, and the memory
/// argon2 takes (about 19 MiB a hash) is reused by the same few threads instead of being kept by the allocator of
/// every thread that ever hashed. The threads end when the pool is dropped.
#[derive(Debug)]
struct HashPool {
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
}

impl HashPool {
    fn new(threads: usize) -> HashPool {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = std::sync::Arc::clone(&rx);
            let spawned = std::thread::Builder::new().name(format!("password-hash-{i}")).spawn(move || {
                loop {
                    let job = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a password hashing thread");
            }
        }
        HashPool { jobs: Mutex::new(tx) }
    }

    /// Runs `work` on one of the pool's threads and waits for its result.
    fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job)
            .map_err(|_| Error::io("no password hashing thread is running"))?;
        rx.recv().map_err(|_| Error::io("the password hashing thread failed"))
    }
}

/// Users, roles and tokens.
#[derive(Debug)]
pub struct Auth {
    store: ServerStore,
    policy: PasswordPolicy,
    /// Password checks per user and client (logins) and per user (old passwords given to change_password).
    per_user: Throttle,
    /// Password checks per client address.
    per_client: Throttle,
    hashing: HashPool,
    /// How many passwords were checked against a hash (for tests of the rate limits).
    checks: std::sync::atomic::AtomicU64,
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
        Auth::with_policy(store, PasswordPolicy::default())
    }

    /// Users, roles and tokens kept in `store`, with passwords held to `policy`.
    pub fn with_policy(store: ServerStore, policy: PasswordPolicy) -> Auth {
        Auth {
            store,
            policy,
            per_user: Throttle::new(THROTTLE_CAPACITY, LOGIN_FAILURES_MAX, LOGIN_WINDOW),
            per_client: Throttle::new(THROTTLE_CAPACITY, CLIENT_FAILURES_MAX, LOGIN_WINDOW),
            hashing: HashPool::new(HASHING_PERMITS),
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.hashing.run(move || hash_password(&password))?
    }

    fn verify(&self, password: &str, hash: &str) -> bool {
        self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (password, hash) = (password.to_owned(), hash.to_owned());
        self.hashing.run(move || verify_password(&password, &hash)).unwrap_or(false)
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
        self.policy.check("admin", &password)?;
        let rec = UserRec {
            username: "admin".into(),
            password_hash: self.hash(&password)?,
            roles: vec!["administrator".into()],
            name: "administrator".into(),
            email: String::new(),
            enabled: true,
            last_update: now_secs(),
        };
        self.store.insert_new(USERS, "admin", &rec)?;
        Ok(generated.then_some(password))
    }

    fn limiter_key(username: &str, client: &str) -> String {
        format!("{username}\u{0}{client}")
    }

    /// Checks a password and returns a new token. Over-long credentials are refused (EINVAL) before anything
    /// else; too many attempts (EAGAIN) are refused before any hashing; a wrong password, an unknown or a disabled
    /// user are all EPERM after the same amount of work.
    pub fn login(&self, username: &str, password: &str, client: &str) -> Result<Login> {
        check_credential_sizes(username, password)?;
        let user_key = Self::limiter_key(username, client);
        if !self.per_client.try_acquire(client) {
            bail!(TryAgain, "too many failed logins from this address: wait a minute and try again");
        }
        if !self.per_user.try_acquire(&user_key) {
            self.per_client.release(client);
            bail!(TryAgain, "too many failed logins for '{username}': wait a minute and try again");
        }
        let user = self.store.get::<UserRec>(USERS, username)?;
        let hash: &str = match &user {
            Some(u) => &u.password_hash,
            None => dummy_hash(),
        };
        let verified = self.verify(password, hash);
        let Some(user) = user.filter(|u| verified && u.enabled) else {
            bail!(NotPermitted, "invalid user name or password");
        };
        self.per_user.release(&user_key);
        self.per_client.release(client);
        let token = random_hex(32);
        let hash = hash_token(&token);
        let rec = TokenRec { username: user.username.clone(), expires_at: now_secs() + TOKEN_TTL.as_secs() };
        self.store.put(TOKENS, &hash, &rec)?;
        let mut principal = self.principal_of(&user)?;
        principal.token_hash = Some(hash);
        Ok(Login { token, principal })
    }

    /// Ends every session of `name` but the one whose token hash is `keep`.
    fn revoke_tokens(&self, name: &str, keep: Option<&str>) -> Result<()> {
        self.store.remove_where::<TokenRec>(TOKENS, |hash, t| t.username == name && Some(hash) != keep)
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

    /// The permissions of an enabled user, without a token (for clients that prove who they are otherwise, such as
    /// NBD clients with a certificate); `None` for a user that does not exist or is disabled.
    pub fn active_principal(&self, username: &str) -> Result<Option<Principal>> {
        match self.store.get::<UserRec>(USERS, username)? {
            Some(user) if user.enabled => self.principal_of(&user).map(Some),
            _ => Ok(None),
        }
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
        check_user_name("role", &role.name)?;
        if system_roles().iter().any(|r| r.name == role.name) {
            bail!(NotPermitted, "'{}' is a system role and cannot be changed", role.name);
        }
        Self::check_grants(&role.scopes_permissions)?;
        let name = role.name.clone();
        let role = Role { system: false, ..role };
        if create {
            if !self.store.insert_new(ROLES, &name, &role)? {
                bail!(AlreadyExists, "role '{name}' already exists");
            }
            return Ok(());
        }
        if self.store.get::<Role>(ROLES, &name)?.is_none() {
            bail!(NotFound, "role '{name}' does not exist");
        }
        self.store.put(ROLES, &name, &role)
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
        check_user_name("user", &username)?;
        let password = change.password.ok_or_else(|| Error::invalid("password is required"))?;
        self.policy.check(&username, &password)?;
        let roles = change.roles.unwrap_or_default();
        self.check_roles(&roles)?;
        if self.store.get::<UserRec>(USERS, &username)?.is_some() {
            bail!(AlreadyExists, "user '{username}' already exists");
        }
        let rec = UserRec {
            username: username.clone(),
            password_hash: self.hash(&password)?,
            roles,
            name: change.name.unwrap_or_default(),
            email: change.email.unwrap_or_default(),
            enabled: change.enabled.unwrap_or(true),
            last_update: now_secs(),
        };
        // Check and insert are one step: of concurrent creations of one name, one wins.
        if !self.store.insert_new(USERS, &username, &rec)? {
            bail!(AlreadyExists, "user '{username}' already exists");
        }
        Ok(rec)
    }

    /// Changes a user; fewer rights take effect on the next request. A new password or disabling the user ends
    /// all of the user's sessions.
    pub fn update_user(&self, name: &str, change: UserChange) -> Result<UserRec> {
        self.update_user_keeping(name, change, None)
    }

    fn update_user_keeping(&self, name: &str, change: UserChange, keep: Option<&str>) -> Result<UserRec> {
        let mut rec = self.user(name)?;
        if change.username.as_deref().is_some_and(|u| u != name) {
            bail!(InvalidArgument, "a user cannot be renamed");
        }
        let revoke = change.password.is_some() || change.enabled == Some(false);
        if let Some(password) = change.password {
            self.policy.check(name, &password)?;
            rec.password_hash = self.hash(&password)?;
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
        if revoke {
            self.revoke_tokens(name, keep)?;
        }
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

    /// Changes the caller's own password after checking the old one; the caller's other sessions end, the one it
    /// used stays. Wrong old passwords are rate-limited per user like logins.
    pub fn change_password(&self, who: &Principal, old: &str, new: &str) -> Result<()> {
        let name = who.username.as_str();
        check_credential_sizes(name, old)?;
        let key = Self::limiter_key(name, "\u{0}change_password");
        if !self.per_user.try_acquire(&key) {
            bail!(TryAgain, "too many wrong old passwords for '{name}': wait a minute and try again");
        }
        let rec = self.user(name)?;
        if !self.verify(old, &rec.password_hash) {
            bail!(NotPermitted, "the old password is wrong");
        }
        self.per_user.release(&key);
        if old == new {
            bail!(InvalidArgument, "the new password must differ from the old one");
        }
        self.policy.check(name, new)?;
        let change = UserChange { password: Some(new.to_owned()), ..UserChange::default() };
        self.update_user_keeping(name, change, who.token_hash.as_deref())?;
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

    fn check_count(auth: &Auth) -> u64 {
        auth.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn user(name: &str, password: &str) -> UserChange {
        UserChange { username: Some(name.into()), password: Some(password.into()), ..UserChange::default() }
    }

    #[test]
    fn parallel_wrong_passwords_check_at_most_the_limit() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        let before = check_count(&auth);
        let results: Vec<ErrorKind> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..40)
                .map(|i| {
                    let auth = &auth;
                    s.spawn(move || auth.login("admin", &format!("wrong-{i}"), "10.0.0.1").expect_err("wrong").kind())
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let refused = results.iter().filter(|k| **k == ErrorKind::NotPermitted).count();
        let limited = results.iter().filter(|k| **k == ErrorKind::TryAgain).count();
        assert_eq!(refused + limited, 40, "{results:?}");
        assert!(refused <= LOGIN_FAILURES_MAX as usize, "{refused} passwords were checked: {results:?}");
        assert!(check_count(&auth) - before <= u64::from(LOGIN_FAILURES_MAX));
    }

    #[test]
    fn many_user_names_from_one_address_are_limited_too() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        let mut refused = 0;
        for i in 0..CLIENT_FAILURES_MAX + 10 {
            if auth.login(&format!("nobody{i}"), "wrong", "10.0.0.2").expect_err("unknown").kind()
                == ErrorKind::NotPermitted
            {
                refused += 1;
            }
        }
        assert_eq!(refused, CLIENT_FAILURES_MAX);
        auth.login("admin", "correct horse", "10.0.0.3").expect("another address");
    }

    #[test]
    fn an_unknown_user_costs_a_password_check_like_a_known_one() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        let before = check_count(&auth);
        assert_eq!(auth.login("ghost", "whatever1", "c").expect_err("unknown").kind(), ErrorKind::NotPermitted);
        assert_eq!(check_count(&auth), before + 1, "an unknown user was answered without hashing");
        assert_eq!(auth.login("admin", "wrong", "c").expect_err("wrong").kind(), ErrorKind::NotPermitted);
        assert_eq!(check_count(&auth), before + 2);
    }

    #[test]
    fn over_long_credentials_are_refused_before_hashing() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        let before = check_count(&auth);
        let long_name = "a".repeat(NAME_MAX_BYTES + 1);
        assert_eq!(auth.login(&long_name, "x", "c").expect_err("long").kind(), ErrorKind::InvalidArgument);
        let long_password = "p".repeat(PASSWORD_MAX_BYTES + 1);
        assert_eq!(auth.login("admin", &long_password, "c").expect_err("long").kind(), ErrorKind::InvalidArgument);
        assert_eq!(check_count(&auth), before);
        assert!(auth.per_user.is_empty() && auth.per_client.is_empty(), "refused input took throttle entries");
    }

    #[test]
    fn the_throttle_map_stays_bounded() {
        let throttle = Throttle::new(64, 2, Duration::from_secs(3600));
        for i in 0..10_000 {
            assert!(throttle.try_acquire(&format!("{i}-{}", "x".repeat(i % 100))));
            assert!(throttle.len() <= 64);
        }
        let key = "victim";
        assert!(throttle.try_acquire(key) && throttle.try_acquire(key));
        assert!(!throttle.try_acquire(key), "a third attempt within the window must be refused");
        throttle.release(key);
        assert!(throttle.try_acquire(key), "a released attempt can be used again");
        assert_eq!(throttle.len(), 64);
    }

    #[test]
    fn wrong_old_passwords_are_rate_limited() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        let who = auth.login("admin", "correct horse", "c").expect("login").principal;
        for _ in 0..LOGIN_FAILURES_MAX {
            let err = auth.change_password(&who, "wrong", "new password 1").expect_err("wrong");
            assert_eq!(err.kind(), ErrorKind::NotPermitted);
        }
        let err = auth.change_password(&who, "correct horse", "new password 1").expect_err("limited");
        assert_eq!(err.kind(), ErrorKind::TryAgain);
    }

    #[test]
    fn password_changes_resets_and_disabling_end_sessions() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        auth.create_user(user("alice", "alice-pass-1")).expect("alice");
        // Her own change keeps the session it was made from and ends the others.
        let first = auth.login("alice", "alice-pass-1", "c").expect("login");
        let second = auth.login("alice", "alice-pass-1", "d").expect("login");
        auth.change_password(&first.principal, "alice-pass-1", "alice-pass-2").expect("change");
        auth.authenticate(&first.token).expect("the session that changed the password stays");
        assert!(auth.authenticate(&second.token).is_err(), "another session survived a password change");
        // An administrator's reset ends them all.
        let third = auth.login("alice", "alice-pass-2", "c").expect("login");
        auth.update_user("alice", UserChange { password: Some("alice-pass-3".into()), ..UserChange::default() })
            .expect("reset");
        assert!(auth.authenticate(&first.token).is_err() && auth.authenticate(&third.token).is_err());
        // Disabling, then enabling again, does not bring a session back.
        let fourth = auth.login("alice", "alice-pass-3", "c").expect("login");
        auth.update_user("alice", UserChange { enabled: Some(false), ..UserChange::default() }).expect("disable");
        auth.update_user("alice", UserChange { enabled: Some(true), ..UserChange::default() }).expect("enable");
        assert!(auth.authenticate(&fourth.token).is_err(), "a session survived disable-then-enable");
        // Other changes keep sessions.
        let fifth = auth.login("alice", "alice-pass-3", "c").expect("login");
        auth.update_user("alice", UserChange { email: Some("a@example.org".into()), ..UserChange::default() })
            .expect("edit");
        auth.authenticate(&fifth.token).expect("an e-mail change keeps the session");
    }

    #[test]
    fn concurrent_creations_of_one_name_make_one_user_or_role() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        let (users, roles): (Vec<bool>, Vec<bool>) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..20)
                .map(|i| {
                    let auth = &auth;
                    s.spawn(move || {
                        let user = auth.create_user(user("racer", &format!("racer-pass-{i}"))).is_ok();
                        let role = Role {
                            name: "racers".into(),
                            description: format!("{i}"),
                            scopes_permissions: grants(&[("rbd-image", &["read"])]),
                            system: false,
                        };
                        (user, auth.put_role(role, true).is_ok())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).unzip()
        });
        assert_eq!(users.iter().filter(|ok| **ok).count(), 1, "{users:?}");
        assert_eq!(roles.iter().filter(|ok| **ok).count(), 1, "{roles:?}");
    }

    #[test]
    fn the_password_policy_is_applied_and_configurable() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        for bad in ["short", "          ", "bobbybobby", "BobbyBobby", &"x".repeat(PASSWORD_MAX_BYTES + 1)] {
            let err = auth.create_user(user("bobbybobby", bad)).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
        auth.create_user(user("bobbybobby", "good password")).expect("good");
        let err = auth
            .update_user("bobbybobby", UserChange { password: Some("bobbybobby".into()), ..UserChange::default() })
            .expect_err("name as password");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let dir = tempfile::tempdir().expect("temp dir");
        let strict = Auth::with_policy(ServerStore::open(dir.path()).expect("store"), PasswordPolicy { min_chars: 16 });
        strict.ensure_admin(Some("sixteen chars ok".into())).expect("16 characters");
        let err = strict.create_user(user("carol", "fifteen chars!!")).expect_err("15 characters");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn user_and_role_names_refuse_dot_dot_and_odd_characters() {
        let (_dir, auth) = auth();
        auth.ensure_admin(Some("correct horse".into())).expect("admin");
        for bad in ["..", "a..b", ".hidden", " alice", "alice ", "al\u{202e}ice", "al\u{200b}ice", "a\tb", ""] {
            let err = auth.create_user(user(bad, "long enough 1")).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
            assert!(!err.message().contains(['\u{202e}', '\u{200b}', '\t']), "the refusal echoes the name: {err}");
            let role =
                Role { name: bad.into(), description: String::new(), scopes_permissions: Grants::new(), system: false };
            assert_eq!(auth.put_role(role, true).expect_err(bad).kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
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
        let short = user("u", "short");
        assert_eq!(auth.create_user(short).expect_err("short password").kind(), ErrorKind::InvalidArgument);
    }
}
