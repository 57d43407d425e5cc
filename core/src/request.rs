//! How the core reads a request: the [`Request`] trait the host
//! implements (Envoy's header map in the filter, a plain map in tests), a
//! view that asks the host for each header once, and a user's identity as
//! the request carries it.

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::config::IdentitySource;
use crate::cookie::cookie_value;

/// Read access to the request headers; Envoy's header map in the filter, a
/// plain map in tests.
pub trait Request {
    fn header(&self, name: &str) -> Option<Vec<u8>>;
}

/// The first non-empty identity among `sources`, as the request carries it.
pub fn identity_of(sources: &[IdentitySource], req: &impl Request) -> Option<Vec<u8>> {
    identity_in(sources, req, &mut LazyHeader::default())
}

pub(crate) fn identity_in(
    sources: &[IdentitySource],
    req: &impl Request,
    cookies: &mut LazyHeader,
) -> Option<Vec<u8>> {
    sources.iter().find_map(|src| match src {
        IdentitySource::Header(name) => req.header(name).filter(|id| !id.is_empty()),
        IdentitySource::Cookie(name) => cookies
            .get(req, "cookie")
            .and_then(|h| cookie_value(h, name))
            .filter(|id| !id.is_empty())
            .map(<[u8]>::to_vec),
    })
}

/// A view of a request that asks the host for each header at most once:
/// the rollout and every flag read the same identity, and each read from
/// Envoy costs a copy into the VM.
pub struct CachedRequest<'a, R: Request> {
    inner: &'a R,
    seen: RefCell<Vec<(String, Option<Vec<u8>>)>>,
}

impl<'a, R: Request> CachedRequest<'a, R> {
    pub fn new(inner: &'a R) -> Self {
        CachedRequest {
            inner,
            // The identity, a cookie, an override or two: room for them
            // from the start, not grown one by one.
            seen: RefCell::new(Vec::with_capacity(4)),
        }
    }
}

impl<R: Request> Request for CachedRequest<'_, R> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        if let Some((_, v)) = self.seen.borrow().iter().find(|(n, _)| n == name) {
            return v.clone();
        }
        let v = self.inner.header(name);
        self.seen.borrow_mut().push((String::from(name), v.clone()));
        v
    }
}

/// A header read at most once, and only if needed.
#[derive(Default)]
pub(crate) struct LazyHeader(Option<Option<Vec<u8>>>);

impl LazyHeader {
    pub(crate) fn get(&mut self, req: &impl Request, name: &str) -> Option<&[u8]> {
        self.0.get_or_insert_with(|| req.header(name)).as_deref()
    }
}
