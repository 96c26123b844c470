// Shared body of the hostile test plugins, `include!`d by each (it is not a module of its own
// so that each plugin stays one small crate built from source). A hostile plugin behaves
// like an empty backend except in `write` and `read`, where the including crate's
// `on_write` and `on_read` misbehave.

use marsh_plugin_sdk::{
    Backend, BackendError, BackendResult, Concurrency, Config, Host, IndexPage, InitError, Payload, PluginInfo,
    ShareNumber, StorageIndex, Usage, WriteVector,
};

/// The hostile backend.
#[derive(Debug)]
pub struct Hostile;

impl Backend for Hostile {
    fn info() -> PluginInfo {
        PluginInfo::new(NAME, "0.0.1", "misbehaves on purpose, for the host's sandbox tests", Concurrency::Pooled)
    }
    fn init(_host: Host, _config: Config) -> Result<Self, InitError> {
        Ok(Hostile)
    }
    fn begin(&mut self, _: &StorageIndex, _: ShareNumber, _: u64) -> BackendResult<()> {
        Ok(())
    }
    fn write(&mut self, _: &StorageIndex, _: ShareNumber, _: u64, data: Payload) -> BackendResult<()> {
        on_write(data)
    }
    fn read_incoming(&mut self, _: &StorageIndex, _: ShareNumber, _: u64, _: u64) -> BackendResult<Vec<u8>> {
        Err(BackendError::NotFound)
    }
    fn finish(&mut self, _: &StorageIndex, _: ShareNumber) -> BackendResult<()> {
        Ok(())
    }
    fn abort(&mut self, _: &StorageIndex, _: ShareNumber) -> BackendResult<()> {
        Ok(())
    }
    fn read(&mut self, _: &StorageIndex, _: ShareNumber, _: u64, len: u64) -> BackendResult<Payload> {
        on_read(len).map(Payload::from)
    }
    fn size(&mut self, _: &StorageIndex, _: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(None)
    }
    fn list_shares(&mut self, _: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        Ok(Vec::new())
    }
    fn delete(&mut self, _: &StorageIndex, _: ShareNumber) -> BackendResult<bool> {
        Ok(false)
    }
    fn mutable_read(&mut self, _: &StorageIndex, _: ShareNumber, _: u64, _: u64) -> BackendResult<Vec<u8>> {
        Ok(Vec::new())
    }
    fn mutable_write(&mut self, _: &StorageIndex, _: ShareNumber, _: &[WriteVector], _: Option<u64>) -> BackendResult<()> {
        Err(BackendError::Io("hostile plugins keep no mutable shares".into()))
    }
    fn mutable_size(&mut self, _: &StorageIndex, _: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(None)
    }
    fn mutable_list(&mut self, _: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        Ok(Vec::new())
    }
    fn mutable_delete(&mut self, _: &StorageIndex, _: ShareNumber) -> BackendResult<bool> {
        Ok(false)
    }
    fn list_indexes(&mut self, _: Option<&StorageIndex>, _: u32) -> BackendResult<IndexPage> {
        Ok(IndexPage::default())
    }
    fn usage(&mut self) -> BackendResult<Usage> {
        Ok(Usage::default())
    }
}

marsh_plugin_sdk::export_backend!(Hostile);
