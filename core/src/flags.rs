//! Feature flags (docs/flags.md): the hot-path form of validated flags and
//! their evaluation, as pure functions of a [`FlagContext`]. The filter's
//! context reads request headers; the controller's OFREP endpoint reads an
//! evaluation context. Both run this code, so a flag's answer is the same
//! at the proxy and in an app.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::OnceCell;

use smallvec::SmallVec;

use crate::cohort::{Cohort, BUCKETS};
use crate::config::{Flag, FlagAnonymous, FlagState, IdentitySource};
use crate::matching::{effective_prefix, ends_of, fits, lowercase_headers, owner_of};
use crate::request::{identity_of, Request};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFlags {
    pub flags: Vec<CompiledFlag>,
    /// Every flag after the flags it requires (validation refused cycles).
    order: Vec<usize>,
    /// How many distinct identity chains the flags have.
    chains: usize,
    /// How many distinct headers the flags' overrides test (each
    /// override's `attribute` numbers its header): five flags with an
    /// override on one header read it once.
    attributes: usize,
    /// The longest header value the flags can make.
    header_max: usize,
    /// Whether any flag matches on host / path.
    pub needs_host: bool,
    pub needs_path: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFlag {
    pub key: String,
    /// Lowercase, without port.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub identity: Vec<IdentitySource>,
    /// The number of this flag's identity chain: flags with equal chains
    /// share it, so a request's identity is read once per chain.
    chain: usize,
    pub anonymous: FlagAnonymous,
    cohort: Cohort,
    pub default: usize,
    pub variants: Vec<String>,
    /// `key=variant` for each variant: the header's pieces, made once.
    segments: Vec<String>,
    /// `ends[i]` is one past the last bucket of `variants[i]`.
    ends: Vec<u16>,
    /// `(header, its attribute number, values, variant)`.
    overrides: Vec<(String, usize, Vec<Vec<u8>>, usize)>,
    pub enabled: bool,
    pub record_latency: bool,
    /// `(flag index, variant indices that satisfy it)`.
    requires: Vec<(usize, Vec<usize>)>,
    /// The group's cohort and this flag's slice `[from, to)` of it.
    exclusion: Option<(Cohort, u16, u16)>,
}

/// Why a flag has its variant; OFREP's reasons follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagReason {
    /// The flag is disabled: its default variant.
    Disabled,
    /// A prerequisite is not met: the default variant.
    Prerequisite,
    /// A targeting override chose the variant.
    TargetingMatch,
    /// The identity's cohort chose the variant.
    Split,
    /// The identity falls outside this flag's slice of its exclusion group.
    Excluded,
    /// No identity: the default variant.
    AnonymousDefault,
    /// No identity: a variant by weight for this request alone.
    AnonymousRandom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    pub variant: usize,
    pub reason: FlagReason,
}

/// What a flag evaluation reads: the identity, the attributes overrides
/// test, and whether a flag's match applies.
pub trait FlagContext {
    /// The first non-empty identity among `sources`. Flags with equal
    /// chains have the same `chain` number, so a context may read each
    /// chain once; it lends the identity rather than copying it per flag.
    fn identity(&self, chain: usize, sources: &[IdentitySource]) -> Option<&[u8]>;
    /// The value an override on `header` compares; `attribute` numbers the
    /// header among the flags' (a context may read each once).
    fn attribute(&self, attribute: usize, header: &str) -> Option<Cow<'_, [u8]>>;
    fn matches(&self, flag: &CompiledFlag) -> bool;
}

