//! Wasm connector runtime.
