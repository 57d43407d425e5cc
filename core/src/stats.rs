//! Names of the stats the filter records. Tags are embedded in the name as
//! `tag=.=value;.;` so that the `stats_tags` regexes in [`STATS_TAGS`] (shipped
//! in the Envoy configs) turn `dimmer.rollout=.=checkout;.;version=.=v2;.;class=.=5xx;.;requests`
//! into `dimmer_requests{rollout="checkout",version="v2",class="5xx"}`.

use alloc::format;
use alloc::string::String;

/// `(tag_name, regex)` for Envoy's `stats_config.stats_tags`.
pub const STATS_TAGS: [(&str, &str); 5] = [
    ("rollout", r"(rollout=\.=(.*?);\.;)"),
    ("version", r"(version=\.=(.*?);\.;)"),
    ("class", r"(class=\.=(.*?);\.;)"),
    ("dimension", r"(dimension=\.=(.*?);\.;)"),
    ("value", r"(value=\.=(.*?);\.;)"),
];

/// Requests of `version` whose `dimension` had `value`
/// (`dimmer_mix{rollout,version,dimension,value}`), counted on routing.
pub fn mix(rollout: &str, version: &str, dimension: &str, value: &str) -> String {
    format!(
        "dimmer.rollout=.={rollout};.;version=.={version};.;dimension=.={dimension};.;value=.={value};.;mix"
    )
}

/// Response classes counted per rollout and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirect,
    ClientError,
    ServerError,
    /// No response reached the client: a reset or a disconnect.
    Reset,
}

impl StatusClass {
    pub const ALL: [StatusClass; 6] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirect,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::Reset,
    ];

    /// From the `:status` pseudo-header's bytes; anything unreadable is a reset.
    pub fn from_status(status: &[u8]) -> Self {
        match status {
            [b'1', _, _] => StatusClass::Informational,
            [b'2', _, _] => StatusClass::Success,
            [b'3', _, _] => StatusClass::Redirect,
            [b'4', _, _] => StatusClass::ClientError,
            [b'5', _, _] => StatusClass::ServerError,
            _ => StatusClass::Reset,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Reset => "reset",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

pub fn requests(rollout: &str, version: &str, class: StatusClass) -> String {
    format!(
        "dimmer.rollout=.={rollout};.;version=.={version};.;class=.={};.;requests",
        class.label()
    )
}

/// Histogram of request latency in milliseconds.
pub fn latency_ms(rollout: &str, version: &str) -> String {
    format!("dimmer.rollout=.={rollout};.;version=.={version};.;latency_ms")
}

/// [`requests`] for the requests Envoy mirrored to `version`
/// (`dimmer_shadow_requests`): apart, so that they never pass for users'.
pub fn shadow_requests(rollout: &str, version: &str, class: StatusClass) -> String {
    format!(
        "dimmer.rollout=.={rollout};.;version=.={version};.;class=.={};.;shadow_requests",
        class.label()
    )
}

/// [`latency_ms`] for mirrored requests (`dimmer_shadow_latency_ms`).
pub fn shadow_latency_ms(rollout: &str, version: &str) -> String {
    format!("dimmer.rollout=.={rollout};.;version=.={version};.;shadow_latency_ms")
}

/// Revision of the config applied (gauge).
pub const CONFIG_REVISION: &str = "dimmer.config_revision";
/// Configs taken from the controller (counter).
pub const CONFIG_UPDATES: &str = "dimmer.config_updates";
/// Configs from the controller refused as invalid (counter).
pub const CONFIG_REJECTED: &str = "dimmer.config_rejected";
/// Polls of the controller (counter).
pub const POLLS: &str = "dimmer.polls";
/// Polls that failed: unreachable, timeout, non-2xx/304 answer (counter).
pub const POLL_FAILURES: &str = "dimmer.poll_failures";
/// Seconds since the last good answer from the controller (gauge).
pub const CONFIG_AGE_SECONDS: &str = "dimmer.config_age_seconds";
/// Bytes of linear memory of the VM that last ticked (gauge): every VM runs
/// the same code on the same config, so one stands for all; a leak shows as
/// growth.
pub const VM_MEMORY_BYTES: &str = "dimmer.vm_memory_bytes";
/// Microseconds the VM that last took a config spent parsing and compiling
/// it, stats defined included (gauge): what a reload costs a worker, which
/// grows with the number of rollouts and flags.
pub const CONFIG_APPLY_MICROSECONDS: &str = "dimmer.config_apply_us";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(StatusClass::from_status(b"200"), StatusClass::Success);
        assert_eq!(StatusClass::from_status(b"503"), StatusClass::ServerError);
        assert_eq!(StatusClass::from_status(b"404"), StatusClass::ClientError);
        assert_eq!(StatusClass::from_status(b"101"), StatusClass::Informational);
        assert_eq!(StatusClass::from_status(b""), StatusClass::Reset);
        assert_eq!(StatusClass::from_status(b"2000"), StatusClass::Reset);
        for (i, c) in StatusClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }

    #[test]
    fn names_carry_tags() {
        assert_eq!(
            requests("checkout", "v2", StatusClass::ServerError),
            "dimmer.rollout=.=checkout;.;version=.=v2;.;class=.=5xx;.;requests"
        );
    }
}
