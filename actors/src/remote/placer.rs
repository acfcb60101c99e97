//! Where a run's keyed instances and destinations run, and how many run where.
//!
//! A cluster gives a run an [`InstancePlacer`]; it answers, for each keyed instance and for
//! the destinations, with a byte stream ([`Remote`]) to the node that takes it, or with
//! `None` to run it here. The counters say how many instances this process runs for its own
//! runs, runs on other nodes, and hosts for other nodes' runs (the cluster's status shows
//! them).

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to another node.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection to the node that runs a keyed instance.
pub struct Remote {
    /// The node's id, for messages and metrics.
    pub node: u64,
    pub io: Box<dyn Io>,
}

/// Decides where a run's keyed instances run (a cluster's scheduler); without one, every
/// instance runs in the run's own process.
#[async_trait]
pub trait InstancePlacer: Send + Sync {
    /// Where keyed instance `index` of `instances` of run `run_id` runs: `None` here, or a
    /// connection to the node that runs it. A node that cannot be reached is an `Err` (the
    /// instance then runs here, and the run says so in its log).
    async fn place(&self, run_id: &str, index: usize, instances: usize) -> Option<Result<Remote, String>>;

    /// A connection for a destination of run `run_id` on node `node` (the pipeline's
    /// `placement.destinations`): `None` when that is this node, or when there is no
    /// cluster; an `Err` when the node is not up or cannot be reached (the destination then
    /// runs here).
    async fn destinations(&self, _run_id: &str, _node: u64) -> Option<Result<Remote, String>> {
        None
    }
}

/// Keyed instances and destinations this process runs for runs of other nodes.
pub(crate) static HOSTED: AtomicUsize = AtomicUsize::new(0);

/// How many keyed instances and destinations this process runs for other nodes now.
pub fn hosted_instances() -> usize {
    HOSTED.load(Ordering::Relaxed)
}

/// Keyed instances and destinations on other nodes that runs of this process use now.
pub(crate) static REMOTE: AtomicUsize = AtomicUsize::new(0);

/// How many of this process's runs' keyed instances run on other nodes now.
pub fn remote_instances() -> usize {
    REMOTE.load(Ordering::Relaxed)
}

/// Local keyed instances of this process's runs now.
pub(crate) static LOCAL: AtomicUsize = AtomicUsize::new(0);

/// How many keyed instances this process runs for its own runs now.
pub fn local_instances() -> usize {
    LOCAL.load(Ordering::Relaxed)
}

/// Counts one instance while alive.
pub(crate) struct Counted(&'static AtomicUsize);

impl Counted {
    pub(crate) fn new(c: &'static AtomicUsize) -> Counted {
        c.fetch_add(1, Ordering::Relaxed);
        Counted(c)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
