//! Inode numbers: the tree's nodes and the table that numbers them.

use std::collections::HashMap;

use super::parts::PartNode;

pub(super) const ROOT: u64 = 1;
pub(super) const SNAP_ROOT: u64 = 2;
pub(super) const DIFF_ROOT: u64 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Node {
    Root,
    SnapRoot,
    Image(String),
    SnapDir(String),
    Snap(String, String),
    /// `.diff`: a directory per image.
    DiffRoot,
    /// `.diff/IMAGE`: a directory per snapshot.
    DiffImage(String),
    /// `.diff/IMAGE/SNAP`: `full` and `since-FROM`.
    DiffSnap(String, String),
    /// `.diff/IMAGE/SNAP/full` (from None) or `since-FROM`.
    DiffFile {
        image: String,
        snap: String,
        from: Option<String>,
    },
    /// `.part` and below.
    Part(PartNode),
}

/// Inode numbers for names, stable for the life of the mount.
pub(super) struct Inodes {
    by_node: HashMap<Node, u64>,
    pub(super) by_ino: HashMap<u64, Node>,
    next: u64,
}

impl Inodes {
    pub(super) fn new() -> Inodes {
        let mut t = Inodes {
            by_node: HashMap::new(),
            by_ino: HashMap::new(),
            next: 4,
        };
        t.by_node.insert(Node::Root, ROOT);
        t.by_ino.insert(ROOT, Node::Root);
        t.by_node.insert(Node::SnapRoot, SNAP_ROOT);
        t.by_ino.insert(SNAP_ROOT, Node::SnapRoot);
        t.by_node.insert(Node::DiffRoot, DIFF_ROOT);
        t.by_ino.insert(DIFF_ROOT, Node::DiffRoot);
        t
    }

    /// After `rbd rename`-ing image `old` to `new`: the kernel keeps the
    /// inodes it has (the renamed dentry points at the old number), so the
    /// numbers must follow the names, including the `.snap` tree's.
    pub(super) fn rename_image(&mut self, old: &str, new: &str) {
        let moved: Vec<(Node, Node)> = self
            .by_node
            .keys()
            .filter_map(|n| {
                let renamed = match n {
                    Node::Image(i) if i == old => Node::Image(new.to_string()),
                    Node::SnapDir(i) if i == old => Node::SnapDir(new.to_string()),
                    Node::Snap(i, s) if i == old => Node::Snap(new.to_string(), s.clone()),
                    Node::DiffImage(i) if i == old => Node::DiffImage(new.to_string()),
                    Node::DiffSnap(i, s) if i == old => Node::DiffSnap(new.to_string(), s.clone()),
                    Node::DiffFile { image, snap, from } if image == old => Node::DiffFile {
                        image: new.to_string(),
                        snap: snap.clone(),
                        from: from.clone(),
                    },
                    Node::Part(p) => Node::Part(p.renamed(old, new)?),
                    _ => return None,
                };
                Some((n.clone(), renamed))
            })
            .collect();
        for (from, to) in moved {
            if let Some(ino) = self.by_node.remove(&from) {
                if let Some(stale) = self.by_node.insert(to.clone(), ino) {
                    self.by_ino.remove(&stale);
                }
                self.by_ino.insert(ino, to);
            }
        }
    }

    /// After renaming snapshot `old` of `image` to `new`: the number
    /// follows the name, as for images.
    pub(super) fn rename_snap(&mut self, image: &str, old: &str, new: &str) {
        let from = Node::Snap(image.to_string(), old.to_string());
        let to = Node::Snap(image.to_string(), new.to_string());
        if let Some(ino) = self.by_node.remove(&from) {
            if let Some(stale) = self.by_node.insert(to.clone(), ino) {
                self.by_ino.remove(&stale);
            }
            self.by_ino.insert(ino, to);
        }
    }

    pub(super) fn ino(&mut self, node: Node) -> u64 {
        if let Some(&ino) = self.by_node.get(&node) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_node.insert(node.clone(), ino);
        self.by_ino.insert(ino, node);
        ino
    }
}
