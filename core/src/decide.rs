//! The routing decision of docs/filter.md ("What it does with a request"),
//! as a pure function of the compiled config and a view of the request
//! headers.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::cohort::BUCKETS;
use crate::compiled::{Compiled, CompiledRollout};
use crate::config::Anonymous;
use crate::cookie::cookie_value;
use crate::matching::shadowed_host;
use crate::request::{identity_in, LazyHeader};
pub use crate::request::{identity_of, HeaderPairs, Request};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No rollout applies: the route header must be removed.
    NoMatch,
    Route(Route),
    /// A request Envoy mirrored (its host ends in `-shadow`): it joins no
    /// cohort; it goes to the rollout's shadow version, if it names one,
    /// and is counted apart.
    Shadow {
        rollout: usize,
        version: Option<usize>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub rollout: usize,
    pub version: usize,
    pub reason: Reason,
    /// A fresh anonymous id to set as a cookie on the response.
    pub new_cookie: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Override,
    Identity,
    AnonymousStable,
    AnonymousRandom,
    AnonymousCookie,
}

/// Chooses the rollout and version for a request. `random` is called only for
/// anonymous requests in `random` or `cookie` mode.
pub fn decide(cfg: &Compiled, req: &impl Request, random: &mut impl FnMut() -> u64) -> Decision {
    let Some((rollout, mirrored)) = pick_rollout(cfg, req) else {
        return Decision::NoMatch;
    };
    let r = &cfg.rollouts[rollout];
    if mirrored {
        return Decision::Shadow {
            rollout,
            version: r.shadow,
        };
    }
    let route = |version, reason| {
        Decision::Route(Route {
            rollout,
            version,
            reason,
            new_cookie: None,
        })
    };

    if let Some(version) = override_version(r, req) {
        return route(version, Reason::Override);
    }

    let mut cookies = LazyHeader::default();
    if let Some(id) = identity_in(&r.identity, req, &mut cookies) {
        return route(r.version_of_identity(&id), Reason::Identity);
    }

    match r.anonymous {
        Anonymous::Stable => route(r.stable, Reason::AnonymousStable),
        Anonymous::Random => route(
            r.version_of_bucket((random() % u64::from(BUCKETS)) as u16),
            Reason::AnonymousRandom,
        ),
        Anonymous::Cookie => {
            let existing = cookies
                .get(req, "cookie")
                .and_then(|h| cookie_value(h, &r.cookie.name))
                .filter(|id| !id.is_empty())
                .map(|id| r.version_of_identity(id));
            if let Some(version) = existing {
                return route(version, Reason::Identity);
            }
            let id = new_anonymous_id(random);
            Decision::Route(Route {
                rollout,
                version: r.version_of_identity(id.as_bytes()),
                reason: Reason::AnonymousCookie,
                new_cookie: Some(id),
            })
        }
    }
}

/// The rollout for the request, and whether the request is a mirror.
fn pick_rollout(cfg: &Compiled, req: &impl Request) -> Option<(usize, bool)> {
    if cfg.rollouts.is_empty() {
        return None;
    }
    let host = if cfg.needs_host {
        req.header(":authority").unwrap_or_default()
    } else {
        Vec::new()
    };
    let path = if cfg.needs_path {
        req.header(":path").unwrap_or_default()
    } else {
        Vec::new()
    };
    let (host, mirrored) = match shadowed_host(&host) {
        Some(meant) => (meant, true),
        None => (&host[..], false),
    };
    let rollout = cfg.rollouts.iter().position(|r| r.matches(host, &path))?;
    Some((rollout, mirrored))
}

fn override_version(r: &CompiledRollout, req: &impl Request) -> Option<usize> {
    r.overrides.iter().find_map(|o| {
        let value = req.header(&o.header)?;
        o.values.contains(&value).then_some(o.version)
    })
}

/// 128 random bits as 32 lowercase hex digits.
pub fn new_anonymous_id(random: &mut impl FnMut() -> u64) -> String {
    let mut id = String::with_capacity(32);
    let (hi, lo) = (random(), random());
    // Writing to a String cannot fail.
    let _ = write!(id, "{hi:016x}{lo:016x}");
    id
}

/// The `Set-Cookie` value for a fresh anonymous id.
pub fn set_cookie_value(r: &CompiledRollout, id: &str) -> String {
    let mut v = String::with_capacity(96);
    let _ = write!(
        v,
        "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
        r.cookie.name, id, r.cookie.max_age_s
    );
    if r.cookie.secure {
        v.push_str("; Secure");
    }
    v
}
