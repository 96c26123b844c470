//! [`Error`]: why a node, or one of the commands built on its parts, could not do what was
//! asked. Each variant says what to do about it; [`Error::RecoveryNeeded`] is the one way any
//! part (a backend, the persistence strategy, an interrupted recovery) asks the operator to
//! run `marsh recover` (or another command) before the node can start.

use marsh_accountant::AccountantError;
use marsh_runtime::{LoadError, PersistFailure, StartError};

/// Why the node could not start, serve or run a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node directory.
    #[error(transparent)]
    Dir(#[from] marsh_node::NodeError),
    /// The configuration.
    #[error(transparent)]
    Config(#[from] marsh_node::ConfigError),
    /// A store named in the configuration has no `store.NAME`.
    #[error(
        "{named_by} names store `{name}`, which is not configured: set it with `marsh config set store.{name} dir:PATH` (or `s3`, `memory`)"
    )]
    StoreNotConfigured {
        /// The key that names it.
        named_by: &'static str,
        /// The store.
        name: String,
    },
    /// A store could not be opened, claimed or read.
    #[error("store `{name}` ({location}): {message}")]
    Store {
        /// The store's name.
        name: String,
        /// Where it is.
        location: String,
        /// What failed.
        message: String,
    },
    /// Another node owns a store, or the owner record is not right.
    #[error(transparent)]
    Owner(#[from] marsh_node::owner::OwnerError),
    /// A first-party plugin file is missing.
    #[error(transparent)]
    PluginNotBuilt(#[from] marsh_artifacts::NotBuilt),
    /// A plugin file could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A plugin could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A plugin (or an interrupted recovery) needs the operator to run a command first.
    #[error("the {role} plugin `{plugin}` needs recovery before the node can start: {reason}\nrun: {command}")]
    RecoveryNeeded {
        /// `backend` or `persistence`.
        role: &'static str,
        /// The plugin's name.
        plugin: String,
        /// What was found.
        reason: String,
        /// The exact command to run.
        command: String,
    },
    /// A plugin refused its config.
    #[error(
        "the {role} plugin `{plugin}` refused its config: {message}\nfix it with `marsh config set {role}.config.KEY VALUE --dir {dir}`"
    )]
    PluginConfig {
        /// `backend` or `persistence`.
        role: &'static str,
        /// The plugin's name.
        plugin: String,
        /// What it said.
        message: String,
        /// The node directory.
        dir: String,
    },
    /// `introducer.furls` is set on a node made before signing keys.
    #[error(
        "introducer.furls is set, but this node has no signing key (it was made by an earlier marsh): run `marsh upgrade --dir {dir}`"
    )]
    NoSigningKey {
        /// The node directory.
        dir: String,
    },
    /// `backend.plugin = native:NAME` in a build without native backends, or a name with none.
    #[error("backend.plugin = native:{0}: {1}")]
    Native(String, String),
    /// The accounting database.
    #[error(transparent)]
    Accountant(#[from] AccountantError),
    /// A file an `accounting.*` setting names could not be read.
    #[error("{key} = {}: {source}", path.display())]
    AccountingFile {
        /// The setting.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The persistence strategy failed.
    #[error("the persistence plugin `{plugin}`: {failure}")]
    Persistence {
        /// The plugin's name.
        plugin: String,
        /// What failed.
        failure: PersistFailure,
    },
    /// Changes the strategy does not hold yet could not be handed over before a recovery.
    #[error(
        "the local database holds {count} changes the persistence plugin does not have yet, and handing them over \
         failed ({failure}); recovering now would lose them. Start the node to persist them, or move {database} \
         aside to recover without them"
    )]
    Unpersisted {
        /// How many.
        count: u64,
        /// Why the hand-over failed.
        failure: Box<Error>,
        /// The database file.
        database: String,
    },
    /// A config change would hide the node's shares.
    #[error("refusing to change `{key}`: {reason}")]
    Placement {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Another process serves this node already.
    #[error(
        "{dir} is being served by another process (one holds {dir}/cache/serving.lock: a `marsh run`, or a `marsh gc` \
         pass); {what}"
    )]
    NodeRunning {
        /// The node directory.
        dir: String,
        /// What to do instead.
        what: &'static str,
    },
    /// `marsh gc` without `expire.enabled`.
    #[error(
        "expire.enabled is false, so nothing is collected: `marsh gc --dry-run` shows what would be, and `marsh config \
         set expire.enabled true` turns collection on"
    )]
    ExpiryDisabled,
    /// A lease-expiry pass failed.
    #[error("lease expiry: {0}")]
    Expiry(#[from] marsh_server::gc::GcError),
    /// The backend failed.
    #[error("backend: {0}")]
    Backend(#[from] marsh_core::BackendError),
    /// The TLS configuration.
    #[error(transparent)]
    Tls(#[from] marsh_server::TlsError),
    /// A Tahoe-LAFS node directory could not be read (`marsh adopt`).
    #[error(transparent)]
    Tahoe(#[from] marsh_tahoe::NodeError),
    /// Moving a node from or to Tahoe-LAFS cannot go on as asked.
    #[error("{0}")]
    Moving(String),
    /// `marsh adopt` has not finished taking a Tahoe node's shares in.
    #[error(
        "taking in a Tahoe node's shares has not finished (an earlier `marsh adopt` stopped part way), so this node \
         would serve part of them: finish it first\nrun: {command}"
    )]
    AdoptionUnfinished {
        /// The exact command that finishes it.
        command: String,
    },
    /// A file, socket or signal handler.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether this is [`Error::RecoveryNeeded`] (`marsh run` exits with status 3 for it).
    pub fn is_recovery_needed(&self) -> bool {
        matches!(self, Error::RecoveryNeeded { .. })
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
