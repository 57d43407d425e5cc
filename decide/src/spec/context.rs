//! What a section's checks need to know of the rest of the spec, so that
//! each section is checked next to its type without knowing the whole.

pub(super) struct Context<'a> {
    pub name: &'a str,
    pub stable: &'a str,
    pub canary: &'a str,
    /// The spec carries a feature flag.
    pub is_flag: bool,
    /// `overrides` send someone to the canary (a preview needs them).
    pub previews_canary: bool,
}
