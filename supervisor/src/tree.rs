//! The worker tree: who started whom, the limits on it, and the operations
//! that act on a whole subtree.
//!
//! A worker asks for a sub-worker with a Spawn frame; the supervisor forks
//! it (so it stays the one reaper of every process), hands the parent worker
//! the sub-worker's channel in SpawnResult, and later reports the exit to
//! the parent as ChildExit. Every worker of one [`crate::Supervisor`] is a
//! node here, top-level ones included, so that:
//!
//! - `terminate` of a worker sends SIGKILL to its whole subtree at once;
//! - `close(grace)` closes the subtree leaves first: every child's subtree
//!   is closed (concurrently) before the node itself gets its Close, each
//!   with the usual Close → SIGTERM → SIGKILL escalation;
//! - a worker that exits on its own (a crash, `close()` from inside) takes
//!   what is left of its subtree with it (SIGKILL);
//! - a closing worker starts no new sub-workers, and limits on depth,
//!   sub-workers per worker and workers in all bound what a worker can ask
//!   for ([`TreeLimits`]).
//!
//! # Caveats
//!
//! A sub-worker's channel belongs to its parent worker, so the supervisor
//! cannot write a Close frame into it: it asks the parent with CloseChild,
//! and the parent's runtime (`arbor_worker`) forwards the Close. A parent
//! that ignores the request only delays its child's close by one grace,
//! after which SIGTERM and SIGKILL follow as for any worker.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arbor_protocol::{ChildExit, Frame, SpawnRefusal};
use tokio::sync::{mpsc, watch};

use crate::exit::ExitRecord;
use crate::link::{Control, TreeLink};

/// Bounds on what workers may start (the top-level workers a program
/// spawns itself are counted, never refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Deepest level a sub-worker may have: top-level workers are at depth
    /// 0, their sub-workers at 1 (default 8).
    pub max_depth: u32,
    /// Most sub-workers one worker may have running or starting (default 64).
    pub max_children: u32,
    /// Most workers the supervisor runs in all before it refuses a Spawn
    /// (default 1024).
    pub max_workers: u32,
    /// Most sub-workers below one top-level worker, all levels together,
    /// running or starting (default 1024, as `max_workers`): set lower, one
    /// tree cannot take every place and starve the others' spawns.
    pub max_tree_workers: u32,
}

impl Default for TreeLimits {
    fn default() -> Self {
        Self {
            max_depth: 8,
            max_children: 64,
            max_workers: 1024,
            max_tree_workers: 1024,
        }
    }
}

/// How the tree reaches a worker's driver.
#[derive(Debug)]
enum ControlRef {
    /// A top-level worker: its handle owns it, and dropping the handle
    /// terminates the worker, so the tree must not keep it alive.
    Weak(mpsc::WeakUnboundedSender<Control>),
    /// A sub-worker: alive as long as the worker runs, whoever holds (or
    /// dropped) its handle; its parent's exit ends it.
    Strong(mpsc::UnboundedSender<Control>),
}

impl ControlRef {
    fn send(&self, control: Control) {
        match self {
            ControlRef::Weak(weak) => {
                if let Some(sender) = weak.upgrade() {
                    let _ = sender.send(control);
                }
            }
            ControlRef::Strong(sender) => {
                let _ = sender.send(control);
            }
        }
    }
}

#[derive(Debug)]
struct Node {
    parent: Option<u64>,
    /// The top-level worker of its tree (itself for a top-level worker).
    root: u64,
    depth: u32,
    children: BTreeSet<u64>,
    /// Spawns this worker asked for that are still starting.
    starting: u32,
    control: ControlRef,
    /// The worker's tree link: SpawnResult, ChildExit and CloseChild go here.
    frames: Option<Arc<TreeLink>>,
    exit: watch::Receiver<Option<ExitRecord>>,
    /// Closing or terminating: no more sub-workers.
    closing: bool,
}

#[derive(Debug, Default)]
struct Nodes {
    map: HashMap<u64, Node>,
    /// Spawns in flight, counted against `max_workers` before they exist.
    starting: u32,
}

impl Nodes {
    /// Sub-workers below top-level worker `root`, running or starting.
    fn tree_size(&self, root: u64) -> u64 {
        self.map
            .iter()
            .filter(|(_, node)| node.root == root)
            .map(|(id, node)| u64::from(*id != root) + u64::from(node.starting))
            .sum()
    }
}

/// Every worker of one supervisor, by id.
#[derive(Debug)]
pub(crate) struct Tree {
    limits: TreeLimits,
    nodes: Mutex<Nodes>,
}

/// What [`Tree::insert`] records of a new worker.
pub(crate) struct NewNode {
    pub(crate) id: u64,
    pub(crate) parent: Option<u64>,
    pub(crate) control: mpsc::UnboundedSender<Control>,
    pub(crate) frames: Option<Arc<TreeLink>>,
    pub(crate) exit: watch::Receiver<Option<ExitRecord>>,
}

