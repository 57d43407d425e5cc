//! How the core reads a request: the [`Request`] trait the host
//! implements (Envoy's header map in the filter, a plain map in tests), the
//! map of every header one host call hands over, and a user's identity as
//! the request carries it.

use alloc::borrow::Cow;
use alloc::vec::Vec;

use crate::config::IdentitySource;
use crate::cookie::cookie_value;

/// Read access to the request headers; Envoy's header map in the filter, a
/// plain map in tests.
pub trait Request {
    fn header(&self, name: &str) -> Option<Vec<u8>>;

    /// The same, lent where the request already holds it (a map read in one
    /// call): no copy per read on the filter's hot path.
    fn header_lent(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.header(name).map(Cow::Owned)
    }
}

/// The first non-empty identity among `sources`, as the request carries it.
pub fn identity_of<'r>(sources: &[IdentitySource], req: &'r impl Request) -> Option<Cow<'r, [u8]>> {
    identity_in(sources, req, &mut LazyHeader::default())
}

pub(crate) fn identity_in<'r>(
    sources: &[IdentitySource],
    req: &'r impl Request,
    cookies: &mut LazyHeader<'r>,
) -> Option<Cow<'r, [u8]>> {
    sources.iter().find_map(|src| match src {
        IdentitySource::Header(name) => req.header_lent(name).filter(|id| !id.is_empty()),
        IdentitySource::Cookie(name) => cookies.cookie(req, name),
    })
}

/// A header read at most once, and only if needed.
#[derive(Default)]
pub(crate) struct LazyHeader<'r>(Option<Option<Cow<'r, [u8]>>>);

impl<'r> LazyHeader<'r> {
    pub(crate) fn get(&mut self, req: &'r impl Request, name: &str) -> Option<&[u8]> {
        self.0
            .get_or_insert_with(|| req.header_lent(name))
            .as_deref()
    }

    /// The non-empty value of cookie `name` in the `Cookie` header, lent
    /// from the request where the request lends the header.
    fn cookie(&mut self, req: &'r impl Request, name: &str) -> Option<Cow<'r, [u8]>> {
        let value = match self.0.get_or_insert_with(|| req.header_lent("cookie")) {
            Some(Cow::Borrowed(header)) => {
                let header: &'r [u8] = header;
                cookie_value(header, name).map(Cow::Borrowed)
            }
            Some(Cow::Owned(header)) => cookie_value(header, name).map(|v| Cow::Owned(v.to_vec())),
            None => None,
        };
        value.filter(|id| !id.is_empty())
    }
}

/// Every request header, as one proxy-wasm call hands them over (the
/// ABI's serialized map: a count, each pair's two lengths, then each key
/// and value NUL-terminated). One call instead of one per header: with
/// flags the filter reads the identity, the rollout's override header and
/// the flags' targeting headers, and each read is a round trip across the
/// VM boundary that costs more than scanning a request's headers here.
/// The map is indexed once, so a lookup compares lengths before bytes.
/// A name gets its first value, as Envoy's own single-header read does.
pub struct HeaderPairs {
    bytes: Vec<u8>,
    index: Vec<PairAt>,
    /// False for a map the host did not give: nothing can be told absent.
    read: bool,
}

/// `(key start, key length, value start, value length)` of a pair.
pub type PairAt = (u32, u32, u32, u32);

impl HeaderPairs {
    /// Reads the map's layout; a map that does not parse (which Envoy
    /// never sends) reads as the pairs before the fault.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self::with_index(bytes, Vec::new())
    }

    /// The same, laying the map out in `index` (cleared first): a filter
    /// hands back the last request's, so a request allocates no index.
    pub fn with_index(bytes: Vec<u8>, mut index: Vec<PairAt>) -> Self {
        layout(&bytes, &mut index);
        HeaderPairs {
            bytes,
            index,
            read: true,
        }
    }

    /// The map of a request whose headers the host did not give: every
    /// lookup finds nothing, and [`HeaderPairs::may_have`] says yes.
    pub fn unread(mut index: Vec<PairAt>) -> Self {
        index.clear();
        HeaderPairs {
            bytes: Vec::new(),
            index,
            read: false,
        }
    }

    /// Whether the client may have sent `name`: a header the filter must
    /// replace or remove is removed even from a map that could not be read.
    pub fn may_have(&self, name: &str) -> bool {
        !self.read || self.get(name).is_some()
    }

    /// The index, for the next request's [`HeaderPairs::with_index`].
    pub fn into_index(self) -> Vec<PairAt> {
        self.index
    }

    /// The value of the first pair named `name` (ASCII case aside).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        for &(k, kl, v, vl) in &self.index {
            if kl as usize != name.len() {
                continue;
            }
            let Some(key) = self.bytes.get(k as usize..(k + kl) as usize) else {
                continue;
            };
            // Envoy's keys and the config's names are lowercase: a byte
            // compare finds them before the case-blind one is needed.
            if key == name || key.eq_ignore_ascii_case(name) {
                return self.bytes.get(v as usize..(v + vl) as usize);
            }
        }
        None
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn layout(bytes: &[u8], index: &mut Vec<PairAt>) {
    index.clear();
    let Some(count) = u32_at(bytes, 0) else {
        return;
    };
    let count = count as usize;
    // Lengths come first; a count the buffer cannot hold is refused before
    // anything is allocated for it.
    let Some(mut data) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else {
        return;
    };
    // Offsets are kept as u32: a larger map (never: Envoy caps headers far
    // below) is not read.
    if bytes.len() > u32::MAX as usize {
        return;
    }
    let Some(lengths) = bytes.get(4..data) else {
        return;
    };
    index.reserve(count);
    for pair in lengths.chunks_exact(8) {
        let kl = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
        let vl = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
        // Each key and value is followed by a NUL.
        let v = data + kl as usize + 1;
        let end = v + vl as usize + 1;
        if end > bytes.len() {
            break;
        }
        index.push((data as u32, kl, v as u32, vl));
        data = end;
    }
}

impl Request for HeaderPairs {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.get(name).map(<[u8]>::to_vec)
    }

    fn header_lent(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.get(name).map(Cow::Borrowed)
    }
}