impl CompiledFlags {
    /// Compiles flags that have passed [`crate::validate::validate_flags`];
    /// names that do not resolve fall back to index 0 rather than panicking.
    pub fn new(flags: &[Flag]) -> Self {
        let mut compiled: Vec<CompiledFlag> =
            flags.iter().map(|f| CompiledFlag::new(f, flags)).collect();
        let mut chains: Vec<Vec<IdentitySource>> = Vec::new();
        let mut attributes: Vec<String> = Vec::new();
        for f in &mut compiled {
            f.chain = number(&mut chains, &f.identity);
            for (header, attribute, _, _) in &mut f.overrides {
                *attribute = number(&mut attributes, header);
            }
        }
        let header_max = compiled
            .iter()
            .map(|f| f.segments.iter().map(String::len).max().unwrap_or(0) + 1)
            .sum();
        CompiledFlags {
            order: topological(&compiled),
            chains: chains.len(),
            attributes: attributes.len(),
            header_max,
            needs_host: compiled.iter().any(|f| f.host.is_some()),
            needs_path: compiled.iter().any(|f| f.path_prefix.is_some()),
            flags: compiled,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    pub fn index(&self, key: &str) -> Option<usize> {
        self.flags.iter().position(|f| f.key == key)
    }

    /// Every flag's evaluation, by flag index; `None` where the flag's match
    /// does not fit. `random` is called only for anonymous `random` flags.
    pub fn evaluate(
        &self,
        ctx: &impl FlagContext,
        random: &mut impl FnMut() -> u64,
    ) -> Vec<Option<Evaluation>> {
        let mut out = Vec::new();
        self.evaluate_into(ctx, random, &mut out);
        out
    }

    /// The same into `out`, which is cleared first: a filter keeps one
    /// buffer for all its requests instead of allocating one each.
    pub fn evaluate_into(
        &self,
        ctx: &impl FlagContext,
        random: &mut impl FnMut() -> u64,
        out: &mut Vec<Option<Evaluation>>,
    ) {
        out.clear();
        out.resize(self.flags.len(), None);
        for &i in &self.order {
            let Some(f) = self.flags.get(i) else { continue };
            if ctx.matches(f) {
                let e = f.evaluate(ctx, out, &self.flags, random);
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(e);
                }
            }
        }
    }
}

/// `key=variant;key2=variant`, in the config's order, for the flags that
/// apply; empty if none does.
pub fn header_value(flags: &CompiledFlags, results: &[Option<Evaluation>]) -> String {
    let mut v = String::new();
    write_header_value(flags, results, &mut v);
    v
}

/// The same into `v`, which is cleared first (a filter reuses one).
pub fn write_header_value(flags: &CompiledFlags, results: &[Option<Evaluation>], v: &mut String) {
    v.clear();
    // Sized once, for the longest value: grown piece by piece, the string
    // was reallocated five times for ten flags, the better part of the
    // flags' own cost a request; a reused one then never grows again.
    v.reserve(flags.header_max);
    for (f, r) in flags.flags.iter().zip(results) {
        let Some(segment) = r.as_ref().and_then(|r| f.segment(r.variant)) else {
            continue;
        };
        if !v.is_empty() {
            v.push(';');
        }
        v.push_str(segment);
    }
}

/// `item`'s number among the distinct items `seen` so far, numbering it
/// if it is new.
fn number<T: PartialEq + Clone>(seen: &mut Vec<T>, item: &T) -> usize {
    seen.iter().position(|s| s == item).unwrap_or_else(|| {
        seen.push(item.clone());
        seen.len() - 1
    })
}

/// Kahn's order over the prerequisites; a flag left over (a cycle, which
/// validation refuses) is appended so that it is still evaluated.
fn topological(flags: &[CompiledFlag]) -> Vec<usize> {
    let mut order = Vec::with_capacity(flags.len());
    let mut placed = alloc::vec![false; flags.len()];
    loop {
        let before = order.len();
        for (i, f) in flags.iter().enumerate() {
            if !placed[i] && f.requires.iter().all(|(j, _)| placed[*j] || *j == i) {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            break;
        }
    }
    order.extend((0..flags.len()).filter(|&i| !placed[i]));
    order
}

impl CompiledFlag {
    fn new(f: &Flag, all: &[Flag]) -> Self {
        let index = |name: &str| f.variants.iter().position(|v| v.name == name).unwrap_or(0);
        let requires = f
            .requires
            .iter()
            .filter_map(|p| {
                let j = all.iter().position(|o| o.key == p.flag)?;
                let other = &all[j];
                let ok = p
                    .variants
                    .iter()
                    .filter_map(|v| other.variants.iter().position(|o| &o.name == v))
                    .collect();
                Some((j, ok))
            })
            .collect();
        CompiledFlag {
            key: f.key.clone(),
            host: f.matcher.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path_prefix: effective_prefix(f.matcher.path_prefix.as_ref()),
            identity: lowercase_headers(&f.identity),
            chain: 0,
            anonymous: f.anonymous,
            cohort: Cohort::new(f.salt()),
            default: index(&f.default_variant),
            variants: f.variants.iter().map(|v| v.name.clone()).collect(),
            segments: f
                .variants
                .iter()
                .map(|v| alloc::format!("{}={}", f.key, v.name))
                .collect(),
            ends: ends_of(&f.variants),
            overrides: f
                .overrides
                .iter()
                .map(|o| {
                    (
                        o.header.to_ascii_lowercase(),
                        0,
                        o.values.iter().map(|v| v.as_bytes().to_vec()).collect(),
                        index(&o.variant),
                    )
                })
                .collect(),
            enabled: f.state == FlagState::Enabled,
            record_latency: f.record_latency,
            requires,
            exclusion: f.exclusion.as_ref().map(|e| {
                (
                    Cohort::new(&e.group),
                    e.from_bp.min(u32::from(BUCKETS)) as u16,
                    e.to_bp.min(u32::from(BUCKETS)) as u16,
                )
            }),
        }
    }

    /// `key=variant` for `variant`, as the flags header carries it.
    fn segment(&self, variant: usize) -> Option<&str> {
        self.segments.get(variant).map(String::as_str)
    }

    fn variant_of_bucket(&self, bucket: u16) -> usize {
        owner_of(&self.ends, bucket, self.default)
    }

    /// The variant an identity gets by hash alone, ignoring state,
    /// prerequisites and overrides (the exclusion slice included).
    pub fn variant_of_identity(&self, identity: &[u8]) -> usize {
        match &self.exclusion {
            Some((group, from, to)) if !(*from..*to).contains(&group.bucket(identity)) => {
                self.default
            }
            _ => self.variant_of_bucket(self.cohort.bucket(identity)),
        }
    }

    /// Whether this flag applies to a request for `host` (as sent in
    /// `:authority`) and `path`.
    pub fn matches_request(&self, host: &[u8], path: &[u8]) -> bool {
        fits(
            self.host.as_deref(),
            self.path_prefix.as_deref(),
            host,
            path,
        )
    }

    fn evaluate(
        &self,
        ctx: &impl FlagContext,
        done: &[Option<Evaluation>],
        all: &[CompiledFlag],
        random: &mut impl FnMut() -> u64,
    ) -> Evaluation {
        let give = |variant, reason| Evaluation { variant, reason };
        if !self.enabled {
            return give(self.default, FlagReason::Disabled);
        }
        for (j, ok) in &self.requires {
            // A prerequisite that does not apply to this request counts as
            // serving its default.
            let got = done
                .get(*j)
                .copied()
                .flatten()
                .map(|e| e.variant)
                .or_else(|| all.get(*j).map(|f| f.default));
            if !got.is_some_and(|v| ok.contains(&v)) {
                return give(self.default, FlagReason::Prerequisite);
            }
        }
        for (header, attribute, values, variant) in &self.overrides {
            if ctx
                .attribute(*attribute, header)
                .is_some_and(|v| values.iter().any(|x| **x == *v))
            {
                return give(*variant, FlagReason::TargetingMatch);
            }
        }
        if let Some(id) = ctx.identity(self.chain, &self.identity) {
            let in_slice = match &self.exclusion {
                Some((group, from, to)) => (*from..*to).contains(&group.bucket(id)),
                None => true,
            };
            if !in_slice {
                return give(self.default, FlagReason::Excluded);
            }
            return give(
                self.variant_of_bucket(self.cohort.bucket(id)),
                FlagReason::Split,
            );
        }
        match self.anonymous {
            FlagAnonymous::Default => give(self.default, FlagReason::AnonymousDefault),
            FlagAnonymous::Random => {
                if let Some((_, from, to)) = &self.exclusion {
                    let b = (random() % u64::from(BUCKETS)) as u16;
                    if !(*from..*to).contains(&b) {
                        return give(self.default, FlagReason::Excluded);
                    }
                }
                give(
                    self.variant_of_bucket((random() % u64::from(BUCKETS)) as u16),
                    FlagReason::AnonymousRandom,
                )
            }
        }
    }
}

/// A request's headers as a flag context: the identity by the flag's
/// chain, overrides on headers, the match on `:authority` and `:path`
/// (each read once, and only if some flag matches on it).
pub struct HeaderContext<'a, R: Request> {
    req: &'a R,
    /// `:authority` and `:path`, lent by the request where it can.
    host: Cow<'a, [u8]>,
    path: Cow<'a, [u8]>,
    /// The identity of each chain and the value of each override header,
    /// read when a flag first needs it (lent by the request where it can);
    /// inline for the usual few, so a request allocates nothing for them.
    identities: SmallVec<[Read<'a>; 2]>,
    attributes: SmallVec<[Read<'a>; 2]>,
}

type Read<'a> = OnceCell<Option<Cow<'a, [u8]>>>;

fn unread<'a>(n: usize) -> SmallVec<[Read<'a>; 2]> {
    (0..n).map(|_| OnceCell::new()).collect()
}

impl<'a, R: Request> HeaderContext<'a, R> {
    pub fn new(flags: &CompiledFlags, req: &'a R) -> Self {
        let read = |needed: bool, name: &str| {
            if needed {
                req.header_lent(name).unwrap_or_default()
            } else {
                Cow::Borrowed(&[][..])
            }
        };
        HeaderContext {
            host: read(flags.needs_host, ":authority"),
            path: read(flags.needs_path, ":path"),
            req,
            identities: unread(flags.chains),
            attributes: unread(flags.attributes),
        }
    }
}

impl<R: Request> FlagContext for HeaderContext<'_, R> {
    fn identity(&self, chain: usize, sources: &[IdentitySource]) -> Option<&[u8]> {
        match self.identities.get(chain) {
            Some(cell) => cell
                .get_or_init(|| identity_of(sources, self.req))
                .as_deref(),
            // Only a context made for other flags has no such chain: no
            // identity (each flag's default or its anonymous rule), never a
            // panic in the filter.
            None => None,
        }
    }

    fn attribute(&self, attribute: usize, header: &str) -> Option<Cow<'_, [u8]>> {
        match self.attributes.get(attribute) {
            Some(cell) => cell
                .get_or_init(|| self.req.header_lent(header))
                .as_deref()
                .map(Cow::Borrowed),
            // A context made for other flags: read, not kept.
            None => self.req.header_lent(header),
        }
    }

    fn matches(&self, flag: &CompiledFlag) -> bool {
        flag.matches_request(&self.host, &self.path)
    }
}
