//! Support: small helpers every stage may use.
pub mod atomic_file;
pub mod memory;
pub mod progress;
pub mod random;
