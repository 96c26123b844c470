//! `persistence-local`: accounting state lives only in the node's local SQLite database under
//! `cache/`. Nothing leaves the machine, so nothing is slower and nothing can be recovered:
//! losing `cache/` loses every account, lease and write enabler (never a share). Choose it when
//! the machine's disk is itself durable (or backed up with `cache/`), or for throwaway nodes.

use marsh_plugin_sdk::{
    Accountant, Concurrency, Config, DbState, Host, InitError, PersistError, Persistence, Plan, PluginInfo,
    RecoverySummary,
};

/// The local-only strategy.
#[derive(Debug)]
pub struct Local {
    host: Host,
}

impl Persistence for Local {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "persistence-local",
            env!("CARGO_PKG_VERSION"),
            "accounting state in the local database only; lost with cache/",
            Concurrency::Single,
        )
    }

    fn init(host: Host, config: Config) -> Result<Self, InitError> {
        config.only_keys(&[])?;
        Ok(Local { host })
    }

    fn startup(&mut self, state: DbState, _auto_recover: bool) -> Result<Plan, InitError> {
        if !state.present {
            self.host.log(
                marsh_plugin_sdk::Level::Warn,
                "no local accounting database: starting empty (persistence-local cannot recover accounts or leases)",
            );
        }
        Ok(Plan::UseLocal)
    }

    fn record(&mut self, _: &Accountant, _first_sequence: u64, _changes: &[Vec<u8>]) -> Result<(), PersistError> {
        Ok(())
    }

    fn recover(&mut self, _accountant: &Accountant) -> Result<RecoverySummary, PersistError> {
        Ok(RecoverySummary::default())
    }
}

marsh_plugin_sdk::export_persistence!(Local);
