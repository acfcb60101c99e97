//! The parts of a run on other nodes of a cluster: the data [`link`] between two nodes,
//! [`keyed`] instances and destinations ([`sink`]) that run elsewhere, and the [`placer`]
//! that decides where.

pub mod keyed;
pub mod link;
pub mod placer;
pub mod sink;
