//! Bindings: what a recipe ties to a lease so that it ends with the lease.
//!
//! A binding is a child of a lease record, `/leases/<id>/<name>`, created in the same
//! transaction as the znodes it stands for and deleted with them: by its recipe (Resign,
//! Unlock) or with its lease (Revoke, expiry: `zkops::delete_lease`), so those znodes
//! exist exactly while the binding does. Its name is the owning recipe's (opaque here, unique
//! per lease; see [`crate::zk::layout`]). Its data is a [`BindingRecord`] (JSON), which says all
//! the lease needs to know:
//!
//! ```json
//! {"owns": [{"path": "/elections/e/candidates/c"},
//!           {"parent": "/locks/k", "prefix": "x-<hold>-"}],
//!  "shows": [{"kind": "lock", "name": "k", "id": "<hold>"}]}
//! ```
//!
//! * `owns`: the znodes deleted with the binding — exact paths, or the children of a parent
//!   whose names start with a prefix (a lock request's sequential nodes, whose names are known
//!   only once created). Every owned znode lies strictly inside a recipe directory
//!   ([`layout::RECIPE_DIRECTORIES`]) and every segment of its path is a valid name (no `..`):
//!   no binding can make the end of a lease delete a lease record, an instance registration, a
//!   tenant, or anything outside the namespace. A record that claims more is refused
//!   ([`Error::Internal`]), and so is the deletion of its lease: nothing is half-deleted.
//! * `shows`: what `Lease.TimeToLive` lists for the binding, in order.
//!
//! A recipe may keep fields of its own beside these ([`BindingRecord::encode_with`]); the
//! lease ignores them. A recipe plugs in by writing such records: the lease's deletion, expiry,
//! batching of large leases and TimeToLive need no change.
//!
//! # Rolling upgrades
//! Versions before the binding record put a binding's meaning in its name:
//! `e~<election>~<candidate>` (no data) owned that candidate; `l~<hold>` (data: the request's
//! mode and keys) owned the hold's node in the queue of each key. Elections and locks still
//! name their bindings so, and a hold's binding still carries its mode and keys beside the
//! record. So while both versions run:
//! * an old instance deletes and lists what a new one bound: it goes by these names and reads
//!   the mode and keys (ignoring the fields it does not know);
//! * a new instance reads what an old one bound through `legacy`, the one place that knows
//!   those formats (only for data without `owns`).
//!
//! An old instance would delete the binding of a recipe it does not know (a name it cannot
//! parse) alone, leaving what it owns behind: a recipe added after this format must clean up
//! such leftovers itself, as shard groups do (an assigner deletes a member znode whose lease
//! has ended; nothing in it is acted on meanwhile, since its lease is gone).

use futures_util::future::{join_all, try_join_all};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    validate::Name,
    zk::{Zk, layout},
};

/// The data of a binding.
///
/// `owns` is required: data without it (nothing, or a format of older versions) is no binding
/// record. Fields other than `owns` and `shows` are the recipe's and are ignored here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// The znodes deleted with the binding.
    pub owns: Vec<Owned>,
    /// What TimeToLive lists for the binding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shows: Vec<Shown>,
}

/// Znodes a binding owns. Unknown fields are refused: a form of ownership this version does
/// not know makes the record invalid instead of being read as a narrower one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Owned {
    /// One znode.
    Node {
        /// Its path (relative to the namespace or the tenant's root).
        path: String,
    },
    /// The children of `parent` whose names start with `prefix`, whatever they are when the
    /// binding is deleted.
    Children {
        /// The parent's path.
        parent: String,
        /// The prefix of the owned children's names (not empty).
        prefix: String,
    },
}

/// One entry of TimeToLive's listing of a lease's bindings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// What is bound, named by the recipe that bound it (e.g. `candidacy`, `lock`).
    pub kind: String,
    /// The name it is bound under (an election, a lock key).
    pub name: String,
    /// Its id there (a candidate id, a lock handle).
    pub id: String,
}

