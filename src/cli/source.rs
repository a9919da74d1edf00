//! The mount source: `POOL`, `POOL/NAMESPACE` or `/` (the whole cluster).

use crate::fs::MountKind;

/// What `rbdfs mount SOURCE MOUNTPOINT` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A pool: its default namespace, the others under `.ns`.
    Pool(String),
    /// One namespace of a pool.
    Namespace(String, String),
    /// Every pool with the rbd application.
    Cluster,
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, String> {
        if s == "/" {
            return Ok(Source::Cluster);
        }
        let bad = || {
            format!("invalid source {s:?}: expected POOL, POOL/NAMESPACE or / (the whole cluster)")
        };
        match s.split_once('/') {
            None if !s.is_empty() => Ok(Source::Pool(s.to_string())),
            Some((pool, ns)) if !pool.is_empty() && !ns.is_empty() && !ns.contains('/') => {
                Ok(Source::Namespace(pool.to_string(), ns.to_string()))
            }
            _ => Err(bad()),
        }
    }

    /// The tree the mount shows (`--image` shows one image of one
    /// namespace).
    pub fn kind(&self, image: bool) -> MountKind {
        match self {
            Source::Cluster => MountKind::Cluster,
            Source::Pool(_) if !image => MountKind::Pool,
            _ => MountKind::Single,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(Source::parse("/").unwrap(), Source::Cluster);
        assert_eq!(Source::parse("rbd").unwrap(), Source::Pool("rbd".into()));
        assert_eq!(
            Source::parse("rbd/t1").unwrap(),
            Source::Namespace("rbd".into(), "t1".into())
        );
        for bad in ["", "rbd/", "/t1", "a/b/c", "//"] {
            assert!(Source::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Source::Pool("p".into()).kind(false), MountKind::Pool);
        assert_eq!(Source::Pool("p".into()).kind(true), MountKind::Single);
        assert_eq!(
            Source::Namespace("p".into(), "n".into()).kind(false),
            MountKind::Single
        );
        assert_eq!(Source::Cluster.kind(false), MountKind::Cluster);
    }
}
