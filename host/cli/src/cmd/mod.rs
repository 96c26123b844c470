//! One file per command. Each depends on the library (`marsh::...`) and never on another
//! command's file; what two commands share lives in the library.

pub mod account;
pub mod accounting;
pub mod adopt;
pub mod advisories;
pub mod announce;
pub mod config;
pub mod export_tahoe;
pub mod fleet;
pub mod gc;
pub mod init;
pub mod plugin;
pub mod recover;
pub mod run;
pub mod status;
pub mod store;
pub mod upgrade;
pub mod versions;
