//! What the routing fuzz targets share: rollouts with every routing
//! feature (host and path match, overrides, header and cookie identity,
//! each anonymous policy), and a fixed random stream so that two decisions
//! can be compared.

pub const ROLLOUTS: &str = r#"[
  {"name": "checkout", "match": {"host": "shop.example", "path_prefix": "/checkout"},
   "identity": [{"header": "x-user-id"}, {"cookie": "session_id"}], "anonymous": "cookie",
   "salt": "checkout-7", "stable": "v1",
   "versions": [{"name": "v1", "weight": 9000}, {"name": "v2", "weight": 1000}],
   "overrides": [{"header": "x-tenant-id", "values": ["acme-internal"], "version": "v2"}]},
  {"name": "search", "match": {"path_prefix": "/search"}, "identity": [{"header": "x-user-id"}],
   "anonymous": "random", "stable": "a", "salt": "s",
   "versions": [{"name": "a", "weight": 3333}, {"name": "b", "weight": 3333}, {"name": "c", "weight": 3334}]},
  {"name": "rest", "identity": [{"cookie": "uid"}], "anonymous": "stable", "stable": "old", "salt": "r",
   "versions": [{"name": "old", "weight": 10000}, {"name": "new", "weight": 0}]}
]"#;

/// A linear congruential stream from `state`.
pub fn lcg(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state
    }
}
