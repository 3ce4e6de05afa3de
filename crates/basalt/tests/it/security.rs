//! The REST API against abuse, end to end on the real binary: login floods, over-long credentials, creation races,
//! the password policy.

use serde_json::{Value, json};

use crate::api::{ADMIN_PASSWORD, Server, call, login, start, start_with};

/// Runs `n` copies of one call at once and returns their statuses.
fn parallel(server: &Server, n: usize, call_once: impl Fn(&Server, usize) -> u16 + Sync) -> Vec<u16> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let call_once = &call_once;
                s.spawn(move || call_once(server, i))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    })
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn parallel_wrong_passwords_are_checked_at_most_the_limit() {
    let server = start(Some(ADMIN_PASSWORD));
    let statuses = parallel(&server, 200, |server, i| {
        call(server, "POST", "/api/auth", None, Some(json!({"username": "admin", "password": format!("wrong-{i}")}))).0
    });
    let (checked, limited) = (count(&statuses, 401), count(&statuses, 429));
    assert_eq!(checked + limited, 200, "{statuses:?}");
    assert!(checked <= 5, "{checked} wrong passwords were checked against a limit of 5");
    // The limit holds for the right password too, until the window passes.
    let right = json!({"username": "admin", "password": ADMIN_PASSWORD});
    assert_eq!(call(&server, "POST", "/api/auth", None, Some(right)).0, 429);
}

#[test]
fn over_long_user_names_and_passwords_get_400_without_a_check() {
    let server = start(Some(ADMIN_PASSWORD));
    let long_name = json!({"username": "a".repeat(1 << 20), "password": "x"});
    for _ in 0..10 {
        let (status, body) = call(&server, "POST", "/api/auth", None, Some(long_name.clone()));
        assert_eq!(status, 400, "{body}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains("longer than 64 bytes")), "{body}");
    }
    let long_password = json!({"username": "admin", "password": "p".repeat(4096)});
    assert_eq!(call(&server, "POST", "/api/auth", None, Some(long_password)).0, 400);
    // None of that counted as a failed login.
    login(&server, "admin", ADMIN_PASSWORD);
}

#[test]
fn parallel_creations_of_one_user_or_role_make_exactly_one() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let users = parallel(&server, 20, |server, i| {
        let body = json!({"username": "twin", "password": format!("twin-password-{i}")});
        call(server, "POST", "/api/user", Some(&token), Some(body)).0
    });
    assert_eq!(count(&users, 201), 1, "{users:?}");
    assert_eq!(count(&users, 409), 19, "{users:?}");
    let roles = parallel(&server, 20, |server, i| {
        let body = json!({"name": "twins", "description": format!("{i}"), "scopes_permissions": {"pool": ["read"]}});
        call(server, "POST", "/api/role", Some(&token), Some(body)).0
    });
    assert_eq!(count(&roles, 201), 1, "{roles:?}");
    assert_eq!(count(&roles, 409), 19, "{roles:?}");
    let (_, listed) = call(&server, "GET", "/api/user", Some(&token), None);
    let twins = listed.as_array().expect("users").iter().filter(|u| u["username"] == "twin").count();
    assert_eq!(twins, 1, "{listed}");
}

#[test]
fn the_password_policy_is_enforced_and_configurable() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let server = start_with(dir, Some(ADMIN_PASSWORD), &["--password-min-length", "12"]);
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let create = |username: &str, password: &str| -> (u16, Value) {
        call(&server, "POST", "/api/user", Some(&token), Some(json!({"username": username, "password": password})))
    };
    for (password, why) in
        [("eleven-char", "at least 12"), ("            ", "white space"), ("dave-the-user", "the user name")]
    {
        let (status, body) = create("dave-the-user", password);
        assert_eq!(status, 400, "{password:?}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains(why)), "{password:?}: {body}");
    }
    assert_eq!(create("dave-the-user", "twelve chars").0, 201);
}

#[test]
fn an_administrator_reset_ends_the_users_sessions() {
    let server = start(Some(ADMIN_PASSWORD));
    let admin = login(&server, "admin", ADMIN_PASSWORD);
    let body = json!({"username": "erin", "password": "erin-password-1", "roles": ["read-only"]});
    assert_eq!(call(&server, "POST", "/api/user", Some(&admin), Some(body)).0, 201);
    let erin = login(&server, "erin", "erin-password-1");
    assert_eq!(call(&server, "GET", "/api/auth/check", Some(&erin), None).0, 200);
    let reset = json!({"password": "erin-password-2"});
    assert_eq!(call(&server, "PUT", "/api/user/erin", Some(&admin), Some(reset)).0, 200);
    assert_eq!(call(&server, "GET", "/api/auth/check", Some(&erin), None).0, 401);
}
