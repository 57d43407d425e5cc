//! A program run under a wrapper: on a test host (`ip netns exec …`), under
//! valgrind, pinned with taskset — or as it is, with no wrapper.

use std::ffi::{OsStr, OsString};
use std::process::Command;

/// `program` run under `wrapper` (its words; none runs it directly).
pub fn wrapped(wrapper: &[OsString], program: impl AsRef<OsStr>) -> Command {
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}
