//! Which tenant a request is for ([`tenant_of`]) and the recipes serving it
//! ([`Context::recipes`]).
//!
//! Today the tenant is chosen by the client, with the `zkcoord-tenant` metadata header: no
//! header is the default tenant; an invalid name is INVALID_ARGUMENT; a valid name that is not
//! configured (setting `tenants`) is PERMISSION_DENIED `tenant not allowed`.
//!
//! **By client identity** (mTLS with an `authz_file`): [`Context::recipes`] is the one place
//! that decides, and handlers never read the header themselves. With an `authz_file`, a
//! request without the header goes to the tenant of the first rule matching the client's
//! certificate identity, and a header naming a tenant the identity has no rule for is
//! PERMISSION_DENIED (see [`crate::authz`]); names are then authorized per tenant.

use std::sync::Arc;

use tonic::Request;

use super::Context;
use crate::{
    error::{Error, Result, TOO_MANY_CONNECTIONS},
    tenant::Recipes,
    tls::TlsPeer,
    validate::Name,
};

/// The gRPC metadata header that names the tenant of a request (the client crate's constant:
/// both sides must agree on it).
pub use zkcoord_client::TENANT_HEADER;

/// The tenant `request` is for: `None` for the default tenant.
///
/// # Errors
/// [`Error::InvalidArgument`] (field `zkcoord-tenant`) when the header is given more than
/// once, is not ASCII, or is not a valid name (1–128 bytes of ASCII letters, digits and
/// `. _ - : @`, starting with a letter or digit: never `/`, `.` or `..`).
pub fn tenant_of<T>(request: &Request<T>) -> Result<Option<Name>> {
    let mut values = request.metadata().get_all(TENANT_HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Error::invalid(TENANT_HEADER, "must be given at most once"));
    }
    let value = value.to_str().map_err(|_| Error::invalid(TENANT_HEADER, "must be a tenant name"))?;
    Name::parse(TENANT_HEADER, value).map(Some)
}

impl Context {
    /// The recipes of the tenant `request` is for.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a malformed tenant header ([`tenant_of`]); PERMISSION_DENIED
    /// ([`Error::TenantNotAllowed`]) for a tenant that is not configured; RESOURCE_EXHAUSTED
    /// ([`TOO_MANY_CONNECTIONS`]) on a connection past `max_connections_per_identity`; and
    /// PERMISSION_DENIED ([`crate::error::CERTIFICATE_NOT_TRUSTED`]) for a connection whose
    /// client certificate the reloaded client CA no longer trusts.
    pub fn recipes<T>(&self, request: &Request<T>) -> Result<Arc<Recipes>> {
        // Every zkcoord call passes here: a connection past `max_connections_per_identity`
        // gets nothing done (see `crate::limits`).
        if request.extensions().get::<TlsPeer>().is_some_and(|peer| peer.over_connection_limit) {
            return Err(Error::LimitReached(TOO_MANY_CONNECTIONS));
        }
        self.check_certificate(&super::Caller::of(request))?;
        let requested = tenant_of(request)?;
        let requested = requested.as_ref().map(Name::as_str);
        let Some(authz) = &self.authz else { return self.tenants.get(requested) };
        let caller = super::Caller::of(request);
        let tenant = authz.current().tenant_for(caller.identity(), requested).map_err(|()| Error::TenantNotAllowed)?;
        self.tenants.get(tenant.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn with_header(values: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        for value in values {
            request.metadata_mut().append(TENANT_HEADER, MetadataValue::try_from(*value).expect("ascii"));
        }
        request
    }

    #[test]
    fn the_header_names_the_tenant() {
        assert_eq!(tenant_of(&with_header(&[])).expect("default"), None);
        assert_eq!(tenant_of(&with_header(&["team-a"])).expect("valid").as_ref().map(Name::as_str), Some("team-a"));
        for bad in [&[""][..], &["a/b"], &[".."], &["."], &["a", "b"], &[&"x".repeat(129)]] {
            let err = tenant_of(&with_header(bad)).expect_err("invalid");
            assert!(matches!(err, Error::InvalidArgument { field: TENANT_HEADER, .. }), "{bad:?}: {err}");
        }
    }
}