impl BindingRecord {
    /// The znode data.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The znode data, with the recipe's own fields `own` (a struct serialized as a JSON
    /// object, with no field named `owns` or `shows`) beside the record's.
    pub fn encode_with<T: Serialize>(&self, own: &T) -> Vec<u8> {
        #[derive(Serialize)]
        struct With<'a, T> {
            #[serde(flatten)]
            own: &'a T,
            #[serde(flatten)]
            record: &'a BindingRecord,
        }
        serde_json::to_vec(&With { own, record: self }).unwrap_or_default()
    }

    /// Checks that every znode the record owns lies inside a recipe directory.
    ///
    /// # Errors
    /// [`Error::Internal`] naming the first znode that does not.
    pub fn validate(&self) -> Result<()> {
        for owned in &self.owns {
            let valid = match owned {
                Owned::Node { path } => in_recipe_directory(path),
                Owned::Children { parent, prefix } => {
                    in_recipe_directory(parent) && Name::parse("prefix", prefix).is_ok()
                }
            };
            if !valid {
                return Err(Error::Internal(format!("a binding owns {owned:?}, outside the recipe directories")));
            }
        }
        Ok(())
    }
}

/// Whether `path` lies strictly inside one of [`layout::RECIPE_DIRECTORIES`], each segment a
/// valid name.
fn in_recipe_directory(path: &str) -> bool {
    layout::RECIPE_DIRECTORIES.iter().any(|dir| {
        path.strip_prefix(dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| rest.split('/').all(|segment| Name::parse("path", segment).is_ok()))
    })
}

/// What the binding named `name` with data `data` means: `None` for one zkcoord did not
/// write (it owns nothing and shows nothing; deleted alone with its lease). Data that is a
/// JSON object with `owns` is a binding record; anything else goes to the `legacy` decoder.
///
/// # Errors
/// [`Error::Internal`] when the data has `owns` but is no valid binding record (one that owns
/// something outside the recipe directories, or in a form this version does not know), or is
/// the lock binding of an older version and cannot be read.
pub fn decode(name: &str, data: &[u8]) -> Result<Option<BindingRecord>> {
    let value = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(value) if value.get("owns").is_some() => value,
        _ => return legacy::decode(name, data),
    };
    let record: BindingRecord =
        serde_json::from_value(value).map_err(|e| Error::Internal(format!("undecodable binding record: {e}")))?;
    record.validate()?;
    Ok(Some(record))
}

/// One binding of a lease, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Bound {
    /// The binding's path.
    pub path: String,
    /// What it means (empty for a binding zkcoord did not write).
    pub record: BindingRecord,
}

/// Reads the bindings named `children` of the lease record at `lease`, all at once, in the
/// order given. Bindings gone meanwhile are left out.
///
/// # Errors
/// As [`decode`]; [`Error::Unavailable`] when ZooKeeper cannot be reached.
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub(super) async fn read(client: &Zk, lease: &str, children: &[String]) -> Result<Vec<Bound>> {
    let reads = children.iter().map(|child| async move {
        let path = format!("{lease}/{child}");
        let read = client.get_data(&path).await;
        (child, path, read)
    });
    let mut bound = Vec::with_capacity(children.len());
    for (name, path, read) in join_all(reads).await {
        let Some((data, _)) = read? else { continue };
        let record = decode(name, &data)
            .map_err(|err| match err {
                Error::Internal(why) => Error::Internal(format!("binding {path}: {why}")),
                other => other,
            })?
            .unwrap_or_default();
        bound.push(Bound { path, record });
    }
    Ok(bound)
}

/// The znodes `record` owns: its exact paths, and the children matching its prefixes that
/// exist now (a parent gone has none).
///
/// # Errors
/// [`Error::Unavailable`] when ZooKeeper cannot be reached.
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub(super) async fn owned(client: &Zk, record: &BindingRecord) -> Result<Vec<String>> {
    let resolved = try_join_all(record.owns.iter().map(|owned| async move {
        match owned {
            Owned::Node { path } => Ok::<_, Error>(vec![path.clone()]),
            Owned::Children { parent, prefix } => Ok(client
                .list_children(parent)
                .await?
                .unwrap_or_default()
                .into_iter()
                .filter(|child| child.starts_with(prefix.as_str()))
                .map(|child| format!("{parent}/{child}"))
                .collect()),
        }
    }))
    .await?;
    Ok(resolved.into_iter().flatten().collect())
}

/// LEGACY: bindings written by versions before [`BindingRecord`], whose meaning is in their
/// name (see the module docs, "Rolling upgrades"). The only code here that knows what
/// elections and locks bind. Removable once no instance older than the binding record can run
/// and no binding one of them wrote is left (a binding lives as long as its lease or until its
/// recipe releases it).
mod legacy {
    use serde::Deserialize;

    use super::{BindingRecord, Owned, Shown};
    use crate::{
        error::{Error, Result},
        validate::Name,
        zk::layout,
    };

