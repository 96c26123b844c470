//! A Foolscap client in Rust, as small as publishing a storage announcement to a Tahoe-LAFS
//! introducer needs and no smaller than the protocol demands (issue 15):
//!
//! - [`banana`]: the wire tokens; [`object`]: the values they spell, both ways;
//! - [`furl`]: `pb://TUBID@HINTS/NAME`; [`tls`]: certificates pinned by hash, as Tahoe pins them;
//! - [`session`]: dialing, the upgrade and hello negotiation, calls and answers, keep-alive;
//! - [`introducer`]: `publish_v2`, and keeping an announcement published across failures.
//!
//! Architecture invariant: everything here treats the peer as hostile. Every length and count
//! read from the wire is bounded before anything is allocated for it, every wait has a
//! deadline, and no input panics; what the peer does wrong ends its connection with an error.

pub mod banana;
pub mod furl;
pub mod introducer;
pub mod object;
pub mod session;
pub mod tls;

pub use furl::Furl;
pub use introducer::{Announcement, Backoff, Status};
pub use session::{Connection, FoolscapError, Timeouts, Tub};
