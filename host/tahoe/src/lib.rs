//! A Tahoe-LAFS 1.20 storage node's directory, read and written, for moving a node to marsh
//! (`marsh adopt`) and back (`marsh export-tahoe`): its identity and settings ([`node`],
//! [`cfg`]), its share tree ([`walk`]), the share containers with their leases
//! ([`container`]), and clients' corruption advisories ([`advisories`]). Formats as the
//! installed `tahoe-lafs==1.20.0` reads and writes them (`allmydata/storage/*.py`,
//! `allmydata/client.py`, `allmydata/node.py`).
//!
//! Architecture invariant: every file is hostile input (a length or count it claims is checked
//! against what the file holds before anything is read or allocated from it), nothing here
//! writes into the directory it reads, and the crate knows nothing of marsh's accounting,
//! plugins or stores: the command line maps what it reads onto them.

pub mod advisories;
pub mod cfg;
pub mod container;
pub mod node;
pub mod walk;

pub use container::{Container, ContainerError, Kind, Lease, LeaseSecrets};
pub use node::{Identity, NodeError, TahoeNode};
pub use walk::{Entry, Shares};
