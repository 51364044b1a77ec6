//! What one instance of a component takes from the instance pool, and so
//! how many of the runtime's slots a call of it holds.
//!
//! The pool is sized per slot (`max_instances` slots): each slot brings
//! [`CORE_INSTANCES_PER_SLOT`] core instances, [`MEMORIES_PER_SLOT`] linear
//! memories and [`TABLES_PER_SLOT`] tables. A Rust connector needs 3 core
//! instances, one memory and one table: one slot. A JavaScript one
//! (componentize-js) needs 4; a Python one (componentize-py) 14, i.e. two
//! slots. A call holds as many slots as its component's footprint needs, so
//! calls never run the pool dry (which would fail them as if the connector
//! had failed); a component that needs more slots than the runtime has is
//! refused when it is loaded.

/// Core instances the pool provides per slot.
pub(crate) const CORE_INSTANCES_PER_SLOT: u32 = 8;
/// Linear memories the pool provides per slot.
pub(crate) const MEMORIES_PER_SLOT: u32 = 2;
/// Tables the pool provides per slot.
pub(crate) const TABLES_PER_SLOT: u32 = 4;

/// What instantiating a component once creates, counted from its binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    /// Core module instantiations, nested components included.
    pub core_instances: u32,
    /// Linear memories its core modules define (imported ones are shared).
    pub memories: u32,
    /// Tables its core modules define.
    pub tables: u32,
}

impl Footprint {
    /// Counts `wasm`, which must already have compiled (so it parses).
    pub(crate) fn of(wasm: &[u8]) -> Result<Footprint, String> {
        use wasmparser::{Instance, Parser, Payload};
        let mut f = Footprint::default();
        let count = |n: u32, add: u32| n.saturating_add(add);
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.map_err(|e| e.to_string())? {
                Payload::InstanceSection(reader) => {
                    for instance in reader {
                        if let Instance::Instantiate { .. } = instance.map_err(|e| e.to_string())? {
                            f.core_instances = count(f.core_instances, 1);
                        }
                    }
                }
                Payload::MemorySection(reader) => f.memories = count(f.memories, reader.count()),
                Payload::TableSection(reader) => f.tables = count(f.tables, reader.count()),
                _ => {}
            }
        }
        Ok(f)
    }

    /// Slots a call of this component holds: enough for each kind of thing.
    pub fn slots(&self) -> u32 {
        let need = |n: u32, per: u32| n.div_ceil(per);
        need(self.core_instances, CORE_INSTANCES_PER_SLOT)
            .max(need(self.memories, MEMORIES_PER_SLOT))
            .max(need(self.tables, TABLES_PER_SLOT))
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_every_kind() {
        let f = |core_instances, memories, tables| Footprint {
            core_instances,
            memories,
            tables,
        };
        assert_eq!(f(0, 0, 0).slots(), 1);
        assert_eq!(f(3, 1, 1).slots(), 1); // a Rust connector
        assert_eq!(f(8, 2, 4).slots(), 1);
        assert_eq!(f(14, 1, 1).slots(), 2); // a Python connector
        assert_eq!(f(1, 3, 1).slots(), 2);
        assert_eq!(f(1, 1, 9).slots(), 3);
    }
}
