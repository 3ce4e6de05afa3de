//! How the REST API listens: the options of its listeners (TLS, timeouts, connection caps, who may read
//! `/metrics`) and the password policy that `serve` takes from its command line.

use crate::auth::PasswordPolicy;

/// The REST API's listener options.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// What passwords must be.
    pub password_policy: PasswordPolicy,
}