impl Tree {
    pub(crate) fn new(limits: TreeLimits) -> Self {
        Self {
            limits,
            nodes: Mutex::new(Nodes::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Nodes> {
        // Every update leaves the map consistent, so a poisoned lock is usable.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a worker that has just been forked, before its driver runs
    /// (so its exit always finds its node). A sub-worker whose parent has
    /// exited or is closing is refused: the caller kills it.
    pub(crate) fn insert(&self, node: NewNode) -> Result<(), SpawnRefusal> {
        let mut nodes = self.lock();
        let (depth, root) = match node.parent {
            Some(parent) => match nodes.map.get_mut(&parent) {
                Some(parent_node) if !parent_node.closing => {
                    parent_node.children.insert(node.id);
                    (parent_node.depth + 1, parent_node.root)
                }
                _ => return Err(SpawnRefusal::Closing),
            },
            None => (0, node.id),
        };
        let control = match node.parent {
            Some(_) => ControlRef::Strong(node.control),
            None => ControlRef::Weak(node.control.downgrade()),
        };
        nodes.map.insert(
            node.id,
            Node {
                parent: node.parent,
                root,
                depth,
                children: BTreeSet::new(),
                starting: 0,
                control,
                frames: node.frames,
                exit: node.exit,
                closing: false,
            },
        );
        Ok(())
    }

    /// Takes a place for a sub-worker of `parent`, or says why not. Every
    /// `Ok` is followed by one [`Tree::release`].
    pub(crate) fn reserve(&self, parent: u64) -> Result<(), SpawnRefusal> {
        let mut nodes = self.lock();
        let total = nodes.map.len() as u64 + u64::from(nodes.starting);
        let limits = self.limits;
        let node = nodes.map.get_mut(&parent).ok_or(SpawnRefusal::Closing)?;
        if node.closing {
            return Err(SpawnRefusal::Closing);
        }
        if node.depth + 1 > limits.max_depth {
            return Err(SpawnRefusal::Depth {
                limit: limits.max_depth,
            });
        }
        if node.children.len() as u64 + u64::from(node.starting) >= u64::from(limits.max_children) {
            return Err(SpawnRefusal::Children {
                limit: limits.max_children,
            });
        }
        if total >= u64::from(limits.max_workers) {
            return Err(SpawnRefusal::Total {
                limit: limits.max_workers,
            });
        }
        let root = node.root;
        if nodes.tree_size(root) >= u64::from(limits.max_tree_workers) {
            return Err(SpawnRefusal::Tree {
                limit: limits.max_tree_workers,
            });
        }
        let node = nodes.map.get_mut(&parent).ok_or(SpawnRefusal::Closing)?;
        node.starting += 1;
        nodes.starting += 1;
        Ok(())
    }

    /// Gives back a place taken by [`Tree::reserve`] (the spawn finished,
    /// started or not). Returns whether the parent is still there and not
    /// closing, so a sub-worker that started meanwhile may stay.
    pub(crate) fn release(&self, parent: u64) -> bool {
        let mut nodes = self.lock();
        nodes.starting = nodes.starting.saturating_sub(1);
        match nodes.map.get_mut(&parent) {
            Some(node) => {
                node.starting = node.starting.saturating_sub(1);
                !node.closing
            }
            None => false,
        }
    }

    /// Whether `child` is a running sub-worker of `parent`.
    pub(crate) fn is_child(&self, parent: u64, child: u64) -> bool {
        self.lock()
            .map
            .get(&child)
            .is_some_and(|node| node.parent == Some(parent))
    }

    /// The tree link of `id`'s parent, when `id` is a sub-worker.
    pub(crate) fn parent_frames(&self, id: u64) -> Option<Arc<TreeLink>> {
        let nodes = self.lock();
        let parent = nodes.map.get(&id)?.parent?;
        nodes.map.get(&parent)?.frames.clone()
    }

    /// Worker `id` was reaped: its node goes, what is left of its subtree is
    /// killed, and its parent (if a running worker) gets ChildExit.
    pub(crate) fn exited(&self, id: u64, record: &ExitRecord) {
        let mut nodes = self.lock();
        let Some(node) = nodes.map.remove(&id) else {
            return;
        };
        for descendant in subtree(&nodes.map, &node.children) {
            if let Some(child) = nodes.map.get_mut(&descendant) {
                child.closing = true;
                child.control.send(Control::Terminate);
            }
        }
        let Some(parent) = node.parent.and_then(|p| nodes.map.get_mut(&p)) else {
            return;
        };
        parent.children.remove(&id);
        if let Some(frames) = &parent.frames {
            frames.send(Frame::ChildExit(ChildExit::new(id, record)), Vec::new());
        }
    }

    /// Marks `id` closing; whether it was not yet (so a close task should
    /// start).
    pub(crate) fn claim_close(&self, id: u64) -> bool {
        let mut nodes = self.lock();
        match nodes.map.get_mut(&id) {
            Some(node) => !std::mem::replace(&mut node.closing, true),
            None => false,
        }
    }

    /// SIGKILL to `id` and its whole subtree, at once.
    pub(crate) fn terminate(&self, id: u64) {
        let mut nodes = self.lock();
        let mut ids = vec![id];
        if let Some(node) = nodes.map.get(&id) {
            ids.extend(subtree(&nodes.map, &node.children));
        }
        for id in ids {
            if let Some(node) = nodes.map.get_mut(&id) {
                node.closing = true;
                node.control.send(Control::Terminate);
            }
        }
    }

    /// Closes `id`'s subtree leaves first, then `id` itself, and returns
    /// once `id` has exited (or was never here).
    pub(crate) fn close(
        self: Arc<Self>,
        id: u64,
        grace: Duration,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let children = {
                let mut nodes = self.lock();
                let Some(node) = nodes.map.get_mut(&id) else {
                    return;
                };
                node.closing = true;
                node.children.clone()
            };
            let mut closing = tokio::task::JoinSet::new();
            for child in children {
                closing.spawn(Arc::clone(&self).close(child, grace));
            }
            while closing.join_next().await.is_some() {}
            let exit = {
                let nodes = self.lock();
                let Some(node) = nodes.map.get(&id) else {
                    return;
                };
                node.control.send(Control::Close(grace));
                node.exit.clone()
            };
            let mut exit = exit;
            let _ = exit.wait_for(Option::is_some).await;
        })
    }
}

/// Every descendant of the nodes in `roots`.
fn subtree(map: &HashMap<u64, Node>, roots: &BTreeSet<u64>) -> Vec<u64> {
    let mut found = Vec::new();
    let mut stack: Vec<u64> = roots.iter().copied().collect();
    while let Some(id) = stack.pop() {
        found.push(id);
        if let Some(node) = map.get(&id) {
            stack.extend(node.children.iter().copied());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(tree: &Tree, id: u64, parent: Option<u64>) -> mpsc::UnboundedReceiver<Control> {
        let (control, receiver) = mpsc::unbounded_channel();
        let (_, exit) = watch::channel(None);
        tree.insert(NewNode {
            id,
            parent,
            control,
            frames: None,
            exit,
        })
        .unwrap();
        receiver
    }

    #[test]
    fn one_tree_at_its_quota_is_refused_while_another_still_spawns() {
        let tree = Tree::new(TreeLimits {
            max_depth: 8,
            max_children: 8,
            max_workers: 100,
            max_tree_workers: 3,
        });
        let _greedy = node(&tree, 1, None);
        let _other = node(&tree, 2, None);
        // Two running below the greedy root (one of them nested), one starting.
        tree.reserve(1).unwrap();
        let _a = node(&tree, 3, Some(1));
        tree.release(1);
        tree.reserve(3).unwrap();
        let _b = node(&tree, 4, Some(3));
        tree.release(3);
        tree.reserve(4).unwrap();
        assert_eq!(tree.reserve(1), Err(SpawnRefusal::Tree { limit: 3 }));
        assert_eq!(tree.reserve(3), Err(SpawnRefusal::Tree { limit: 3 }));
        // The other tree is not held back.
        tree.reserve(2).unwrap();
        // The starting one's place comes back with its release.
        tree.release(4);
        tree.reserve(1).unwrap();
    }

    #[test]
    fn limits_refuse_with_their_reason_and_release_gives_places_back() {
        let tree = Tree::new(TreeLimits {
            max_depth: 2,
            max_children: 2,
            max_workers: 5,
            max_tree_workers: 1024,
        });
        let _root = node(&tree, 1, None);
        tree.reserve(1).unwrap();
        tree.reserve(1).unwrap();
        assert_eq!(tree.reserve(1), Err(SpawnRefusal::Children { limit: 2 }));
        assert!(tree.release(1));
        let _child = node(&tree, 2, Some(1));
        assert!(tree.release(1));
        let _grandchild = {
            tree.reserve(2).unwrap();
            let receiver = node(&tree, 3, Some(2));
            tree.release(2);
            receiver
        };
        assert_eq!(tree.reserve(3), Err(SpawnRefusal::Depth { limit: 2 }));
        let _other = node(&tree, 4, None);
        let _another = node(&tree, 5, None);
        assert_eq!(tree.reserve(4), Err(SpawnRefusal::Total { limit: 5 }));
        assert_eq!(tree.reserve(99), Err(SpawnRefusal::Closing));
    }

    #[test]
    fn a_closing_or_gone_parent_gets_no_children() {
        let tree = Tree::new(TreeLimits::default());
        let _root = node(&tree, 1, None);
        let mut child = node(&tree, 2, Some(1));
        tree.terminate(1);
        assert_eq!(tree.reserve(1), Err(SpawnRefusal::Closing));
        assert!(matches!(child.try_recv(), Ok(Control::Terminate)));
        let (control, _receiver) = mpsc::unbounded_channel();
        let (_, exit) = watch::channel(None);
        let late = NewNode {
            id: 3,
            parent: Some(1),
            control,
            frames: None,
            exit,
        };
        assert_eq!(tree.insert(late), Err(SpawnRefusal::Closing));
    }
}
