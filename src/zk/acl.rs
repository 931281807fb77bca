//! The ACL of every znode zkcoord creates, chosen here and nowhere else.
//!
//! * With `zookeeper_auth` set, the session is authenticated and every znode gets
//!   `auth` ALL (ZooKeeper expands it to the identity the session authenticated as, e.g.
//!   `digest:zkcoord:<hash>`) plus `world:anyone` READ: every zkcoord instance with the same
//!   credentials has full access, operators and `zkCli.sh` can look, nobody else can write,
//!   create or delete anything in zkcoord's state.
//! * Without it, znodes are open (`world:anyone` ALL), as before; zkcoord warns at start-up.
//!
//! Recipes take the ACL from [`crate::zk::ZkSession::acls`], which calls [`for_session`].

use zookeeper_client::{Acl, Acls, CreateMode, Permission};

use crate::{
    error::{Error, Result},
    zk::Zk,
};

/// `auth` ALL for zkcoord's own identity, `world:anyone` READ.
static OWNER_ALL_WORLD_READ: [Acl; 2] =
    [Acl::new_const(Permission::ALL, "auth", ""), Acl::new_const(Permission::READ, "world", "anyone")];

/// The ACL for znodes created by a session that is (or is not) authenticated.
pub fn for_session(authenticated: bool) -> Acls<'static> {
    if authenticated { Acls::new(&OWNER_ALL_WORLD_READ) } else { Acls::anyone_all() }
}

/// Whether `acl` lets unauthenticated clients do more than read.
pub fn world_writable(acl: &[Acl]) -> bool {
    let beyond_read = [Permission::WRITE, Permission::CREATE, Permission::DELETE, Permission::ADMIN];
    acl.iter().any(|entry| entry.scheme() == "world" && beyond_read.iter().any(|p| entry.permission().has(*p)))
}

/// Makes sure the directory `path` exists. When `authenticated` and the directory already
/// exists with an ACL that lets anyone write (created before `zookeeper_auth` was set), its
/// ACL is replaced with [`for_session`]'s, so that nobody can create or delete in it; the
/// znodes already inside keep theirs. ACLs set by an operator that do not open the directory
/// to the world are left alone.
///
/// # Errors
/// ZooKeeper errors; [`Error::Internal`] naming the problem when the directory belongs to
/// other credentials (`NoAuth`).
pub async fn ensure_directory(client: &Zk, path: &str, authenticated: bool) -> Result<()> {
    let acls = for_session(authenticated);
    let no_auth = |what: &str| {
        Error::Internal(format!(
            "cannot {what} zkcoord's znodes (NoAuth): they belong to other ZooKeeper credentials; check zookeeper_auth"
        ))
    };
    // Look before creating: creating an existing znode needs CREATE on its parent, which may
    // belong to someone else (the namespace's parent).
    let Some((current, stat)) = client.get_acl(path).await? else {
        return match client.create(path, &[], &CreateMode::Persistent.with_acls(acls)).await {
            Ok(_) => Ok(()),
            Err(zookeeper_client::Error::NoAuth) => Err(no_auth("create")),
            Err(err) => Err(err.into()),
        };
    };
    if !authenticated {
        return Ok(());
    }
    if world_writable(&current) {
        match client.set_acl(path, &acls, Some(stat.aversion)).await {
            Ok(Some(_)) => tracing::info!(path, "restricted the ACL of a directory that was writable by anyone"),
            Ok(None) => return Err(zookeeper_client::Error::NoNode.into()),
            Err(zookeeper_client::Error::BadVersion) => {} // someone else did it meanwhile
            Err(zookeeper_client::Error::NoAuth) => return Err(no_auth("restrict the ACL of")),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use zookeeper_client::AuthId;

    use super::*;

    #[test]
    fn authenticated_sessions_keep_the_world_to_reading() {
        let acls = for_session(true);
        assert_eq!(acls.len(), 2);
        assert!(!world_writable(&acls));
        assert!(acls.iter().any(|a| a.auth_id() == &AuthId::authed() && a.permission() == Permission::ALL));
        assert!(world_writable(&for_session(false)));
        let operator = [
            Acl::new(Permission::ALL, AuthId::new("digest", "ops:hash")),
            Acl::new(Permission::NONE, AuthId::anyone()),
        ];
        assert!(!world_writable(&operator));
    }
}
