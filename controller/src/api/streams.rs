//! How many live streams (`/v1/events`) are open, and who may open one
//! more. One global cap keeps the controller's work bounded; beside it, a
//! share per principal (a token or a signed-in person) and, for viewers, per
//! source address, so that one client cannot take every stream; and the
//! last streams are kept for operators and admins, so that the people who
//! can abort always get theirs (or a clear error).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::auth::{Principal, Role};

#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Streams open at once, everyone together.
    pub total: usize,
    /// Of those, how many only operators and admins may open.
    pub kept_for_operators: usize,
    /// Streams one principal may hold.
    pub per_principal: usize,
    /// Streams viewers from one address may hold together.
    pub per_address: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            total: 64,
            kept_for_operators: 16,
            per_principal: 8,
            per_address: 16,
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_principal: HashMap<String, usize>,
    by_address: HashMap<IpAddr, usize>,
}

pub struct Streams {
    limits: StreamLimits,
    open: Arc<Mutex<Open>>,
}

/// Why a stream was refused, in words for the person.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error(
        "{name} has {limit} live streams open already (the limit per token or person); close a tab"
    )]
    Principal { name: String, limit: usize },
    #[error(
        "{limit} live streams from {address} are open already (the limit per address for viewers)"
    )]
    Address { address: IpAddr, limit: usize },
    #[error("{limit} live streams are open already; the rest are kept for operators")]
    Total { limit: usize },
}

/// One open stream; closing it (dropping this) frees its place.
#[derive(Debug)]
pub struct Permit {
    open: Arc<Mutex<Open>>,
    principal: String,
    address: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        release(&mut open.by_principal, &self.principal);
        if let Some(a) = self.address {
            release(&mut open.by_address, &a);
        }
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Streams {
    pub fn new(limits: StreamLimits) -> Streams {
        Streams {
            limits,
            open: Arc::default(),
        }
    }

    /// A place for one more stream of `who` from `address`, or why not.
    /// Checked before any work is spent on the stream.
    pub fn open(&self, who: &Principal, address: IpAddr) -> Result<Permit, Refused> {
        let l = self.limits;
        let privileged = who.role >= Role::Operator;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.by_principal.get(&who.name).copied().unwrap_or(0);
        if mine >= l.per_principal {
            return Err(Refused::Principal {
                name: who.name.clone(),
                limit: l.per_principal,
            });
        }
        let from_there = open.by_address.get(&address).copied().unwrap_or(0);
        if !privileged && from_there >= l.per_address {
            return Err(Refused::Address {
                address,
                limit: l.per_address,
            });
        }
        let cap = if privileged {
            l.total
        } else {
            l.total.saturating_sub(l.kept_for_operators)
        };
        if open.total >= cap {
            return Err(Refused::Total { limit: cap });
        }
        open.total += 1;
        *open.by_principal.entry(who.name.clone()).or_insert(0) += 1;
        // Operators' streams do not count against a viewer's address.
        let address = (!privileged).then_some(address);
        if let Some(a) = address {
            *open.by_address.entry(a).or_insert(0) += 1;
        }
        Ok(Permit {
            open: Arc::clone(&self.open),
            principal: who.name.clone(),
            address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str, role: Role) -> Principal {
        Principal {
            teams: None,
            name: name.into(),
            role,
        }
    }

    #[test]
    fn one_viewer_cannot_take_an_operators_stream() {
        let s = Streams::new(StreamLimits::default());
        let here: IpAddr = [10, 0, 0, 1].into();
        let viewer = who("wall-screen", Role::Viewer);
        let held: Vec<_> = (0..8).map(|_| s.open(&viewer, here).unwrap()).collect();
        assert!(matches!(
            s.open(&viewer, here),
            Err(Refused::Principal { .. })
        ));
        // The operator on the same address still gets one.
        let op = who("oncall", Role::Operator);
        assert!(s.open(&op, here).is_ok());
        drop(held);
        assert!(s.open(&viewer, here).is_ok(), "closing frees the places");
    }

    #[test]
    fn viewers_from_one_address_and_all_viewers_are_capped_and_operators_keep_theirs() {
        let s = Streams::new(StreamLimits::default());
        let here: IpAddr = [10, 0, 0, 1].into();
        let mut held = Vec::new();
        for i in 0..2 {
            for _ in 0..8 {
                held.push(s.open(&who(&format!("v{i}"), Role::Viewer), here).unwrap());
            }
        }
        let refused = s.open(&who("v9", Role::Viewer), here).unwrap_err();
        assert!(
            matches!(refused, Refused::Address { limit: 16, .. }),
            "{refused}"
        );
        // Viewers everywhere together stop at 48 of 64.
        for i in 0..4 {
            let there: IpAddr = [10, 0, 1, i].into();
            for j in 0..8 {
                if let Ok(p) = s.open(&who(&format!("w{i}-{j}"), Role::Viewer), there) {
                    held.push(p);
                }
            }
        }
        assert_eq!(held.len(), 48);
        let refused = s
            .open(&who("late", Role::Viewer), [10, 0, 2, 1].into())
            .unwrap_err();
        assert_eq!(refused, Refused::Total { limit: 48 });
        for i in 0..2 {
            for _ in 0..8 {
                held.push(
                    s.open(&who(&format!("op{i}"), Role::Operator), here)
                        .unwrap(),
                );
            }
        }
        assert_eq!(held.len(), 64);
        assert!(s.open(&who("admin", Role::Admin), here).is_err());
    }
}