    /// The kind a candidacy is shown as (the election recipe's `BINDING_KIND`).
    const CANDIDACY: &str = "candidacy";
    /// The kind a lock request is shown as (the lock recipe's `BINDING_KIND`).
    const LOCK: &str = "lock";

    /// The data of a lock request's binding `l~<hold>`.
    #[derive(Deserialize)]
    struct Hold {
        exclusive: bool,
        keys: Vec<String>,
    }

    /// What the binding named `name` (data `data`, without `owns`) of an older version means:
    /// * `e~<election>~<candidate>` owns that candidate znode, shown as a candidacy;
    /// * `l~<hold>` owns the hold's node in the queue of each key its data lists, each shown
    ///   as a lock with the hold id as handle;
    /// * anything else (no `~`-name zkcoord made) owns nothing: `None`.
    ///
    /// # Errors
    /// [`Error::Internal`] when the data of an `l~<hold>` binding cannot be read.
    pub(super) fn decode(name: &str, data: &[u8]) -> Result<Option<BindingRecord>> {
        let mut parts = name.split('~');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("e"), Some(election), Some(candidate), None) => {
                let (Ok(election), Ok(candidate)) =
                    (Name::parse("election", election), Name::parse("candidate", candidate))
                else {
                    return Ok(None);
                };
                Ok(Some(BindingRecord {
                    owns: vec![Owned::Node { path: layout::candidate(&election, &candidate) }],
                    shows: vec![Shown {
                        kind: CANDIDACY.into(),
                        name: election.to_string(),
                        id: candidate.to_string(),
                    }],
                }))
            }
            (Some("l"), Some(hold), None, None) if layout::is_hold_id(hold) => {
                let Hold { exclusive, keys } = serde_json::from_slice(data)
                    .map_err(|e| Error::Internal(format!("undecodable lock binding: {e}")))?;
                let mut record = BindingRecord::default();
                for key in keys {
                    let key = Name::parse("key", &key)
                        .map_err(|_| Error::Internal("a lock binding names an invalid key".into()))?;
                    record.owns.push(Owned::Children {
                        parent: layout::lock(&key),
                        prefix: layout::hold_node_name_prefix(hold, exclusive),
                    });
                    record.shows.push(Shown { kind: LOCK.into(), name: key.to_string(), id: hold.to_owned() });
                }
                Ok(Some(record))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(kind: &str, name: &str, id: &str) -> Shown {
        Shown { kind: kind.into(), name: name.into(), id: id.into() }
    }

    #[test]
    fn records_round_trip_in_the_documented_format() {
        let record = BindingRecord {
            owns: vec![
                Owned::Node { path: "/elections/e/candidates/c".into() },
                Owned::Children { parent: "/locks/k".into(), prefix: "x-00000000000000ab-".into() },
            ],
            shows: vec![shown("lock", "k", "00000000000000ab")],
        };
        let json = r#"{"owns":[{"path":"/elections/e/candidates/c"},{"parent":"/locks/k","prefix":"x-00000000000000ab-"}],"shows":[{"kind":"lock","name":"k","id":"00000000000000ab"}]}"#;
        assert_eq!(String::from_utf8(record.encode()).expect("utf-8"), json);
        assert_eq!(decode("any-name", json.as_bytes()).expect("decodes"), Some(record.clone()));
        // `shows` may be absent; `owns` may be empty.
        assert_eq!(decode("x", br#"{"owns":[]}"#).expect("decodes"), Some(BindingRecord::default()));
    }

    #[test]
    fn a_recipe_keeps_its_own_fields_beside_the_record() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Own {
            exclusive: bool,
            keys: Vec<String>,
        }
        let record = BindingRecord {
            owns: vec![Owned::Node { path: "/locks/k/x".into() }],
            shows: vec![shown("lock", "k", "h")],
        };
        let own = Own { exclusive: true, keys: vec!["k".into()] };
        let data = record.encode_with(&own);
        assert_eq!(decode("x", &data).expect("decodes"), Some(record));
        assert_eq!(serde_json::from_slice::<Own>(&data).expect("decodes"), own, "the recipe reads its fields back");
    }

    #[test]
    fn owned_znodes_outside_the_recipe_directories_are_refused() {
        let node = |path: &str| BindingRecord { owns: vec![Owned::Node { path: path.into() }], shows: vec![] };
        let children = |parent: &str, prefix: &str| BindingRecord {
            owns: vec![Owned::Children { parent: parent.into(), prefix: prefix.into() }],
            shows: vec![],
        };
        for ok in
            [node("/elections/e"), node("/elections/e/candidates/c"), node("/locks/k/x-1"), children("/locks/k", "x-")]
        {
            assert!(ok.validate().is_ok(), "{ok:?}");
        }
        for bad in [
            node("/leases/123"),
            node("/instances/i~1"),
            node("/tenants/t/elections/e"),
            node("/elections"),
            node("/elections/"),
            node("/elections/e/../../leases/1"),
            node("/elections/../leases/1"),
            node("/elections/./e"),
            node("/elections//e"),
            node("/electionsx/e"),
            node("elections/e"),
            node("/locks/k/"),
            node(""),
            node("/"),
            children("/locks", "k"),
            children("/leases/1", "x"),
            children("/locks/k", ""),
            children("/locks/k", "../x"),
            children("/locks/k", "x/y"),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
            assert!(decode("x", &bad.encode()).is_err(), "{bad:?} decodes");
        }
        // One bad entry spoils the record.
        let mixed = BindingRecord {
            owns: vec![Owned::Node { path: "/locks/k/x".into() }, Owned::Node { path: "/leases/1".into() }],
            shows: vec![],
        };
        assert!(mixed.validate().is_err());
    }

    #[test]
    fn an_unknown_form_of_ownership_is_refused() {
        for data in [
            r#"{"owns":[{"path":"/locks/k","recursive":true}]}"#,
            r#"{"owns":[{"parent":"/locks/k","prefix":"x-","suffix":"-1"}]}"#,
            r#"{"owns":[{"subtree":"/locks/k"}]}"#,
            r#"{"owns":[{"path":"/locks/k","parent":"/locks/k","prefix":"x-"}]}"#,
        ] {
            for name in ["s~1", "e~e~c", "l~00000000000000ab"] {
                assert!(decode(name, data.as_bytes()).is_err(), "{name}: {data}");
            }
        }
    }

    #[test]
    fn legacy_candidacy_bindings_own_their_candidate() {
        let expected = BindingRecord {
            owns: vec![Owned::Node { path: "/elections/a.b:c@d/candidates/c-1".into() }],
            shows: vec![shown("candidacy", "a.b:c@d", "c-1")],
        };
        assert_eq!(decode("e~a.b:c@d~c-1", b"").expect("decodes"), Some(expected.clone()));
        // Whatever the data (versions before the record wrote none).
        assert_eq!(decode("e~a.b:c@d~c-1", b"junk").expect("decodes"), Some(expected));
        for unknown in ["e~../x~y", "e~x~..", "e~x", "e~x~y~z", "x~a~b", "e~~y", "foo", ""] {
            assert_eq!(decode(unknown, b"").expect("decodes"), None, "{unknown}");
        }
    }

    #[test]
    fn legacy_lock_bindings_own_the_hold_nodes_of_each_key() {
        let hold = "00000000000000ab";
        let data = br#"{"exclusive":false,"keys":["k1","k2"]}"#;
        assert_eq!(
            decode(&format!("l~{hold}"), data).expect("decodes"),
            Some(BindingRecord {
                owns: vec![
                    Owned::Children { parent: "/locks/k1".into(), prefix: format!("s-{hold}-") },
                    Owned::Children { parent: "/locks/k2".into(), prefix: format!("s-{hold}-") },
                ],
                shows: vec![shown("lock", "k1", hold), shown("lock", "k2", hold)],
            })
        );
        let exclusive =
            decode(&format!("l~{hold}"), br#"{"exclusive":true,"keys":["k"]}"#).expect("decodes").expect("a binding");
        assert_eq!(exclusive.owns, [Owned::Children { parent: "/locks/k".into(), prefix: format!("x-{hold}-") }]);
        // Undecodable data, or a key that is no name, is an error (as it was).
        for bad in [&b""[..], b"not json", br#"{"exclusive":true}"#, br#"{"exclusive":true,"keys":["../x"]}"#] {
            assert!(decode(&format!("l~{hold}"), bad).is_err());
        }
        // Not a hold id: not zkcoord's.
        for unknown in ["l~../../x", "l~ab", "l~00000000000000AB", "l~00000000000000ab~x"] {
            assert_eq!(decode(unknown, data).expect("decodes"), None, "{unknown}");
        }
    }
}
