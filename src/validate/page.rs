//! Paging of the list calls (Lease.List, Lock.Holders, Election.Candidates, Shards.Members): the
//! page size rule
//! and the page token.
//!
//! A page token is opaque to clients: the hex encoding of `<call>\0<position>`, where `<call>`
//! names the list call it belongs to and `<position>` is the sort key of the last item the
//! previous page covered (a lease id, a lock key, a candidate's election order key). The next
//! page starts after that position, so an item that exists throughout the paging and keeps its
//! sort key is listed exactly once, whatever changes around it; no state is kept between calls.

use crate::error::{Error, Result};

/// The page size used when a request asks for none (`page_size` 0).
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page: a larger `page_size` is clamped to it.
pub const MAX_PAGE_SIZE: usize = 1000;
/// The reason an unknown page token is refused with.
pub const INVALID_PAGE_TOKEN: &str = "is not a page token of this call";
/// The request field of a page token.
const TOKEN_FIELD: &str = "page_token";

/// The list call a token belongs to (a token of one call is refused by the others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Lease.List: the position is a lease id.
    Leases,
    /// Lock.Holders: the position is a lock key.
    Holders,
    /// Election.Candidates: the position is `<priority> <czxid>`.
    Candidates,
    /// Shards.Members: the position is a member id.
    Members,
}

impl Call {
    fn tag(self) -> &'static str {
        match self {
            Call::Leases => "leases",
            Call::Holders => "holders",
            Call::Candidates => "candidates",
            Call::Members => "members",
        }
    }
}

/// A validated page request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The most items to return: 1 to [`MAX_PAGE_SIZE`].
    pub size: usize,
    /// Where the previous page ended (`None` for the first page): the position decoded from the
    /// token, still to be parsed by the call (see [`Page::after_parsed`]).
    pub after: Option<String>,
}

impl Page {
    /// Validates the paging fields of a request of `call`: `page_size` 0 means
    /// [`DEFAULT_PAGE_SIZE`], anything above [`MAX_PAGE_SIZE`] is clamped to it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] ([`INVALID_PAGE_TOKEN`]) for a token no answer of `call`
    /// returned.
    pub fn parse(call: Call, page_size: u32, page_token: &str) -> Result<Self> {
        let size = match usize::try_from(page_size).unwrap_or(MAX_PAGE_SIZE) {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() { None } else { Some(decode(call, page_token).ok_or_else(invalid)?) };
        Ok(Self { size, after })
    }

    /// The position the page starts after, parsed by `parse` (`None` for the first page).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] ([`INVALID_PAGE_TOKEN`]) when `parse` refuses it.
    pub fn after_parsed<T>(&self, parse: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>> {
        self.after.as_deref().map(|after| parse(after).ok_or_else(invalid)).transpose()
    }
}

/// The token of the page that follows position `last` of `call`.
pub fn token(call: Call, last: &str) -> String {
    crate::id::hex(format!("{}\0{last}", call.tag()).as_bytes())
}

fn invalid() -> Error {
    Error::invalid(TOKEN_FIELD, INVALID_PAGE_TOKEN)
}

fn decode(call: Call, token: &str) -> Option<String> {
    // Twice the longest position any call writes (a name of 128 bytes), and then some.
    if token.len() > 1024 || !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len() / 2)
        .map(|i| token.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let (tag, last) = text.split_once('\0')?;
    (tag == call.tag() && !last.is_empty()).then(|| last.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_clamp() {
        assert_eq!(Page::parse(Call::Leases, 0, "").expect("valid").size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::parse(Call::Leases, 7, "").expect("valid").size, 7);
        assert_eq!(Page::parse(Call::Leases, u32::MAX, "").expect("valid").size, MAX_PAGE_SIZE);
    }

    #[test]
    fn tokens_round_trip_within_their_call_only() {
        let token = token(Call::Holders, "orders:42");
        let page = Page::parse(Call::Holders, 0, &token).expect("valid");
        assert_eq!(page.after.as_deref(), Some("orders:42"));
        for call in [Call::Leases, Call::Candidates] {
            assert!(Page::parse(call, 0, &token).is_err(), "{call:?}");
        }
    }

    #[test]
    fn foreign_tokens_are_refused_with_a_stable_message() {
        for bad in ["x", "zz", "abc", "6c6561736573", "6c65617365730031", "00", &"a".repeat(2000)] {
            let err = Page::parse(Call::Leases, 0, bad).err();
            let message = err.map(|e| e.to_string());
            if bad == "6c65617365730031" {
                // "leases\01": a well-formed token.
                assert_eq!(message, None);
            } else {
                assert_eq!(message.as_deref(), Some("page_token: is not a page token of this call"), "{bad}");
            }
        }
        let page = Page::parse(Call::Leases, 0, &token(Call::Leases, "x")).expect("well-formed");
        assert!(page.after_parsed(|s| s.parse::<i64>().ok()).is_err());
    }
}
