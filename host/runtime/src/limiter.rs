//! [`MemoryCap`]: the memory one plugin instance may hold, counted over all its linear memories
//! and tables together (a component of several core modules shares one cap), with bounds on how
//! many memories, tables and core instances it may create, as wasmtime's `ResourceLimiter`.

use wasmtime::ResourceLimiter;

/// Linear memories one instance may create (a component's core modules have one each; a
/// Rust component has two or three). Each reserves gigabytes of address space, so their
/// number is bounded even when they are empty.
const MAX_MEMORIES: usize = 16;
/// Tables and core instances one instance may create.
const MAX_TABLES: usize = 64;
const MAX_CORE_INSTANCES: usize = 64;
/// Elements one table may hold.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The memory cap of one instance: the sum of all its linear memories and tables (a module
/// with several memories, or a component of several modules, shares one cap), remembering
/// whether it refused a growth.
pub(crate) struct MemoryCap {
    pub(crate) cap: usize,
    /// Bytes granted so far, over every memory and table of the instance.
    pub(crate) used: usize,
    pub(crate) refused: Option<usize>,
}

impl MemoryCap {
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.cap {
            self.refused = Some(total);
            return false;
        }
        self.used = total;
        true
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let slot = size_of::<usize>();
        Ok(desired <= MAX_TABLE_ELEMENTS && self.grow(current.saturating_mul(slot), desired.saturating_mul(slot)))
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_is_shared_by_every_memory_and_table_of_an_instance() {
        let mut cap = MemoryCap { cap: 100 << 20, used: 0, refused: None };
        assert!(cap.memory_growing(0, 60 << 20, None).unwrap(), "first memory");
        // A second memory may not take the first one's allowance again.
        assert!(!cap.memory_growing(0, 60 << 20, None).unwrap(), "second memory over the instance total");
        assert_eq!(cap.refused, Some(120 << 20));
        assert!(cap.memory_growing(0, 40 << 20, None).unwrap(), "second memory within what is left");
        // Growing the first memory counts only the difference.
        assert!(!cap.memory_growing(60 << 20, 61 << 20, None).unwrap());
        // Tables are charged a pointer per element against the same total.
        assert!(!cap.table_growing(0, 1, None).unwrap(), "nothing is left for a table");
        let mut roomy = MemoryCap { cap: usize::MAX, used: 0, refused: None };
        assert!(!roomy.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap(), "elements per table");
    }
}
